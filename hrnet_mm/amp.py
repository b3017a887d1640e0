"""Mixed-precision training on whatever device the model is on, CPU included.

mmengine's ``AmpOptimWrapper`` requires CUDA, NPU, MLU or MUSA, so ``--amp`` cannot train on
a CPU, although CPUs with AVX512-BF16 or AMX compute bfloat16 convolutions several times faster
than float32. :class:`MixedPrecisionOptimWrapper` is that wrapper with the CPU added:

* on an accelerator it *is* mmengine's ``AmpOptimWrapper`` (same autocast, same gradient scaler,
  same state dict);
* on a CPU it runs the forward and the loss under ``torch.autocast('cpu', bfloat16)``. The
  weights, gradients and optimizer state stay float32 (autocast casts copies of the weights
  for the convolutions), batch-norm statistics are accumulated in float32 and the losses are
  computed in float32 (autocast's CPU policy). bfloat16 has float32's exponent range, so no
  loss scaling is needed and none is done.

``dtype='auto'`` picks bfloat16 where the device computes it natively and float32 (plain
training, autocast off) elsewhere, and logs the choice. In a config::

    optim_wrapper = dict(type='hrnet_mm.MixedPrecisionOptimWrapper', dtype='auto',
                         optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
"""
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from .inference import _device_of, native_bf16
from .registry import OPTIM_WRAPPERS

DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16, 'float32': torch.float32}


def _accelerator() -> bool:
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``, also on CPU (bfloat16 autocast, float32 master weights).

    Args:
        dtype (str | torch.dtype): ``'bfloat16'`` (default), ``'float16'`` (accelerators
            only), ``'float32'`` (autocast off) or ``'auto'`` (bfloat16 where the device has it
            natively, else float32).
        loss_scale: the gradient scaler's setting on accelerators (as ``AmpOptimWrapper``);
            unused on CPU, where bfloat16 needs no scaling.
        **kwargs: ``optimizer``, ``accumulative_counts``, ``clip_grad`` (as ``OptimWrapper``).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[str, float, dict] = 'dynamic', **kwargs):
        self.on_accelerator = _accelerator()
        device = torch.device('cuda' if is_cuda_available() else 'cpu')
        if dtype == 'auto':
            native = native_bf16(device) if device.type in ('cpu', 'cuda') else True
            dtype = 'bfloat16' if native else 'float32'
            print_log(f'hrnet_mm.MixedPrecisionOptimWrapper: dtype=auto -> {dtype} '
                      f"({'native' if native else 'no native'} bfloat16 on {device.type})",
                      logger='current')
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, "
                                 f'got {dtype!r}')
            dtype = DTYPES[dtype]
        if self.on_accelerator:
            super().__init__(loss_scale=loss_scale, dtype=dtype, **kwargs)
            return
        if dtype == torch.float16:
            raise ValueError('float16 training on CPU would need loss scaling and has no fast '
                             "kernels; use dtype='bfloat16' (or 'auto')")
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = None
        self.cast_dtype: Optional[torch.dtype] = dtype

    def backward(self, loss: torch.Tensor, **kwargs):
        if self.loss_scaler is not None:
            return super().backward(loss, **kwargs)
        return OptimWrapper.backward(self, loss, **kwargs)

    def step(self, **kwargs):
        if self.loss_scaler is not None:
            return super().step(**kwargs)
        return OptimWrapper.step(self, **kwargs)

    def state_dict(self) -> dict:
        if self.loss_scaler is not None:
            return super().state_dict()
        return OptimWrapper.state_dict(self)

    def load_state_dict(self, state_dict: dict):
        if self.loss_scaler is not None:
            return super().load_state_dict(state_dict)
        state_dict = dict(state_dict)
        state_dict.pop('loss_scaler', None)  # a checkpoint written on an accelerator
        return OptimWrapper.load_state_dict(self, state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        if self.on_accelerator:
            with super().optim_context(model):
                yield
            return
        enabled = self.cast_dtype not in (None, torch.float32)
        with OptimWrapper.optim_context(self, model), \
                torch.autocast(_device_of(model).type, dtype=self.cast_dtype or torch.bfloat16,
                               enabled=enabled):
            yield
