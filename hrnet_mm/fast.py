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
from mmcv.cnn import fuse_conv_bn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .registry import HOOKS


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """Fold norms into convs and go channels-last; returns ``model`` (changed in place)."""
    model.eval()
    fuse_conv_bn(model)
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
