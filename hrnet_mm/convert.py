"""Convert HRNet checkpoints of other codebases into hrnet_mm (= mmseg/mmdet/mmpose) keys.

Sources:

* ``official-seg``: HRNet-Semantic-Segmentation (``seg_hrnet.py``). Keys carry a ``model.``
  prefix; ``last_layer`` (1x1 conv with bias, BN, ReLU, 1x1 classifier) becomes an mmseg
  ``FCNHead`` (``decode_head.convs.0`` with the conv bias folded into the BN's running mean,
  ``decode_head.conv_seg``). Output keys: ``backbone.*`` and ``decode_head.*``, loadable into
  ``configs/hrnet_wXX_cityscapes.py``.
* ``official-cls``: HRNet-Image-Classification. The classification-only parts
  (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``) are dropped and
  reported. Output keys: the backbone's, for ``init_cfg=dict(type='Pretrained', ...)``.
* ``timm``: timm's ``hrnet_wXX`` models; the same layout as official-cls.

Every converted backbone tensor is checked against an ``HRNet(arch)`` built here: a missing key
or a shape mismatch (say, a W32 checkpoint converted as W48) fails with the key names.
"""
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

CLS_ONLY = ('incre_modules', 'downsamp_modules', 'final_layer', 'classifier')
FORMATS = ('official-seg', 'official-cls', 'timm')


class ConversionError(ValueError):
    """The source checkpoint does not fit the requested format or architecture."""


def _strip(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                       for k, v in state.items())


def _unwrap(ckpt) -> Dict[str, torch.Tensor]:
    if not isinstance(ckpt, dict):
        raise ConversionError(f'expected a state dict, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model', 'state_dict_ema'):
        if key in ckpt and isinstance(ckpt[key], dict) and all(
                isinstance(v, torch.Tensor) for v in ckpt[key].values()):
            return ckpt[key]
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ConversionError('no tensor state dict found in the checkpoint')
    return ckpt


def _seg_head(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The official ``last_layer`` as mmseg FCNHead keys (conv bias folded into the BN)."""
    need = ['last_layer.0.weight', 'last_layer.1.weight', 'last_layer.1.bias',
            'last_layer.1.running_mean', 'last_layer.1.running_var', 'last_layer.3.weight']
    missing = [k for k in need if k not in state]
    if missing:
        raise ConversionError(f'not an official segmentation checkpoint: missing {missing}')
    head = OrderedDict()
    head['decode_head.convs.0.conv.weight'] = state['last_layer.0.weight']
    mean = state['last_layer.1.running_mean']
    if 'last_layer.0.bias' in state:
        # BN(conv(x) + b) == BN'(conv(x)) with running_mean' = running_mean - b
        mean = mean - state['last_layer.0.bias']
    for name in ('weight', 'bias', 'running_var', 'num_batches_tracked'):
        if f'last_layer.1.{name}' in state:
            head[f'decode_head.convs.0.bn.{name}'] = state[f'last_layer.1.{name}']
    head['decode_head.convs.0.bn.running_mean'] = mean
    head['decode_head.conv_seg.weight'] = state['last_layer.3.weight']
    if 'last_layer.3.bias' in state:
        head['decode_head.conv_seg.bias'] = state['last_layer.3.bias']
    return head, [k for k in state if k.startswith('last_layer.')]


def convert(ckpt, src_format: str, arch: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Returns ``(state_dict, dropped_keys)``; raises :class:`ConversionError` on mismatch."""
    from .models.hrnet import HRNet
    if src_format not in FORMATS:
        raise ConversionError(f'unknown source format {src_format!r}; use one of {FORMATS}')
    state = _strip(_unwrap(ckpt), 'module.')
    head: Dict[str, torch.Tensor] = OrderedDict()
    dropped: List[str] = []
    if src_format == 'official-seg':
        state = _strip(state, 'model.')
        head, head_keys = _seg_head(state)
        consumed = set(head_keys)
        dropped += [k for k in state if k.startswith('loss.')]
        state = OrderedDict((k, v) for k, v in state.items()
                            if k not in consumed and not k.startswith('loss.'))
    dropped += [k for k in state if k.split('.')[0] in CLS_ONLY]
    backbone = OrderedDict((k, v) for k, v in state.items() if k.split('.')[0] not in CLS_ONLY)

    reference = HRNet(arch).state_dict()
    missing = [k for k in reference if k not in backbone]
    unexpected = [k for k in backbone if k not in reference]
    wrong = [f'{k}: {tuple(v.shape)} here, {tuple(reference[k].shape)} in HRNet({arch!r})'
             for k, v in backbone.items() if k in reference and v.shape != reference[k].shape]
    if wrong:
        raise ConversionError(f'{len(wrong)} tensors do not fit HRNet({arch!r}) - another '
                              'width? first: ' + '; '.join(wrong[:3]))
    if missing or unexpected:
        raise ConversionError(f'keys do not match HRNet({arch!r}) ({src_format}): missing '
                              f'{missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} '
                              f'({len(unexpected)})')
    if src_format == 'official-seg':
        backbone = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
        backbone.update(head)
    return backbone, dropped
