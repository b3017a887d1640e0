# The embedded demo: FCN-HRNetV2-W18-Small (v1, 1.5M backbone parameters) trained from scratch
# on the procedural street scenes of tools/street_scenes.py (Cityscapes layout, 256x512 images),
# sized to train on 2 CPU cores in a few minutes (2.8 in bf16 on an AVX512-BF16 CPU,
# docs/results.md). `bash tools/demo.sh` generates the data, trains with `mim train`, evaluates
# with `mim test` and draws the predictions and curves.
_base_ = ['./_base_/fcn_hrnet_cityscapes.py']
data_root = 'data/demo_cityscapes/'
crop_size = (256, 512)
streams = [16, 32, 64, 128]
max_iters = 600
eval_interval = 200

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='w18_small'),
    neck=dict(in_channels=streams),
    decode_head=dict(in_channels=sum(streams), channels=sum(streams)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 256), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# bf16 mixed precision where the machine computes bf16 natively (AVX512-BF16/AMX CPUs,
# Ampere+ GPUs), float32 elsewhere; the choice is logged.
optim_wrapper = dict(
    _delete_=True,
    type='hrnet_mm.MixedPrecisionOptimWrapper',
    dtype='auto',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=eval_interval)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=eval_interval,
                    max_keep_ckpts=2, save_last=True))
# The toolbox's backend (nccl) for GPU processes; CPU processes get gloo from hrnet_mm's launcher.
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
