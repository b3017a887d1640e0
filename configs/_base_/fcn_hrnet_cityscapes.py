# FCN on the HRNetV2 representation (every stream resized to 1/4 and concatenated), on
# Cityscapes with mmseg's 80k recipe: 512x1024 crops, 2 images per GPU on 4 GPUs, SGD lr 0.01
# with poly decay, SyncBN (reverted to BN by mmengine when a run is not distributed).
# Leaf configs set the width; the key names equal mmseg's FCN-HRNet, so its checkpoints load.
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)

crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='hrnet_mm.HRNet',
        arch='w18',
        upsample_mode='bilinear',
        norm_cfg=norm_cfg,
        norm_eval=False,
        channels_last=True),  # faster convs on CPU (oneDNN) and GPU (cuDNN); same values
    # V2: all four streams at 1/4, concatenated; the FCN head's 1x1 conv mixes them.
    neck=dict(type='hrnet_mm.HRNetConcatNeck', in_channels=[18, 36, 72, 144]),
    decode_head=dict(
        type='FCNHead',
        in_channels=270,
        in_index=0,
        channels=270,
        kernel_size=1,
        num_convs=1,
        concat_input=False,
        dropout_ratio=-1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# `mim test` (the test loop only, never validation during training): batch norms folded into
# the convs and channels-last weights, same predictions within float32 rounding. On CPU, freed
# memory stays in the process, so training steps do not page-fault their activations in again
# (the process keeps its peak heap; hrnet_mm/memory.py).
custom_hooks = [
    dict(type='hrnet_mm.FastInferenceHook'),
    dict(type='hrnet_mm.KeepFreedMemoryHook'),
]
