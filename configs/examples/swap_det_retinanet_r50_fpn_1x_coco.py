# mmdet's stock RetinaNet R50-FPN 1x config with HRNetV2p-W32. RetinaNet's anchors sit at
# strides 8-128 (its FPN starts at C3), so the pyramid neck's 3x3 convs take stride 2: levels
# at 8, 16, 32, 64, 128 instead of 4-64 (which would run, silently misplacing every anchor).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 32
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  init_cfg=dict(type='Pretrained',
                                checkpoint=f'open-mmlab://msra/hrnetv2_w{width}')),
    neck=dict(_delete_=True, type='hrnet_mm.HRNetPyramidNeck', in_channels=streams,
              out_channels=256, stride=2))
