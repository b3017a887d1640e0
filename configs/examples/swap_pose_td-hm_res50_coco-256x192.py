# mmpose's stock ResNet-50 top-down heatmap config with HRNet-W32 in place of ResNet-50.
# HRNet's V1 map is already at 1/4 (the heatmap resolution), so the head needs no deconvs.
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py'
custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)
width = 32
model = dict(
    backbone=dict(_delete_=True, type='hrnet_mm.HRNet', arch=f'w{width}',
                  upsample_mode='nearest', multiscale_output=False),
    head=dict(in_channels=width, deconv_out_channels=None))
