"""HRNet backbone: parallel multi-resolution streams with repeated exchange units.

After Sun et al., *Deep High-Resolution Representation Learning for Visual Recognition*
(TPAMI 2020). The stage tables come from :mod:`.arch`, the exchange units from :mod:`.exchange`;
the sub-module names follow mmseg's, mmdet's and mmpose's HRNets, so their checkpoints (and the
open-mmlab ImageNet ones) load with every key matched, and one that does not fit is refused
(:mod:`.checkpoint_fit`).
"""
import copy
import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm

from ..registry import MODELS
from . import norms
from .arch import (ARCH_ZOO, STEM_CHANNELS, STEM_STRIDE, TOOLBOX_DEFAULTS, UPSAMPLE_MODES,
                   pick_setting, resolve_arch, resolve_compat)
from .blocks import BLOCKS, ResidualBlock, make_res_layer
from .checkpoint_fit import CheckpointMismatchError, check_checkpoint_fits, match_preset
from .exchange import HRModule, tracing


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
        upsample_mode = pick_setting('upsample_mode', upsample_mode, options.get('upsample_mode'),
                              defaults['upsample_mode'], "extra['upsample']['mode']")
        align_corners = pick_setting('align_corners', align_corners, options.get('align_corners'),
                              None, "extra['upsample']['align_corners']")
        multiscale_output = pick_setting('multiscale_output', multiscale_output,
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
            check_checkpoint_fits(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

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
        if self.check_finite and not tracing() and not torch.isfinite(x).all():
            raise ValueError('HRNet input contains NaN or inf values; check the image loading '
                             'and normalisation (std of 0?)')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.relu(norms.forward_with_wide_norms(self.norm1, self.conv1(x)))
        x = self.relu(norms.forward_with_wide_norms(self.norm2, self.conv2(x)))
        feats = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f'transition{s - 1}')
            feats = [norms.forward_with_wide_norms(t, feats[i] if i < len(feats) else feats[-1])
                     for i, t in enumerate(transition)]
            feats = getattr(self, f'stage{s}')(feats)
        return tuple(feats)
