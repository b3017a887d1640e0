# mmseg's stock DeepLabV3+ R50-D8 Cityscapes config on HRNetV2-W18. DeepLabV3+ reads two
# backbone levels itself (ASPP on in_index, low-level features on input 0), so it takes the
# HRNet streams directly, with no concat neck: ASPP on the 1/8 stream (the stride of the dilated
# ResNet it replaces), the low-level branch on the 1/4 stream. A concat neck would hand it one
# map, and c1_in_channels would not match it.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 18
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    # the base's pretrained='open-mmlab://resnet50_v1c' is a ResNet: HRNet's own ImageNet weights
    pretrained=f'open-mmlab://msra/hrnetv2_w{width}',
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=streams[1], in_index=1, c1_in_channels=streams[0]),
    auxiliary_head=dict(in_channels=streams[2], in_index=2))
