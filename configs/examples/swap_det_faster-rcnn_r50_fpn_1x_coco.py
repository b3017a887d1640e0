# mmdet's stock Faster R-CNN R50-FPN 1x config with HRNetV2p-W32: our backbone in place of
# ResNet-50 and our V2p pyramid neck in place of FPN (the same 5 levels, strides 4..64).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 32
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  upsample_mode='nearest'),
    neck=dict(_delete_=True, type='hrnet_mm.HRNetPyramidNeck', in_channels=streams,
              out_channels=256))
