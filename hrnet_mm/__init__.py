"""hrnet_mm: one HRNet backbone and its representation necks for mmseg, mmpose and mmdet.

Add ``custom_imports = dict(imports=['hrnet_mm'], allow_failed_imports=False)`` to a config
and write ``type='hrnet_mm.HRNet'``, ``'hrnet_mm.HRNetConcatNeck'`` or
``'hrnet_mm.HRNetPyramidNeck'``.
"""
from .cpu_launcher import enable_cpu_distributed
from .safe_load import register_checkpoint_loader
from .models import (ARCH_ZOO, TOOLBOX_DEFAULTS, CheckpointMismatchError, HRModule, HRNet,
                     HRNetConcatNeck, HRNetConfigError, HRNetPyramidNeck, resize_concat)
from .amp import MixedPrecisionOptimWrapper
from .inference import FastInferenceHook, prepare_for_inference
from .rewrites import fold_batch_norms, mix_streams_before_resize
from .memory import KeepFreedMemoryHook, keep_freed_memory
from .registry import HOOKS, MODELS, OPTIM_WRAPPERS

__version__ = '0.1.0'

# What importing hrnet_mm changes besides registering its modules under the scope hrnet_mm
# (the README lists it): mmengine reads local checkpoints with the Runner's plain-data classes
# allowed for that load only (hrnet_mm.safe_load), and on a machine with no accelerator its
# pytorch launcher accepts CPU processes (hrnet_mm.cpu_launcher).
register_checkpoint_loader()
enable_cpu_distributed()

__all__ = ['ARCH_ZOO', 'CheckpointMismatchError', 'FastInferenceHook', 'HOOKS', 'HRModule',
           'HRNet', 'HRNetConcatNeck', 'HRNetConfigError', 'HRNetPyramidNeck',
           'KeepFreedMemoryHook', 'MODELS', 'MixedPrecisionOptimWrapper', 'OPTIM_WRAPPERS',
           'TOOLBOX_DEFAULTS', 'fold_batch_norms', 'keep_freed_memory',
           'mix_streams_before_resize', 'register_checkpoint_loader', 'prepare_for_inference',
           'resize_concat', '__version__']
