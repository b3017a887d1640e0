"""Inference fast path: the same function, fewer passes over memory.

:func:`optimize_for_inference` folds every batch norm into the conv before it (the convs gain
a bias, the norms become ``nn.Identity``) and stores weights channels-last, which oneDNN and
cuDNN run faster. Outputs stay within 1e-4 of the unfused model (tested). It changes the model
in place and is for eval mode only: a folded model cannot be trained further.

:class:`FastInferenceHook` applies it at the start of ``mim test`` / ``runner.test()`` (after
the checkpoint is loaded), never during training or validation inside a training run.
"""
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .registry import HOOKS


def _fold(conv: nn.Conv2d, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """conv <- norm(conv(.)), computed in float64 and rounded once to the conv's dtype."""
    w = conv.weight.detach()
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale = scale * norm.weight.detach().double()
        shift = shift * norm.weight.detach().double() + norm.bias.detach().double()
    bias = shift if conv.bias is None else conv.bias.detach().double() * scale + shift
    conv.weight = nn.Parameter((w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _foldable(conv, norm, parent) -> bool:
    if not (isinstance(conv, nn.Conv2d) and norm.track_running_stats
            and norm.num_features == conv.out_channels):
        return False
    order = getattr(parent, 'order', None)  # mmcv's ConvModule may normalise before its conv
    return not (isinstance(order, tuple) and 'norm' in order and 'conv' in order
                and order.index('norm') < order.index('conv'))


def fold_norms(module: nn.Module) -> nn.Module:
    """Fold every batch norm registered right after a conv into it (the norm becomes
    ``nn.Identity``), as mmcv's ``fuse_conv_bn`` does, but in float64 arithmetic so the folded
    weights carry a single rounding."""
    last = None
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if last is not None and _foldable(last, child, module):
                _fold(last, child)
                module._modules[name] = nn.Identity()
            last = None
        elif isinstance(child, nn.Conv2d):
            last = child
        else:
            fold_norms(child)
            last = None
    return module


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """Fold norms into convs and go channels-last; returns ``model`` (changed in place)."""
    model.eval()
    fold_norms(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Run ``mim test`` on the folded, channels-last model.

    Add ``custom_hooks = [dict(type='hrnet_mm.FastInferenceHook')]`` to a config. Only the test
    loop is affected: validation during training keeps the trainable model.
    """

    priority = 'VERY_LOW'

    def __init__(self, channels_last: bool = True):
        self.channels_last = channels_last

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optimize_for_inference(model, channels_last=self.channels_last)
        runner.logger.info('hrnet_mm: batch norms folded into convs, channels-last weights '
                           'for testing')
