# Top-down heatmap pose estimation, HRNet-W48, COCO 256x192: mmpose's td-hm_hrnet-w48_8xb32-210e_coco-256x192 recipe (HeatmapHead,
# MSRA heatmap codec, keypoint MSE loss, ImageNet init) with hrnet_mm's backbone. As in
# mmpose: V1 (the last exchange unit feeds only the highest stream), nearest upsampling.
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w48_8xb32-210e_coco-256x192.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='hrnet_mm.HRNet',
        arch='w48',
        extra=None,  # the preset replaces mmpose's spelled-out stages; init_cfg is kept
        upsample_mode='nearest',
        multiscale_output=False))
# mmpose's own SyncBuffersHook, and on CPU freed memory kept in the process, so training steps
# do not page-fault their activations in again (the process keeps its peak heap).
custom_hooks = [dict(type='SyncBuffersHook'), dict(type='hrnet_mm.KeepFreedMemoryHook')]
