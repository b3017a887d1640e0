# OCRNet-HRNetV2-W48: cascaded FCN (soft object regions) + OCR heads on the V2 representation,
# Cityscapes 512x1024, 80k iterations (mmseg's ocrnet_hr48_4xb2-80k recipe).
_base_ = ['./_base_/fcn_hrnet_cityscapes.py']
width = 48
streams = [width, 2 * width, 4 * width, 8 * width]
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='CascadeEncoderDecoder',
    num_stages=2,
    pretrained=f'open-mmlab://msra/hrnetv2_w{width}',
    # OCRHead .view()s its features, which channels-last maps do not allow
    backbone=dict(arch=f'w{width}', channels_last=False),
    neck=dict(in_channels=streams),
    decode_head=[
        dict(
            type='FCNHead',
            in_channels=sum(streams),
            in_index=0,
            channels=sum(streams),
            kernel_size=1,
            num_convs=1,
            concat_input=False,
            dropout_ratio=-1,
            num_classes=19,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
        dict(
            type='OCRHead',
            in_channels=sum(streams),
            in_index=0,
            channels=512,
            ocr_channels=256,
            dropout_ratio=-1,
            num_classes=19,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    ])
# (and so does the test-time copy: folded, float32, weights left in the default layout)
custom_hooks = [
    dict(type='hrnet_mm.FastInferenceHook', channels_last=False),
    dict(type='hrnet_mm.KeepFreedMemoryHook'),
]
