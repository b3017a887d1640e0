# Our Mask R-CNN config at test size: HRNetV2p-W18-Small, one class (person), 256x192 images,
# 1 epoch on generated COCO-format boxes and masks.
_base_ = '../../configs/mask_rcnn_hrnetv2p_w32_1x_coco.py'
streams = [16, 32, 64, 128]
model = dict(
    backbone=dict(arch='w18_small', init_cfg=None),
    neck=dict(in_channels=streams),
    roi_head=dict(bbox_head=dict(num_classes=1), mask_head=dict(num_classes=1)),
    # A detector 4 iterations old scores below mmdet's 0.05: keep every box, the best 20 of an
    # image, so CocoMetric has detections to score. (At the recipe's 1000 proposals and 100
    # boxes, mmdet's box and mask heads took half of each test pass.)
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=200),
                  rcnn=dict(score_thr=0.0, max_per_img=20)))
metainfo = dict(classes=('person', ))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(256, 192), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 192), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file='annotations/train.json', data_prefix=dict(img='train/'),
                 metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file='annotations/val.json', data_prefix=dict(img='val/'),
                 metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1))
# from random init (the recipe starts from ImageNet weights) lr 0.02 without warm-up diverges
optim_wrapper = dict(optimizer=dict(lr=0.002), clip_grad=dict(max_norm=10, norm_type=2))
randomness = dict(seed=0)  # the same trained test model on every run
