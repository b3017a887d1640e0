"""HRNet backbone: parallel multi-resolution streams with repeated exchange units.

After Sun et al., *Deep High-Resolution Representation Learning for Visual Recognition*
(TPAMI 2020). The ``arch_zoo`` table and the ``extra`` override follow mmpretrain's HRNet; the
sub-module names follow mmseg's, mmdet's and mmpose's HRNets, so their checkpoints (and the
open-mmlab ImageNet ones) load with every key matched.
"""
import contextlib
import copy
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init
from mmengine.registry import DefaultScope
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm

from ..registry import MODELS
from . import norms
from .blocks import BLOCKS, ResidualBlock, make_res_layer
from .layout import CheckpointMismatchError, describe_checkpoint, match_preset


# One row per stage: (num_modules, num_branches, block, num_blocks, num_channels).
# Stage 1 is a single stream of bottlenecks; each later stage adds one lower-resolution stream.
def _standard(w: int) -> dict:
    return _stages([(1, 1, 'BOTTLENECK', (4,), (64,)),
                    (1, 2, 'BASIC', (4, 4), (w, 2 * w)),
                    (4, 3, 'BASIC', (4, 4, 4), (w, 2 * w, 4 * w)),
                    (3, 4, 'BASIC', (4, 4, 4, 4), (w, 2 * w, 4 * w, 8 * w))])


def _stages(rows) -> dict:
    keys = ('num_modules', 'num_branches', 'block', 'num_blocks', 'num_channels')
    return {f'stage{i + 1}': dict(zip(keys, row)) for i, row in enumerate(rows)}


ARCH_ZOO: Dict[str, dict] = {
    'w18_small': _stages([(1, 1, 'BOTTLENECK', (1,), (32,)),
                          (1, 2, 'BASIC', (2, 2), (16, 32)),
                          (1, 3, 'BASIC', (2, 2, 2), (16, 32, 64)),
                          (1, 4, 'BASIC', (2, 2, 2, 2), (16, 32, 64, 128))]),
    'w18_small_v2': _stages([(1, 1, 'BOTTLENECK', (2,), (64,)),
                             (1, 2, 'BASIC', (2, 2), (18, 36)),
                             (3, 3, 'BASIC', (2, 2, 2), (18, 36, 72)),
                             (2, 4, 'BASIC', (2, 2, 2, 2), (18, 36, 72, 144))]),
    **{f'w{w}': _standard(w) for w in (18, 30, 32, 40, 44, 48, 64)},
}

STEM_CHANNELS = 64
STEM_STRIDE = 4
UPSAMPLE_MODES = ('bilinear', 'nearest')
STAGE_NAMES = ('stage1', 'stage2', 'stage3', 'stage4')
STAGE_FIELDS = ('num_modules', 'num_branches', 'block', 'num_blocks', 'num_channels')
TOOLBOXES = ('mmseg', 'mmpose', 'mmdet')

_KAIMING_INIT = [dict(type='Kaiming', layer='Conv2d'),
                 dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]

# What each toolbox's own HRNet does with a setting its config leaves out (their
# models/backbones/hrnet.py); ``None`` is hrnet_mm's own choice, used outside any toolbox.
TOOLBOX_DEFAULTS: Dict[Optional[str], dict] = {
    None: dict(upsample_mode='bilinear', multiscale_output=True, norm_eval=False,
               init_cfg=_KAIMING_INIT),
    'mmseg': dict(upsample_mode='bilinear', multiscale_output=True, norm_eval=False,
                  init_cfg=_KAIMING_INIT),
    'mmdet': dict(upsample_mode='nearest', multiscale_output=True, norm_eval=True,
                  init_cfg=_KAIMING_INIT),
    # mmpose reads multiscale_output from extra['stage4'] (default False: V1) and its upsampling
    # from extra['upsample']; its convs start from N(0, 0.001).
    'mmpose': dict(upsample_mode='nearest', multiscale_output=False, norm_eval=False,
                   init_cfg=[dict(type='Normal', std=0.001, layer=['Conv2d']),
                             dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]),
}


class HRNetConfigError(ValueError, AssertionError):
    """A stage table or ``extra`` dict that does not describe an HRNet.

    A ``ValueError``; also an ``AssertionError``, which is what mmseg's, mmdet's and mmpose's
    HRNets raise for the same tables, so code written against them keeps catching it.
    """


def resolve_compat(compat: Optional[str]) -> Optional[str]:
    """``'auto'`` becomes the toolbox whose registry scope is current (``mim train mmseg``,
    a config's ``default_scope``), or None outside the three toolboxes."""
    if compat == 'auto':
        scope = DefaultScope.get_current_instance()
        name = scope.scope_name if scope is not None else None
        return name if name in TOOLBOXES else None
    if compat is not None and compat not in TOOLBOXES:
        raise ValueError(f"compat must be 'auto', None or one of {TOOLBOXES}, got {compat!r}")
    return compat


def split_extra(extra: Optional[Mapping]) -> Tuple[Dict[str, dict], dict]:
    """``(stage tables, options)`` from a toolbox-style ``extra`` dict.

    Reads every key the toolboxes' ``extra`` dicts carry: ``stage1``..``stage4`` with the five
    stage fields, mmpose's ``stage4['multiscale_output']`` and ``upsample=dict(mode,
    align_corners)``. Anything else is refused rather than ignored.
    """
    if extra is None:
        return {}, {}
    if not isinstance(extra, Mapping):
        raise TypeError(f'extra must be a dict of stage tables, got {type(extra).__name__}')
    stages: Dict[str, dict] = {}
    options: dict = {}
    for key, value in copy.deepcopy(dict(extra)).items():
        if key in STAGE_NAMES:
            if not isinstance(value, Mapping):
                raise TypeError(f'extra[{key!r}] must be a dict, got {value!r}')
            value = dict(value)
            if key == 'stage4' and 'multiscale_output' in value:
                options['multiscale_output'] = value.pop('multiscale_output')
            unknown = sorted(set(value) - set(STAGE_FIELDS))
            if unknown:
                also = " (stage4 also takes mmpose's multiscale_output)"
                raise HRNetConfigError(f'extra[{key!r}] has unknown keys {unknown}; a stage '
                                       f'takes {list(STAGE_FIELDS)}{also}')
            stages[key] = value
        elif key == 'upsample':
            if not isinstance(value, Mapping):
                raise TypeError(f"extra['upsample'] must be dict(mode=..., align_corners=...), "
                                f'got {value!r}')
            unknown = sorted(set(value) - {'mode', 'align_corners'})
            if unknown:
                raise HRNetConfigError(f"extra['upsample'] has unknown keys {unknown}; it "
                                       "takes 'mode' and 'align_corners' (mmpose)")
            if 'mode' in value:
                options['upsample_mode'] = value['mode']
            if 'align_corners' in value:
                options['align_corners'] = value['align_corners']
        else:
            raise HRNetConfigError(f'extra has an unknown key {key!r}; it takes '
                                   f"{list(STAGE_NAMES)} and mmpose's 'upsample'")
    return stages, options


def resolve_arch(arch: Optional[str], extra: Optional[Mapping] = None) -> Tuple[dict, dict]:
    """``(stage table, options)``: the preset's table, deep-copied, with ``extra``'s stage
    tables laid over it, and the other settings ``extra`` carries (see :func:`split_extra`).

    ``arch=None`` takes the stages from ``extra`` alone (mmseg/mmpose/mmdet-style full
    ``extra`` dicts).
    """
    if isinstance(arch, Mapping):
        raise TypeError("HRNet's first argument is the preset name; pass a stage dict as "
                        'extra=... (with arch=None)')
    stages, options = split_extra(extra)
    if arch is None:
        if not stages:
            raise HRNetConfigError('HRNet needs arch= (one of %s) or a full extra= dict'
                                   % ', '.join(ARCH_ZOO))
        cfg: dict = {}
    elif arch not in ARCH_ZOO:
        raise HRNetConfigError(f'Unknown HRNet arch {arch!r}; valid presets are: '
                               + ', '.join(ARCH_ZOO))
    else:
        cfg = copy.deepcopy(ARCH_ZOO[arch])
    for name, stage in stages.items():
        cfg.setdefault(name, {}).update(stage)
    _check_stages(cfg)
    for stage in cfg.values():
        stage['num_blocks'] = tuple(stage['num_blocks'])
        stage['num_channels'] = tuple(stage['num_channels'])
    return cfg, options


def _check_stages(cfg: dict) -> None:
    if sorted(cfg) != list(STAGE_NAMES):
        raise HRNetConfigError(f'HRNet needs exactly the stages {list(STAGE_NAMES)}, '
                               f'got {sorted(cfg)}')
    prev_branches = 0
    for name in STAGE_NAMES:
        s = cfg[name]
        missing = set(STAGE_FIELDS) - set(s)
        if missing:
            raise HRNetConfigError(f'extra[{name!r}] lacks {sorted(missing)}')
        if s['block'] not in BLOCKS:
            raise HRNetConfigError(f"extra[{name!r}]['block'] is {s['block']!r}; use one "
                                   f'of {sorted(BLOCKS)}')
        n = s['num_branches']
        if len(s['num_blocks']) != n or len(s['num_channels']) != n:
            raise HRNetConfigError(
                f"extra[{name!r}] has num_branches={n} but num_blocks={tuple(s['num_blocks'])} "
                f"and num_channels={tuple(s['num_channels'])}: give one entry per branch")
        if name == 'stage1' and n != 1:
            raise HRNetConfigError("extra['stage1'] must have num_branches=1 (one stream)")
        if n < prev_branches:
            raise HRNetConfigError(f'extra[{name!r}] has {n} branches, fewer than the stage '
                                   f'before ({prev_branches}); streams are only ever added')
        if s['num_modules'] < 1 or min(s['num_blocks']) < 1 or min(s['num_channels']) < 1:
            raise HRNetConfigError(f'extra[{name!r}] needs num_modules, num_blocks and '
                                   f'num_channels of at least 1, got {s}')
        prev_branches = n


def _pick(name: str, explicit, from_extra, default, extra_key: str):
    """An explicit argument, else ``extra``'s value, else the toolbox default; both set and
    different is a contradiction, not a silent override."""
    if explicit is not None and from_extra is not None and explicit != from_extra:
        raise ValueError(f'HRNet got {name}={explicit!r} but extra sets {extra_key} to '
                         f'{from_extra!r}; set it in one place')
    for value in (explicit, from_extra):
        if value is not None:
            return value
    return default


def _tracing() -> bool:
    """Inside torch.compile or torch.export (the ONNX exporter's default), whose graphs must
    hold for every input size. (A TorchScript trace, as mmengine's FLOP counter makes, runs
    the eager path and so records the branches of its example size.)"""
    return torch.compiler.is_compiling()


@contextlib.contextmanager
def _running_stats_frozen(norms: Sequence[nn.Module]):
    """Batch norms leave their running statistics and ``num_batches_tracked`` as they found
    them, and still record for backward exactly what they did the first time (in training
    mode a norm normalises with the batch's statistics, not the running ones).

    The statistics are restored from a copy rather than updated at momentum 0: ``1 * r + 0 *
    m`` is not ``r`` when the batch statistic ``m`` is inf or NaN (``0 * inf`` is NaN), as in
    an fp16 step that overflows. With the copy, such a step leaves the exchange's norms
    exactly as the toolboxes leave theirs (which are not recomputed): updated once, by the
    forward.
    """
    saved = [[t.clone() if t is not None else None
              for t in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        for m, copies in zip(norms, saved):
            for t, kept in zip((m.running_mean, m.running_var, m.num_batches_tracked), copies):
                if kept is not None:
                    t.copy_(kept)


class HRModule(BaseModule):
    """One exchange unit: a residual stack per stream, then every stream receives every other.

    Lower-resolution streams reach a higher one through a 1x1 conv + norm and an upsampling by
    ``2**k``, then, where that does not give the target's size (inputs that are not multiples
    of 32), a resize to it: mmseg's rule, equal to mmpose's and mmdet's wherever they run (they
    stop at such sizes). ``exact_upsample=True`` resizes once, straight to the target's size,
    as the official HRNet-Semantic-Segmentation code. Higher streams reach a lower one through
    stride-2 3x3 conv + norm steps (ReLU between steps). The sums pass a ReLU.

    Args:
        in_channels (Sequence[int]): channels entering each stream.
        block (type): residual unit class, ``BasicBlock`` or ``Bottleneck``.
        num_blocks (Sequence[int]): units per stream.
        channels (Sequence[int]): width of each stream's units (times ``block.expansion`` out).
        multiscale_output (bool): fuse into every stream (True) or only the highest (False).
        upsample_mode (str): ``'bilinear'`` or ``'nearest'``.
        align_corners (bool | None): for bilinear upsampling (None means False).
        exact_upsample (bool): one resize to the target's size instead of ``2**k`` then resize.
        with_cp (bool): gradient checkpointing inside every residual unit (as the toolboxes)
            and of the exchange, whose norms still update their statistics once a step.
    """

    def __init__(self, in_channels: Sequence[int], block: type, num_blocks: Sequence[int],
                 channels: Sequence[int], *, multiscale_output: bool = True,
                 upsample_mode: str = 'bilinear', align_corners: Optional[bool] = None,
                 exact_upsample: bool = False, with_cp: bool = False, conv_cfg=None,
                 norm_cfg=dict(type='BN'), init_cfg=None):
        super().__init__(init_cfg)
        if not len(in_channels) == len(num_blocks) == len(channels):
            raise ValueError(f'HRModule needs one entry per stream: in_channels={in_channels}, '
                             f'num_blocks={num_blocks}, channels={channels}')
        self.num_branches = len(channels)
        self.upsample_mode = upsample_mode
        self.align_corners = bool(align_corners) if upsample_mode == 'bilinear' else None
        self.exact_upsample = exact_upsample
        self.with_cp = with_cp
        self.branches = nn.ModuleList(
            make_res_layer(block, cin, c, n, with_cp=with_cp, conv_cfg=conv_cfg,
                           norm_cfg=norm_cfg)
            for cin, c, n in zip(in_channels, channels, num_blocks))
        self.out_channels = tuple(c * block.expansion for c in channels)
        self.fuse_layers = self._make_fuse_layers(
            self.out_channels, multiscale_output, conv_cfg, norm_cfg)
        # In place: every row sums two or more terms into a tensor it owns (see forward).
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _make_fuse_layers(chs, multiscale_output, conv_cfg, norm_cfg) -> nn.ModuleList:
        n = len(chs)
        if n == 1:
            return nn.ModuleList()

        def conv_norm(cin, cout, k, stride):
            return [build_conv_layer(conv_cfg, cin, cout, k, stride=stride, padding=k // 2,
                                     bias=False),
                    build_norm_layer(norm_cfg, cout)[1]]

        fuse_layers = nn.ModuleList()
        for i in range(n if multiscale_output else 1):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(*conv_norm(chs[j], chs[i], 1, 1)))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        layers = conv_norm(chs[j], chs[i] if last else chs[j], 3, 2)
                        steps.append(nn.Sequential(*layers, *([] if last else [nn.ReLU()])))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(row)
        return fuse_layers

    def _upsample(self, z: torch.Tensor, factor: int, size) -> torch.Tensor:
        size = tuple(size)
        if not self.exact_upsample:
            scaled = (z.shape[-2] * factor, z.shape[-1] * factor)
            z = F.interpolate(z, size=scaled, mode=self.upsample_mode,
                              align_corners=self.align_corners)
            # Where the sizes agree the second resize is an exact copy: skip it in eager mode,
            # keep it in traced graphs (compile, export), which must hold for every size.
            if not _tracing() and scaled == size:
                return z
        return F.interpolate(z, size=size, mode=self.upsample_mode,
                             align_corners=self.align_corners)

    def forward(self, x: List[torch.Tensor]) -> List[torch.Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        if len(self.fuse_layers) == 0:
            return x
        if self.with_cp and any(t.requires_grad for t in x):
            # The exchange is recomputed in backward too, but its norms must see the batch
            # once (as in the toolboxes, which keep these activations): the recomputation runs
            # them on batch statistics without touching running statistics.
            norms = [m for m in self.fuse_layers.modules() if isinstance(m, _BatchNorm)]
            return list(cp.checkpoint(
                self._fuse, *x, use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), _running_stats_frozen(norms))))
        return self._fuse(*x)

    def _fuse(self, *x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        for i, row in enumerate(self.fuse_layers):
            # Sum in place into a tensor this row owns (a norm or resize output, whose backward
            # does not need it); never into x[i] itself, which the other rows still read.
            y, owned = None, False
            for j, layer in enumerate(row):
                z = norms.run(layer, x[j])
                if j > i:
                    z = self._upsample(z, 2 ** (j - i), x[i].shape[-2:])
                if y is None:
                    y, owned = z, j != i
                elif owned:
                    y += z
                else:
                    y, owned = y + z, True
            outs.append(self.relu(y))
        return outs


@MODELS.register_module()
class HRNet(BaseModule):
    """HRNet backbone.

    A stem of two stride-2 3x3 convs brings the image to 1/4; stage 1 is one stream of
    bottlenecks; stages 2-4 keep their streams and add one at half the resolution
    (1/8, 1/16, 1/32), each stage a sequence of exchange units (:class:`HRModule`).

    Built from an mmseg, mmpose or mmdet config (``compat='auto'``, the default), every setting
    the config leaves out takes that toolbox's default, so swapping ``type='HRNet'`` for
    ``type='hrnet_mm.HRNet'`` keeps the toolbox's network, outputs and training behaviour.

    Args:
        arch (str | None): preset, one of ``ARCH_ZOO`` (``'w18_small'``, ``'w18_small_v2'``,
            ``'w18'``, ``'w30'``, ``'w32'``, ``'w40'``, ``'w44'``, ``'w48'``, ``'w64'``).
            Default ``'w32'``. ``None`` takes the stages from ``extra`` alone.
        extra (dict, optional): stage tables laid over the preset, e.g.
            ``dict(stage4=dict(num_modules=2))``, or a toolbox's full ``extra``. Also read:
            mmpose's ``stage4['multiscale_output']`` and ``upsample=dict(mode,
            align_corners)``. Unknown keys, and values that contradict an explicit argument,
            are errors.
        compat (str | None): whose defaults fill what is left out: ``'mmseg'``, ``'mmpose'``,
            ``'mmdet'``, None (hrnet_mm's: bilinear, all streams, no norm_eval), or ``'auto'``
            (default): the toolbox whose registry scope is current when the model is built,
            else None. See ``TOOLBOX_DEFAULTS``.
        in_channels (int): image channels. Default 3.
        upsample_mode (str, optional): ``'bilinear'`` (mmseg, official segmentation code) or
            ``'nearest'`` (mmpose, mmdet, timm, official classification/pose). Default: compat's.
        align_corners (bool, optional): for bilinear upsampling. Default False.
        exact_upsample (bool): fuse lower streams by one resize to the target's size instead of
            the toolboxes' upsampling by ``2**k`` (then a resize where sizes differ). The two
            agree when the input is a multiple of 32. Default False.
        multiscale_output (bool, optional): the last exchange unit feeds every stream (True) or
            only the highest-resolution one (False, the V1 representation of pose models).
            Default: compat's (False for mmpose, else True).
        conv_cfg (dict, optional): conv layer config for ``build_conv_layer``.
        norm_cfg (dict): norm layer config. Default ``dict(type='BN')``.
        norm_eval (bool, optional): keep norm layers in eval mode while training. Default:
            compat's (True for mmdet, else False).
        frozen_stages (int): -1 freezes nothing, 0 the stem, k also stages 1..k (with the
            transition leaving each). Default -1.
        with_cp (bool): gradient checkpointing inside every residual unit, as the toolboxes.
            Default False.
        zero_init_residual (bool): zero the last norm of each residual unit, unless weights
            come from a ``Pretrained`` init (mmseg's and mmdet's flag does nothing). Default
            False.
        channels_last (bool): keep weights and activations channels-last (NHWC strides; the
            same values up to float rounding), which oneDNN and cuDNN run faster. Downstream
            heads then receive channels-last maps: fine for convs and FCN/PSP/heatmap heads,
            not for heads that ``.view()`` features (mmseg's OCRHead). Default False.
        check_finite (bool): also refuse inputs with NaN or inf values, at the cost of a pass
            over the batch and a device sync every forward. Default False (the cheap shape
            and dtype checks always run).
        partial_load (bool): accept a checkpoint that covers only part of this backbone (say
            RGB weights for ``in_channels=4``): tensors it lacks keep their init and tensors of
            another shape are skipped, with mmengine's warning. Default False: such a
            checkpoint is refused with an error that says what it looks like.
        pretrained (str, optional): deprecated alias of
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)`` (mmseg's models set it).
        init_cfg (dict | list[dict], optional): mmengine init config; default: compat's
            (Kaiming convs and unit norms; mmpose: N(0, 0.001) convs).

    Example:
        >>> import torch
        >>> from hrnet_mm import HRNet
        >>> net = HRNet(arch='w18_small', compat=None).eval()
        >>> [tuple(o.shape) for o in net(torch.rand(1, 3, 64, 96))]
        [(1, 16, 16, 24), (1, 32, 8, 12), (1, 64, 4, 6), (1, 128, 2, 3)]
        >>> net.out_channels, net.out_strides
        ((16, 32, 64, 128), (4, 8, 16, 32))
    """

    arch_zoo = ARCH_ZOO

    def __init__(self, arch: Optional[str] = 'w32', *, extra: Optional[dict] = None,
                 compat: Optional[str] = 'auto', in_channels: int = 3,
                 upsample_mode: Optional[str] = None, align_corners: Optional[bool] = None,
                 exact_upsample: bool = False, multiscale_output: Optional[bool] = None,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 norm_eval: Optional[bool] = None, frozen_stages: int = -1,
                 with_cp: bool = False, zero_init_residual: bool = False,
                 channels_last: bool = False, check_finite: bool = False,
                 partial_load: bool = False, pretrained: Optional[str] = None, init_cfg=None):
        self.compat = resolve_compat(compat)
        defaults = TOOLBOX_DEFAULTS[self.compat]
        if pretrained is not None and init_cfg is not None:
            raise ValueError('HRNet: give either pretrained= or init_cfg=, not both')
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError(f'pretrained must be a path or URL string, got {pretrained!r}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is None:
            init_cfg = copy.deepcopy(defaults['init_cfg'])
        super().__init__(init_cfg)

        self.stages_cfg, options = resolve_arch(arch, extra)
        upsample_mode = _pick('upsample_mode', upsample_mode, options.get('upsample_mode'),
                              defaults['upsample_mode'], "extra['upsample']['mode']")
        align_corners = _pick('align_corners', align_corners, options.get('align_corners'),
                              None, "extra['upsample']['align_corners']")
        multiscale_output = _pick('multiscale_output', multiscale_output,
                                  options.get('multiscale_output'),
                                  defaults['multiscale_output'],
                                  "extra['stage4']['multiscale_output']")
        norm_eval = defaults['norm_eval'] if norm_eval is None else norm_eval
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f'upsample_mode must be one of {UPSAMPLE_MODES}, '
                             f'got {upsample_mode!r}')
        if upsample_mode == 'nearest' and align_corners:
            raise ValueError('align_corners=True only applies to bilinear upsampling; '
                             "drop it or set upsample_mode='bilinear'")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in -1..4, got {frozen_stages}')

        self.arch = arch if arch is not None else match_preset(self.stages_cfg, ARCH_ZOO)
        self.in_channels = in_channels
        self.upsample_mode = upsample_mode
        self.align_corners = bool(align_corners) if upsample_mode == 'bilinear' else None
        self.exact_upsample = exact_upsample
        self.norm_cfg = copy.deepcopy(norm_cfg)
        self.conv_cfg = conv_cfg
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        self.multiscale_output = multiscale_output
        self.partial_load = partial_load
        self.check_finite = check_finite

        # Stem: two stride-2 3x3 convs to 1/4.
        self.conv1 = build_conv_layer(conv_cfg, in_channels, STEM_CHANNELS, 3, stride=2,
                                      padding=1, bias=False)
        self.norm1_name, norm1 = build_norm_layer(self.norm_cfg, STEM_CHANNELS, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = build_conv_layer(conv_cfg, STEM_CHANNELS, STEM_CHANNELS, 3, stride=2,
                                      padding=1, bias=False)
        self.norm2_name, norm2 = build_norm_layer(self.norm_cfg, STEM_CHANNELS, postfix=2)
        self.add_module(self.norm2_name, norm2)
        self.relu = nn.ReLU(inplace=True)

        common = dict(with_cp=with_cp, conv_cfg=conv_cfg, norm_cfg=self.norm_cfg)
        s1 = self.stages_cfg['stage1']
        block = BLOCKS[s1['block']]
        self.layer1 = make_res_layer(block, STEM_CHANNELS, s1['num_channels'][0],
                                     s1['num_blocks'][0], **common)
        pre_channels = [s1['num_channels'][0] * block.expansion]

        for s in (2, 3, 4):
            cfg = self.stages_cfg[f'stage{s}']
            block = BLOCKS[cfg['block']]
            channels = [c * block.expansion for c in cfg['num_channels']]
            self.add_module(f'transition{s - 1}',
                            self._make_transition(pre_channels, channels))
            modules = []
            in_chs = channels
            for m in range(cfg['num_modules']):
                last = s == 4 and m == cfg['num_modules'] - 1
                module = HRModule(
                    in_chs, block, cfg['num_blocks'], cfg['num_channels'],
                    multiscale_output=multiscale_output or not last,
                    upsample_mode=upsample_mode, align_corners=self.align_corners,
                    exact_upsample=exact_upsample, **common)
                in_chs = module.out_channels
                modules.append(module)
            self.add_module(f'stage{s}', nn.Sequential(*modules))
            pre_channels = list(in_chs)

        n_out = len(pre_channels) if multiscale_output else 1
        self.out_channels: Tuple[int, ...] = tuple(pre_channels[:n_out])
        self.out_strides: Tuple[int, ...] = tuple(STEM_STRIDE * 2 ** i for i in range(n_out))
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._freeze_stages()
        if compat == 'auto' and self.compat is not None:
            print_log(f'hrnet_mm.HRNet: {self.compat} defaults (registry scope '
                      f'{self.compat!r}): upsample_mode={upsample_mode!r}, '
                      f'multiscale_output={multiscale_output}, norm_eval={norm_eval}',
                      logger='current', level=logging.INFO)

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    def conv_norm_pairs(self):
        """``(conv, norm)`` child names where the forward computes ``norm(conv(x))``."""
        return [('conv1', self.norm1_name), ('conv2', self.norm2_name)]

    def _make_transition(self, pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
        """Into the next stage: adapt kept streams whose width changes, add the new ones."""
        def conv_norm_relu(cin, cout, stride):
            return nn.Sequential(
                build_conv_layer(self.conv_cfg, cin, cout, 3, stride=stride, padding=1,
                                 bias=False),
                build_norm_layer(self.norm_cfg, cout)[1], nn.ReLU(inplace=True))

        layers = nn.ModuleList()
        for i, c in enumerate(cur):
            if i < len(pre):
                layers.append(nn.Identity() if c == pre[i] else conv_norm_relu(pre[i], c, 1))
            else:
                # A new stream: stride-2 steps from the lowest existing one.
                n_steps = i + 1 - len(pre)
                layers.append(nn.Sequential(*(
                    conv_norm_relu(pre[-1], c if k == n_steps - 1 else pre[-1], 2)
                    for k in range(n_steps))))
        return layers

    def _stage_modules(self, i: int) -> List[nn.Module]:
        """What ``frozen_stages >= i`` freezes: stage i and the transition leaving it."""
        if i == 0:
            return [self.conv1, self.norm1, self.conv2, self.norm2]
        mods = [self.layer1 if i == 1 else getattr(self, f'stage{i}')]
        if i < 4:
            mods.append(getattr(self, f'transition{i}'))
        return mods

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages + 1):
            for m in self._stage_modules(i):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def init_weights(self) -> None:
        pretrained = [c for c in (self.init_cfg if isinstance(self.init_cfg, list)
                                  else [self.init_cfg])
                      if isinstance(c, dict) and c.get('type') == 'Pretrained']
        try:
            super().init_weights()
        except CheckpointMismatchError:
            raise
        except Exception as err:
            if not pretrained:
                raise
            source = pretrained[0].get('checkpoint')
            raise RuntimeError(
                f'HRNet could not load its pretrained weights from {source!r} '
                f'({type(err).__name__}: {err}). To train without them (from scratch), add '
                '`--cfg-options model.pretrained=None` to mim train (or set '
                'model.backbone.init_cfg=None), or use the *_scratch config; to use a local '
                "copy, set model.pretrained='/path/to/hrnetv2_wXX.pth'.") from err
        if self.zero_init_residual and not pretrained:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    constant_init(m.last_norm, 0)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # mmengine's non-strict loading (Pretrained init, load_from, mim test --checkpoint)
        # only warns about missing keys and shape mismatches and carries on with a half-loaded
        # backbone; refuse instead, saying what the checkpoint is.
        if not self.partial_load:
            self._check_checkpoint_fits(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _check_checkpoint_fits(self, state_dict, prefix: str) -> None:
        own = self.state_dict()
        # Checkpoints from before torch 0.4.1 lack num_batches_tracked; torch fills it in.
        required = [k for k in own if not k.endswith('num_batches_tracked')]
        missing = [k for k in required if prefix + k not in state_dict]
        wrong = [(k, tuple(state_dict[prefix + k].shape), tuple(v.shape))
                 for k, v in own.items()
                 if isinstance(state_dict.get(prefix + k), torch.Tensor)
                 and state_dict[prefix + k].shape != v.shape]
        if not missing and not wrong:
            return
        what, fix = describe_checkpoint(state_dict, prefix, ARCH_ZOO)
        problems = []
        if missing:
            problems.append(f'{len(missing)} of its {len(required)} tensors are missing from '
                            f'the checkpoint (e.g. {prefix}{missing[0]})')
        if wrong:
            k, theirs, ours = wrong[0]
            problems.append(f'{len(wrong)} differ in shape (e.g. {prefix}{k}: {theirs} in the '
                            f'checkpoint vs {ours} here)')
        raise CheckpointMismatchError(
            f"checkpoint does not fit hrnet_mm.HRNet(arch={self.arch!r}) under prefix "
            f"{prefix!r}: {' and '.join(problems)}. The checkpoint looks like {what}. "
            f'Fix: {fix}. For a deliberate partial load (e.g. RGB weights into '
            'in_channels=4), build the backbone with partial_load=True.')

    def train(self, mode: bool = True) -> 'HRNet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        """Say what is wrong with a bad batch, and how to fix it, before any layer does."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'HRNet expects a torch.Tensor batch, got {type(x).__name__}')
        if x.dim() != 4:
            hint = (' (a single image: add the batch dimension with x[None])'
                    if x.dim() == 3 else '')
            raise ValueError(f'HRNet expects an N x C x H x W batch, got shape '
                             f'{tuple(x.shape)}{hint}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'HRNet was built for {self.in_channels}-channel images but got '
                f'{x.shape[1]} channels (shape {tuple(x.shape)}); convert the images (e.g. '
                f'grayscale to RGB) or build HRNet(in_channels={x.shape[1]})')
        if not x.is_floating_point():
            raise TypeError(
                f'HRNet expects a floating-point batch, got {x.dtype}; normalise the images '
                "first (mmseg's SegDataPreProcessor does) or call x.float()")
        if 0 in x.shape:
            raise ValueError(f'HRNet got an empty batch of shape {tuple(x.shape)}')
        if self.training and x.shape[0] == 1:
            h, w = x.shape[-2:]
            for _ in range(2 + self.stages_cfg['stage4']['num_branches'] - 1):
                h, w = (h + 1) // 2, (w + 1) // 2
            if h * w == 1:
                raise ValueError(
                    f'A {tuple(x.shape[-2:])} image is too small to train on one at a time: '
                    'the lowest-resolution stream is 1x1 and batch norm needs more than one '
                    'value per channel; use crops of at least 33 px a side or batches of 2+')
        if self.check_finite and not _tracing() and not torch.isfinite(x).all():
            raise ValueError('HRNet input contains NaN or inf values; check the image loading '
                             'and normalisation (std of 0?)')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.relu(norms.run(self.norm1, self.conv1(x)))
        x = self.relu(norms.run(self.norm2, self.conv2(x)))
        feats = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f'transition{s - 1}')
            feats = [norms.run(t, feats[i] if i < len(feats) else feats[-1])
                     for i, t in enumerate(transition)]
            feats = getattr(self, f'stage{s}')(feats)
        return tuple(feats)
