# mmseg's stock FCN-HRNetV2-W18 Cityscapes config with only its backbone swapped for ours ...
_base_ = 'mmseg::hrnet/fcn_hr18_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,  # no ImageNet download in tests
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch='w18',
                  norm_cfg=dict(type='SyncBN', requires_grad=True)))

# ... and sized for a test run: 128x256 scenes, 4 iterations, evaluation at the end.
crop_size = (128, 256)
model.update(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=4))
