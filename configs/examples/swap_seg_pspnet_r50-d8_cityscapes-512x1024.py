# mmseg's stock PSPNet R50-D8 Cityscapes config on HRNetV2-W18: our backbone in place of the
# dilated ResNet-50 and our V2 concat neck feeding both the PSP head and the auxiliary head.
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 18
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  norm_cfg=dict(type='SyncBN', requires_grad=True)),
    neck=dict(type='hrnet_mm.HRNetConcatNeck', in_channels=streams),
    decode_head=dict(in_channels=sum(streams), in_index=0),
    auxiliary_head=dict(in_channels=sum(streams), in_index=0))
