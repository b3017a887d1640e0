# mmdet's stock FCOS R50-caffe config with HRNetV2p-W32 (as mmdet's own fcos_hrnetv2p
# configs): points at strides 8-128, so the pyramid neck's 3x3 convs take stride 2; the
# caffe-style input normalisation of the ResNet it replaces becomes ImageNet's RGB one, which
# HRNet's weights expect.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 32
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  init_cfg=dict(type='Pretrained',
                                checkpoint=f'open-mmlab://msra/hrnetv2_w{width}')),
    neck=dict(_delete_=True, type='hrnet_mm.HRNetPyramidNeck', in_channels=streams,
              out_channels=256, stride=2))
