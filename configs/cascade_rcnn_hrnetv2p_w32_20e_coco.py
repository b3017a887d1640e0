# Cascade R-CNN on HRNetV2p-W32, COCO, 20e schedule: mmdet's cascade-rcnn_hrnetv2p-w32-20e_coco recipe with hrnet_mm's
# backbone (nearest upsampling, as mmdet) and V2p pyramid neck in place of HRFPN (same keys).
_base_ = 'mmdet::hrnet/cascade-rcnn_hrnetv2p-w32-20e_coco.py'
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
