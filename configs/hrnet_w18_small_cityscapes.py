# FCN-HRNetV2-W18-Small, Cityscapes 512x1024, 80k iterations: mmseg's fcn_hr18s recipe, whose
# backbone is the "small v2" layout (2 blocks per unit; 1, 1, 3, 2 exchange units per stage).
_base_ = ['./_base_/fcn_hrnet_cityscapes.py']
streams = [18, 36, 72, 144]
model = dict(
    pretrained='open-mmlab://msra/hrnetv2_w18_small',
    backbone=dict(arch='w18_small_v2'),
    neck=dict(in_channels=streams),
    decode_head=dict(in_channels=sum(streams), channels=sum(streams)))
