# Faster R-CNN on HRNetV2p-W32, COCO, 1x schedule: mmdet's faster-rcnn_hrnetv2p-w32-1x_coco recipe with hrnet_mm's
# backbone (nearest upsampling, as mmdet) and V2p pyramid neck in place of HRFPN (same keys).
_base_ = 'mmdet::hrnet/faster-rcnn_hrnetv2p-w32-1x_coco.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 32
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    backbone=dict(
        _delete_=True,
        type='hrnet_mm.HRNet',
        arch=f'w{width}',
        upsample_mode='nearest',
        init_cfg=dict(type='Pretrained', checkpoint=f'open-mmlab://msra/hrnetv2_w{width}')),
    neck=dict(
        _delete_=True, type='hrnet_mm.HRNetPyramidNeck', in_channels=streams, out_channels=256))
