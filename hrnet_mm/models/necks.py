"""The paper's representation heads as necks.

* V1 - the highest-resolution stream alone: ``HRNetConcatNeck(in_index=[0])``.
* V2 - every stream resized to the highest resolution and concatenated, optionally mixed by a
  conv: :class:`HRNetConcatNeck`.
* V2p - a pyramid pooled from the V2 representation: :class:`HRNetPyramidNeck` (with mmdet's
  HRFPN weights it gives HRFPN's outputs, and unlike HRFPN it honours ``norm_cfg``).

Both read the stream layout from ``in_channels`` (and ``in_strides``, the backbone's
``out_strides``) and expose ``out_channels`` and ``out_strides``; both check what they are fed
and say which setting disagrees.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from ..registry import MODELS
from .arch import STEM_STRIDE, UPSAMPLE_MODES


def _resize(x: torch.Tensor, size, mode: str, align_corners: Optional[bool]) -> torch.Tensor:
    """``x`` resized to ``size``; as is when already that size (an identity interpolation would
    only copy). ``align_corners`` applies to bilinear only."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode=mode,
                         align_corners=align_corners if mode == 'bilinear' else None)


def resize_concat(inputs: Sequence[torch.Tensor], *, mode: str = 'bilinear',
                  align_corners: Optional[bool] = False) -> torch.Tensor:
    """Resize every map to the first one's size and concatenate along channels.

    A map already at that size is used as is (an identity interpolation would only copy).
    """
    size = inputs[0].shape[-2:]
    return torch.cat([_resize(x, size, mode, align_corners) for x in inputs], dim=1)


def is_pointwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain 1x1 conv (stride 1, no padding, one group): it acts on each
    pixel alone, so it can run before a resize as well as after it."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1)


class _StreamsNeck(BaseModule):
    """Input checks and stream selection shared by both necks."""

    def __init__(self, in_channels: Sequence[int], in_index: Optional[Sequence[int]],
                 upsample_mode: str, align_corners: Optional[bool], init_cfg,
                 in_strides: Optional[Sequence[int]] = None):
        super().__init__(init_cfg)
        if isinstance(in_channels, int) or not in_channels:
            raise ValueError('in_channels must list the channels of every backbone stream, '
                             f'e.g. [48, 96, 192, 384] for HRNet-W48; got {in_channels!r}')
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f'upsample_mode must be one of {UPSAMPLE_MODES}, '
                             f'got {upsample_mode!r}')
        self.in_channels = tuple(in_channels)
        self.in_index = tuple(range(len(in_channels)) if in_index is None else in_index)
        if not self.in_index or any(not 0 <= i < len(in_channels) for i in self.in_index):
            raise ValueError(f'in_index {self.in_index} must pick streams among the '
                             f'{len(in_channels)} given by in_channels={self.in_channels}')
        if list(self.in_index) != sorted(set(self.in_index)):
            raise ValueError(f'in_index {self.in_index} must be increasing (highest '
                             'resolution first), without repeats')
        self.upsample_mode = upsample_mode
        self.align_corners = align_corners
        self.concat_channels = sum(self.in_channels[i] for i in self.in_index)
        # The backbone's strides (its out_strides); by default an HRNet's, 4 * 2**k.
        self.in_strides = tuple(in_strides if in_strides is not None else
                                (STEM_STRIDE * 2 ** k for k in range(len(self.in_channels))))
        if len(self.in_strides) != len(self.in_channels) or any(
                b <= a for a, b in zip(self.in_strides, self.in_strides[1:])):
            raise ValueError(f'in_strides {self.in_strides} must give one increasing stride per '
                             f'stream of in_channels={self.in_channels}; set it to the '
                             "backbone's out_strides")
        self.concat_stride = self.in_strides[self.in_index[0]]
        # Set by ``mix_before_resize`` (inference copies): per-stream 1x1 convs whose resized
        # outputs are summed in place of the concatenation.
        self.premix: Optional[nn.ModuleList] = None

    def mix_saving(self, out_channels: int) -> float:
        """What :meth:`mix_before_resize` saves for a conv to ``out_channels``: the
        multiply-adds it saves per element it adds to the resizing (each resized stream
        becomes ``out_channels`` wide instead of its own width), from the streams' strides;
        ``inf`` when no stream is resized."""
        first = self.in_strides[self.in_index[0]]
        saved = added = 0.0
        for i in self.in_index[1:]:
            area = (first / self.in_strides[i]) ** 2  # of a pixel at the concatenation's size
            saved += out_channels * self.in_channels[i] * (1 - area)
            added += out_channels - self.in_channels[i]
        return saved / added if added > 0 else float('inf')

    def mix_before_resize(self, conv: nn.Conv2d) -> None:
        """Make the concatenation ``conv(concat)`` directly: ``conv`` (1x1, stride 1, no
        padding, one group) is split by stream and applied to each stream *before* it is
        resized, the resized results summed, ``conv``'s bias added once. The same function:
        resizing (bilinear or nearest) is linear and keeps constants, and a 1x1 conv acts on
        each pixel alone. Far fewer multiply-adds: each stream is mixed at its own resolution
        (W48: 8x fewer than the 720-channel conv at 1/4). The caller must drop ``conv`` from
        where it ran (``prepare_for_inference`` does both); in place."""
        if not is_pointwise(conv):
            raise ValueError(f'mix_before_resize needs a 1x1 conv with stride 1, no padding '
                             f'and one group; got {conv}')
        if conv.in_channels != self.concat_channels:
            raise ValueError(f'the conv takes {conv.in_channels} channels, the concatenation '
                             f'has {self.concat_channels}')
        if self.premix is not None:
            raise ValueError('this neck already mixes before resizing')
        weight = conv.weight.detach()
        self.premix = nn.ModuleList()
        start = 0
        for k, i in enumerate(self.in_index):
            width = self.in_channels[i]
            part = nn.Conv2d(width, conv.out_channels, 1, bias=k == 0 and conv.bias is not None,
                             device=weight.device, dtype=weight.dtype)
            part.weight = nn.Parameter(weight[:, start:start + width].clone(),
                                       requires_grad=conv.weight.requires_grad)
            if part.bias is not None:
                part.bias = nn.Parameter(conv.bias.detach().clone(),
                                         requires_grad=conv.bias.requires_grad)
            self.premix.append(part)
            start += width

    def _select(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if isinstance(inputs, torch.Tensor) or len(inputs) != len(self.in_channels):
            n = 1 if isinstance(inputs, torch.Tensor) else len(inputs)
            raise ValueError(
                f'{type(self).__name__} got {n} feature maps but in_channels='
                f'{self.in_channels} declares {len(self.in_channels)}; set in_channels to the '
                "backbone's out_channels")
        got = tuple(x.shape[1] for x in inputs)
        if got != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} got feature maps with channels {got} but in_channels='
                f"{self.in_channels}; set in_channels to the backbone's out_channels "
                '(HRNet.out_channels)')
        return [inputs[i] for i in self.in_index]

    def _concat(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        streams = self._select(inputs)
        if self.premix is None:
            return resize_concat(streams, mode=self.upsample_mode,
                                 align_corners=self.align_corners)
        size = streams[0].shape[-2:]
        out = None
        for x, conv in zip(streams, self.premix):
            y = _resize(conv(x), size, self.upsample_mode, self.align_corners)
            out = y if out is None else out + y
        return out


@MODELS.register_module()
class HRNetConcatNeck(_StreamsNeck):
    """V2 representation: streams resized to the highest one's size and concatenated.

    Args:
        in_channels (Sequence[int]): channels of each backbone stream (``HRNet.out_channels``).
        in_index (Sequence[int], optional): streams to use, highest resolution first; default
            all. ``[0]`` gives V1.
        out_channels (int, optional): if set, a ``kernel_size`` conv + norm + act mixes the
            concatenation to this width; if None (default) the concatenation is the output,
            ``sum`` of the chosen ``in_channels`` wide.
        kernel_size (int): of the mixing conv. Default 1.
        upsample_mode (str): ``'bilinear'`` (default) or ``'nearest'``.
        align_corners (bool | None): for bilinear. Default False.
        conv_cfg, norm_cfg, act_cfg (dict): of the mixing conv; defaults no conv_cfg, BN, ReLU.
        in_strides (Sequence[int], optional): each stream's stride (the backbone's
            ``out_strides``); default an HRNet's, 4, 8, 16, 32. ``out_strides`` follows it.
        init_cfg (dict, optional): mmengine init config.

    Returns a one-element tuple, so mmseg heads take it with ``in_index=0``.

    Example:
        >>> import torch
        >>> neck = HRNetConcatNeck(in_channels=[18, 36, 72, 144])
        >>> feats = [torch.rand(1, c, 32 // 2**i, 64 // 2**i)
        ...          for i, c in enumerate([18, 36, 72, 144])]
        >>> tuple(neck(feats)[0].shape), neck.out_channels, neck.out_strides
        ((1, 270, 32, 64), (270,), (4,))
    """

    def __init__(self, in_channels: Sequence[int], *, in_index: Optional[Sequence[int]] = None,
                 out_channels: Optional[int] = None, kernel_size: int = 1,
                 upsample_mode: str = 'bilinear', align_corners: Optional[bool] = False,
                 conv_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 in_strides: Optional[Sequence[int]] = None, init_cfg=None):
        super().__init__(in_channels, in_index, upsample_mode, align_corners, init_cfg,
                         in_strides)
        if out_channels is None:
            self.mix = nn.Identity()
            width = self.concat_channels
        else:
            self.mix = ConvModule(self.concat_channels, out_channels, kernel_size,
                                  padding=kernel_size // 2, conv_cfg=conv_cfg,
                                  norm_cfg=norm_cfg, act_cfg=act_cfg)
            width = out_channels
        self.out_channels: Tuple[int, ...] = (width,)
        self.out_strides: Tuple[int, ...] = (self.concat_stride,)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        return (self.mix(self._concat(inputs)),)


@MODELS.register_module()
class HRNetPyramidNeck(_StreamsNeck):
    """V2p representation: the V2 concatenation, a 1x1 reduction, ``num_outs`` levels pooled
    by 2, 4, 8, ... and a 3x3 conv per level.

    Parameter names match mmdet's ``HRFPN`` (``reduction_conv``, ``fpn_convs``), so HRFPN
    weights load; with ``norm_cfg=None`` (default, as HRFPN) the outputs equal HRFPN's.

    Args:
        in_channels (Sequence[int]): channels of each backbone stream.
        out_channels (int): width of every pyramid level. Default 256.
        num_outs (int): pyramid levels. Default 5.
        pooling_type (str): ``'AVG'`` (default) or ``'MAX'``.
        in_index (Sequence[int], optional): streams to concatenate; default all.
        stride (int): stride of the per-level 3x3 convs. Default 1.
        upsample_mode, align_corners: how streams are resized (default bilinear, False).
        conv_cfg, norm_cfg, act_cfg (dict, optional): of every conv; norm and act default None.
        with_cp (bool): gradient checkpointing of the convs. Default False.
        in_strides (Sequence[int], optional): each stream's stride (the backbone's
            ``out_strides``); default an HRNet's, 4, 8, 16, 32.
        ceil_mode (bool): pool with ``ceil_mode``, so a 1/4 map whose sides are not multiples
            of ``2**(num_outs - 1)`` keeps its border cells (a 200x336 map gives a 13x21 top
            level instead of 12x21). Default False: floor, as HRFPN.
        init_cfg (dict): default Caffe2Xavier on convs, as HRFPN.

    Example:
        >>> import torch
        >>> neck = HRNetPyramidNeck(in_channels=[18, 36, 72, 144], out_channels=64)
        >>> feats = [torch.rand(1, c, 64 // 2**i, 64 // 2**i)
        ...          for i, c in enumerate([18, 36, 72, 144])]
        >>> [tuple(o.shape[-2:]) for o in neck(feats)]
        [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
        >>> neck.out_strides
        (4, 8, 16, 32, 64)
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, *,
                 num_outs: int = 5, pooling_type: str = 'AVG',
                 in_index: Optional[Sequence[int]] = None, stride: int = 1,
                 upsample_mode: str = 'bilinear', align_corners: Optional[bool] = False,
                 conv_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None, with_cp: bool = False,
                 ceil_mode: bool = False, in_strides: Optional[Sequence[int]] = None,
                 init_cfg=dict(type='Caffe2Xavier', layer='Conv2d')):
        super().__init__(in_channels, in_index, upsample_mode, align_corners, init_cfg,
                         in_strides)
        if pooling_type not in ('AVG', 'MAX'):
            raise ValueError(f"pooling_type must be 'AVG' or 'MAX', got {pooling_type!r}")
        if num_outs < 1:
            raise ValueError(f'num_outs must be >= 1, got {num_outs}')
        self.num_outs = num_outs
        self.with_cp = with_cp
        self.ceil_mode = ceil_mode
        self.pool = F.avg_pool2d if pooling_type == 'AVG' else F.max_pool2d
        conv = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.reduction_conv = ConvModule(self.concat_channels, out_channels, 1, **conv)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, stride=stride, **conv)
            for _ in range(num_outs))
        self.out_channels: Tuple[int, ...] = (out_channels,) * num_outs
        self.out_strides: Tuple[int, ...] = tuple(
            self.concat_stride * stride * 2 ** i for i in range(num_outs))

    def _run(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(layer, x, use_reentrant=False)
        return layer(x)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        out = self._run(self.reduction_conv, self._concat(inputs))
        window = 2 ** (self.num_outs - 1)
        if not self.ceil_mode and min(out.shape[-2:]) < window:
            raise ValueError(
                f'HRNetPyramidNeck: its {tuple(out.shape[-2:])} input map is smaller than the '
                f'{window}x{window} pooling window of level {self.num_outs - 1}; feed images of '
                f'at least {self.concat_stride * window} px a side, or set num_outs lower or '
                'ceil_mode=True')
        levels = [out] + [self.pool(out, kernel_size=2 ** i, stride=2 ** i,
                                    ceil_mode=self.ceil_mode)
                          for i in range(1, self.num_outs)]
        return tuple(self._run(conv, x) for conv, x in zip(self.fpn_convs, levels))
