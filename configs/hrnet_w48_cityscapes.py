# FCN-HRNetV2-W48, Cityscapes 512x1024, 80k iterations (mmseg's fcn_hr48_4xb2-80k recipe,
# 79.93 mIoU on val there; its 160k run reaches 80.65).
_base_ = ['./_base_/fcn_hrnet_cityscapes.py']
width = 48
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    pretrained=f'open-mmlab://msra/hrnetv2_w{width}',
    backbone=dict(arch=f'w{width}'),
    neck=dict(in_channels=streams),
    decode_head=dict(in_channels=sum(streams), channels=sum(streams)))
