# The demo config at test size: 4 iterations on 128x256 scenes, both IoUMetric and
# CityscapesMetric (through cityscapesscripts) on the test split.
_base_ = '../../configs/demo_street_hrnet_w18_small.py'
crop_size = (128, 256)
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomCrop', crop_size=crop_size),
        dict(type='PackSegInputs'),
    ]))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]))
test_dataloader = val_dataloader
test_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='CityscapesMetric', output_dir='work_dirs/cityscapes_results'),
]
max_iters = 4
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=0,
                        end=max_iters)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
