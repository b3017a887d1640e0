# mmseg's stock UPerNet R50 Cityscapes config on HRNetV2-W18: UPerHead builds its own pyramid
# from all four backbone levels, so it takes the HRNet streams directly (no neck); only the
# channel lists change. The auxiliary FCN head reads the 1/16 stream, as it read ResNet's C4.
_base_ = 'mmseg::upernet/upernet_r50_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 18
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    pretrained=f'open-mmlab://msra/hrnetv2_w{width}',
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=streams, in_index=[0, 1, 2, 3]),
    auxiliary_head=dict(in_channels=streams[2], in_index=2))
