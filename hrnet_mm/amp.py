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

Which path it takes, and what ``dtype='auto'`` picks, is decided by the model's device, never
by the host's: ``'auto'`` is bfloat16 where that device computes it natively, float16 (with
loss scaling) on CUDA GPUs that only emulate bfloat16, and float32 (plain training, autocast
off) elsewhere. The choice is logged with the device judged. In a config::

    optim_wrapper = dict(type='hrnet_mm.MixedPrecisionOptimWrapper', dtype='auto',
                         optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
"""
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from .precision import describe, device_of, resolve_precision
from .registry import OPTIM_WRAPPERS

DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16, 'float32': torch.float32}
_FROM_PRECISION = {'bf16': 'bfloat16', 'fp16': 'float16', 'fp32': 'float32'}


def _optimizer_device(optimizer) -> torch.device:
    """Where the parameters an optimizer updates are (the model's device): its first
    parameter's device, the CPU for an optimizer without any (or a config dict not yet
    built)."""
    for group in getattr(optimizer, 'param_groups', ()):
        for p in group['params']:
            return p.device
    return torch.device('cpu')


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``, also on CPU (bfloat16 autocast, float32 master weights).

    Which path it takes is decided by where the optimizer's parameters are (the model's
    device, which the Runner has set before it builds the wrapper), never by what the host
    has: a model on the CPU of a GPU host trains on the CPU path. The log says which device
    was judged and what was chosen.

    Args:
        dtype (str | torch.dtype): ``'bfloat16'`` (default), ``'float16'`` (accelerators
            only), ``'float32'`` (autocast off) or ``'auto'``: bfloat16 where the model's
            device computes it natively, float16 on a CUDA GPU without native bfloat16 (V100,
            T4; with loss scaling, as mmengine's ``--amp``), float32 elsewhere.
        loss_scale: the gradient scaler's setting on accelerators (as ``AmpOptimWrapper``);
            unused on CPU, where bfloat16 needs no scaling.
        **kwargs: ``optimizer``, ``accumulative_counts``, ``clip_grad`` (as ``OptimWrapper``).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[str, float, dict] = 'dynamic', **kwargs):
        self.device = _optimizer_device(kwargs.get('optimizer'))
        self.on_accelerator = self.device.type != 'cpu'
        where = describe(self.device)
        if dtype == 'auto':
            precision, why = resolve_precision('auto', self.device)
            dtype = _FROM_PRECISION[precision]
        else:
            why = f'as asked, model on {where}'
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, "
                                 f'got {dtype!r}')
            dtype = DTYPES[dtype]
        if self.on_accelerator:
            super().__init__(loss_scale=loss_scale, dtype=dtype, **kwargs)
        else:
            if dtype == torch.float16:
                raise ValueError(f'float16 training on CPU (the model is on {where}) would need '
                                 "loss scaling and has no fast kernels; use dtype='bfloat16' "
                                 "(or 'auto')")
            OptimWrapper.__init__(self, **kwargs)
            self._scale_update_param = None
            self.loss_scaler = None
            self.cast_dtype: Optional[torch.dtype] = dtype
        how = ('autocast off' if dtype == torch.float32 else
               f'{self.device.type} autocast'
               + (', dynamic loss scaling' if self.loss_scaler is not None else ''))
        print_log(f'hrnet_mm.MixedPrecisionOptimWrapper: {str(dtype).split(".")[-1]} '
                  f'({why}; {how})', logger='current')

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
        device = device_of(model)
        if device.type != self.device.type:
            raise RuntimeError(
                f'hrnet_mm.MixedPrecisionOptimWrapper was built for a model on {self.device} '
                f'but runs one on {device}: build the optimizer wrapper after moving the model '
                '(as mmengine\'s Runner does)')
        enabled = self.cast_dtype not in (None, torch.float32)
        dtype = self.cast_dtype or (torch.bfloat16 if device.type == 'cpu' else torch.float16)
        # The autocast of the model's device (mmengine's AmpOptimWrapper asks the host, and
        # picks CUDA's whenever the host has CUDA).
        with OptimWrapper.optim_context(self, model), \
                torch.autocast(device.type, dtype=dtype, enabled=enabled):
            yield
