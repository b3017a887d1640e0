from .blocks import BasicBlock, Bottleneck
from .hrnet import ARCH_ZOO, TOOLBOX_DEFAULTS, HRModule, HRNet, HRNetConfigError
from .layout import CheckpointMismatchError
from .necks import HRNetConcatNeck, HRNetPyramidNeck, resize_concat

__all__ = ['ARCH_ZOO', 'BasicBlock', 'Bottleneck', 'CheckpointMismatchError', 'HRModule', 'HRNet',
           'HRNetConcatNeck', 'HRNetConfigError', 'TOOLBOX_DEFAULTS',
           'HRNetPyramidNeck', 'resize_concat']
