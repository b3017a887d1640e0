# Our pose config at test size: HRNet-W18-Small V1, 2 epochs on generated COCO-format people.
_base_ = '../../configs/hrnet_w32_coco_256x192.py'
model = dict(backbone=dict(arch='w18_small', init_cfg=None), head=dict(in_channels=16))
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file='annotations/train.json', data_prefix=dict(img='train/')))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file='annotations/val.json', bbox_file=None, data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, save_best=None))
randomness = dict(seed=0)  # the same trained test model on every run
