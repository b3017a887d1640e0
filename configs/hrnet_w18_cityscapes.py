# FCN-HRNetV2-W18, Cityscapes 512x1024, 80k iterations (mmseg's fcn_hr18_4xb2-80k recipe).
_base_ = ['./_base_/fcn_hrnet_cityscapes.py']
width = 18
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    pretrained=f'open-mmlab://msra/hrnetv2_w{width}',
    backbone=dict(arch=f'w{width}'),
    neck=dict(in_channels=streams),
    decode_head=dict(in_channels=sum(streams), channels=sum(streams)))
