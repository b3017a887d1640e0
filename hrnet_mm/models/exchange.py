"""The exchange unit (``HRModule``): a residual stack per stream, then every stream receives
every other and sums them; with ``with_cp``, checkpointed with its norms' statistics kept.

Sub-module names follow mmseg's, mmdet's and mmpose's ``HRModule``, so their checkpoints load.
"""
import contextlib
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm

from . import norms
from .blocks import make_res_layer


def tracing() -> bool:
    """Inside torch.compile, torch.export or an ONNX export (either exporter), whose graphs
    must hold for every input size. (A plain TorchScript trace, as mmengine's FLOP counter
    makes, runs the eager path and so records the branches of its example size.)"""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


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
            if not tracing() and scaled == size:
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
                z = norms.forward_with_wide_norms(layer, x[j])
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
