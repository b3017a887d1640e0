# FCN-HRNetV2-W48 trained from scratch: no ImageNet initialisation (a from-scratch reference
# implementation reached 65.22 mIoU on Cityscapes val). Also the way to train when the
# ImageNet weights cannot be downloaded.
_base_ = ['./hrnet_w48_cityscapes.py']
model = dict(pretrained=None)
