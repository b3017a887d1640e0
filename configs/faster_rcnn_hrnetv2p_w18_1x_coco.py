# Faster R-CNN on HRNetV2p-W18, COCO, 1x schedule: mmdet's faster-rcnn_hrnetv2p-w18-1x_coco
# recipe, which is its W32 recipe at another width; our backbone and V2p pyramid neck.
_base_ = './faster_rcnn_hrnetv2p_w32_1x_coco.py'
width = 18
streams = [width, 2 * width, 4 * width, 8 * width]
model = dict(
    backbone=dict(
        arch=f'w{width}',
        init_cfg=dict(type='Pretrained', checkpoint=f'open-mmlab://msra/hrnetv2_w{width}')),
    neck=dict(in_channels=streams))
