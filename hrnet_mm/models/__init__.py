from .blocks import BasicBlock, Bottleneck
from .hrnet import ARCH_ZOO, HRModule, HRNet
from .necks import HRNetConcatNeck, HRNetPyramidNeck, resize_concat

__all__ = ['ARCH_ZOO', 'BasicBlock', 'Bottleneck', 'HRModule', 'HRNet', 'HRNetConcatNeck',
           'HRNetPyramidNeck', 'resize_concat']
