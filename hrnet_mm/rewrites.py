"""Model rewrites for inference that provably keep the function: batch norms folded into the
conv that feeds them, and the 1x1 conv that mixes concatenated streams applied to each stream
before it is resized. Both work in place on a model for evaluation; :func:`hrnet_mm.
prepare_for_inference` applies them to a copy, and ``hrnet_mm.deploy.export_onnx`` to the copy
it exports.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from torch.nn.modules.batchnorm import _BatchNorm

from .models.necks import HRNetConcatNeck, HRNetPyramidNeck, is_pointwise


# --- folding -----------------------------------------------------------------------------------

def _fold(conv: nn.Conv2d, norm: _BatchNorm) -> None:
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


def _adjacent_pairs(module: nn.Module) -> List[Tuple[str, str]]:
    """Child names ``(conv, norm)`` whose forward provably computes ``norm(conv(x))`` with
    nothing between: consecutive children of an ``nn.Sequential``, mmcv's ``ConvModule``
    whose order puts the norm right after the conv, and modules that declare their pairs
    (``conv_norm_pairs()``, as hrnet_mm's own do). Anything else is left alone."""
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return list(zip(names, names[1:]))
    if isinstance(module, ConvModule):
        order = list(module.order)
        if module.with_norm and order.index('norm') == order.index('conv') + 1:
            return [('conv', module.norm_name)]
        return []
    declared = getattr(module, 'conv_norm_pairs', None)
    return list(declared()) if callable(declared) else []


def _foldable(conv, norm) -> bool:
    return (type(conv) is nn.Conv2d and isinstance(norm, _BatchNorm)
            and norm.track_running_stats and norm.running_mean is not None
            and norm.num_features == conv.out_channels)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold batch norms into the conv that provably feeds them (see :func:`_adjacent_pairs`);
    each folded norm becomes ``nn.Identity``. In place; the norms' running statistics are
    used, so the module must be for evaluation. Returns ``module``."""
    for name, child in list(module.named_children()):
        fold_batch_norms(child)
    for conv_name, norm_name in _adjacent_pairs(module):
        conv, norm = module._modules.get(conv_name), module._modules.get(norm_name)
        if _foldable(conv, norm):
            _fold(conv, norm)
            module._modules[norm_name] = nn.Identity()
    return module


# --- mixing streams before resizing ------------------------------------------------------------

def movable_pointwise_conv(module: nn.Module) -> Optional[nn.Conv2d]:
    """The conv an mmcv ``ConvModule`` runs first on its input, if it is a 1x1 conv (stride 1,
    no padding, one group) that can run elsewhere: nothing before it, no fused conv-bn path."""
    if type(module) is not ConvModule or list(module.order)[0] != 'conv':
        return None
    if module.with_explicit_padding or getattr(module, 'efficient_conv_bn_eval_forward', None):
        return None
    return module.conv if is_pointwise(module.conv) else None


def _first_conv_of_fcn_head(head: nn.Module) -> Optional[nn.Module]:
    """The ``ConvModule`` an mmseg ``FCNHead`` applies first to its one input, if its conv can
    be moved into the neck that feeds it."""
    try:
        from mmseg.models.decode_heads import FCNHead
    except ImportError:
        return None
    if (type(head) is not FCNHead or head.num_convs < 1 or head.concat_input
            or head.input_transform is not None or head.in_index != 0):
        return None
    first = head.convs[0]
    return first if movable_pointwise_conv(first) is not None else None


#: :func:`mix_streams_before_resize` moves a conv where it saves at least this many
#: multiply-adds per element it adds to the resizing. Measured (``tools/benchmark.py
#: --unmixed``, 512x1024): FCN-HRNetV2-W48 (305) runs faster moved, compiled in PyTorch and in
#: OpenVINO; W18 (114) and W18-Small (102) run no faster compiled and slower in OpenVINO.
MIX_MIN_SAVING = 200.0


def mix_streams_before_resize(model: nn.Module,
                              min_saving: float = MIX_MIN_SAVING) -> nn.Module:
    """Where a 1x1 conv mixes hrnet_mm's concatenated streams, mix each stream at its own
    resolution before resizing instead (:meth:`HRNetConcatNeck.mix_before_resize`): the same
    function, with fewer multiply-adds but wider maps to resize, so only where it saves at least
    ``min_saving`` multiply-adds per element added to the resizing (``mix_saving``; W48's FCN
    head: 305, W18's: 114). Done where it is provable from the modules' types:

    * an ``HRNetConcatNeck`` with its own 1x1 mixing conv, an ``HRNetPyramidNeck``'s 1x1
      ``reduction_conv``;
    * an mmseg segmentor whose ``HRNetConcatNeck`` (no conv of its own) feeds an ``FCNHead``
      whose first conv is 1x1 (the configs' FCN-HRNetV2): the head's conv moves into the neck.

    The moved conv becomes ``nn.Identity`` where it was (its norm and activation stay). In
    place, for evaluation: the neck's output is no longer the concatenation. Returns ``model``.
    """
    def move(neck, owner) -> bool:
        if neck.mix_saving(owner.conv.out_channels) < min_saving:
            return False
        neck.mix_before_resize(owner.conv)
        owner.conv = nn.Identity()
        return True

    for m in list(model.modules()):  # moving adds modules
        if type(m) is HRNetConcatNeck and m.premix is None and movable_pointwise_conv(m.mix):
            move(m, m.mix)
        elif (type(m) is HRNetPyramidNeck and m.premix is None
              and movable_pointwise_conv(m.reduction_conv)):
            move(m, m.reduction_conv)
    neck, head = getattr(model, 'neck', None), getattr(model, 'decode_head', None)
    if (type(neck) is HRNetConcatNeck and neck.premix is None
            and isinstance(neck.mix, nn.Identity) and isinstance(head, nn.Module)):
        first = _first_conv_of_fcn_head(head)
        if first is not None and first.conv.in_channels == neck.concat_channels:
            out_channels = first.conv.out_channels
            if move(neck, first):
                neck.out_channels = (out_channels,)
    return model


def streams_mixed(model: nn.Module) -> bool:
    """Whether :func:`mix_streams_before_resize` moved a conv in ``model`` (a neck of it mixes
    its streams before resizing them)."""
    return any(getattr(m, 'premix', None) is not None for m in model.modules())
