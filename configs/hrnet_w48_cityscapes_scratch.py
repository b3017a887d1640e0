# FCN-HRNetV2-W48 on Cityscapes 512x1024, 80k iterations, from random initialisation: the
# recipe of hrnet_w48_cityscapes.py without the ImageNet weights, for machines that cannot
# download them. A from-scratch HRNet implementation reported 65.22 mIoU on Cityscapes val
# without a pre-trained backbone (a reference, not a run of ours).
_base_ = ['./hrnet_w48_cityscapes.py']
model = dict(pretrained=None)
