from .arch import ARCH_ZOO, TOOLBOX_DEFAULTS, HRNetConfigError
from .blocks import BasicBlock, Bottleneck
from .checkpoint_fit import CheckpointMismatchError
from .exchange import HRModule
from .hrnet import HRNet
from .necks import HRNetConcatNeck, HRNetPyramidNeck, resize_concat

__all__ = ['ARCH_ZOO', 'BasicBlock', 'Bottleneck', 'CheckpointMismatchError', 'HRModule', 'HRNet',
           'HRNetConcatNeck', 'HRNetConfigError', 'TOOLBOX_DEFAULTS',
           'HRNetPyramidNeck', 'resize_concat']
