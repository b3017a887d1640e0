"""hrnet_mm: one HRNet backbone and its representation necks for mmseg, mmpose and mmdet.

Add ``custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)`` to a config
and write ``type='hrnet_mm.HRNet'``, ``'hrnet_mm.HRNetConcatNeck'`` or
``'hrnet_mm.HRNetPyramidNeck'``.
"""
from .checkpoint import allow_runner_checkpoints
from .dist import enable_cpu_distributed
from .models import (ARCH_ZOO, TOOLBOX_DEFAULTS, CheckpointMismatchError, HRModule, HRNet,
                     HRNetConcatNeck, HRNetConfigError, HRNetPyramidNeck, resize_concat)
from .amp import MixedPrecisionOptimWrapper
from .inference import FastInferenceHook, fold_batch_norms, prepare_for_inference
from .registry import HOOKS, MODELS, OPTIM_WRAPPERS

__version__ = '0.1.0'

# Checkpoints written by mmengine's Runner load under torch's weights_only=True once their
# few plain-data classes are allowlisted (see hrnet_mm.checkpoint).
allow_runner_checkpoints()
# mmengine's pytorch launcher on CPU-only machines (see hrnet_mm.dist).
enable_cpu_distributed()

__all__ = ['ARCH_ZOO', 'CheckpointMismatchError', 'FastInferenceHook', 'HOOKS', 'HRModule',
           'HRNet', 'HRNetConcatNeck', 'HRNetConfigError', 'HRNetPyramidNeck', 'MODELS',
           'MixedPrecisionOptimWrapper', 'OPTIM_WRAPPERS',
           'TOOLBOX_DEFAULTS', 'allow_runner_checkpoints', 'fold_batch_norms',
           'prepare_for_inference',
           'resize_concat', '__version__']
