"""Residual units of HRNet, written once for every stream.

The sub-module names (``conv1``, ``bn1``, ..., ``downsample``) are those of the ResNet blocks
that mmseg's, mmdet's and mmpose's HRNets reuse, so their checkpoints load unchanged; the norms
are also reachable as ``norm1``, ``norm2`` (and ``norm3``), whatever their type, as OpenMMLab
code and ``init_cfg=dict(..., override=dict(name='norm3'))`` expect.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule

from . import norms


class ResidualBlock(BaseModule):
    """Shared forward of both residual units: ``relu(body(x) + shortcut(x))``.

    Subclasses build ``conv{k}``/``bn{k}`` pairs for ``k = 1..depth`` (a ReLU follows every
    pair except the last) and set ``self.depth``. With ``with_cp`` the body and the sum are
    recomputed in backward, as in the toolboxes' ResNet blocks (so a norm inside sees the
    batch twice in a training step, there as here).
    """

    expansion = 1
    depth = 2

    def __init__(self, with_cp: bool, init_cfg=None):
        super().__init__(init_cfg)
        self.with_cp = with_cp
        self.relu = nn.ReLU(inplace=True)

    def _set_shortcut(self, downsample: Optional[nn.Module]) -> None:
        # Registered after the convs, so the state dict's key order is the peers' too.
        self.downsample = downsample if downsample is not None else nn.Identity()

    def _add_conv_norm(self, k: int, conv_cfg, norm_cfg, in_ch: int, out_ch: int,
                       kernel_size: int, stride: int = 1) -> None:
        conv = build_conv_layer(conv_cfg, in_ch, out_ch, kernel_size, stride=stride,
                                padding=kernel_size // 2, bias=False)
        name, norm = build_norm_layer(norm_cfg, out_ch, postfix=k)
        self.add_module(f'conv{k}', conv)
        self.add_module(name, norm)
        setattr(self, f'norm{k}_name', name)

    def norm(self, k: int) -> nn.Module:
        """The norm layer after the ``k``-th conv (``bn{k}`` for batch norms)."""
        return getattr(self, getattr(self, f'norm{k}_name'))

    @property
    def norm1(self) -> nn.Module:
        return self.norm(1)

    @property
    def norm2(self) -> nn.Module:
        return self.norm(2)

    def conv_norm_pairs(self):
        """``(conv, norm)`` child names where the forward computes ``norm(conv(x))``."""
        return [(f'conv{k}', getattr(self, f'norm{k}_name')) for k in range(1, self.depth + 1)]

    @property
    def last_norm(self) -> nn.Module:
        """The norm whose zero init turns the unit into an identity (``zero_init_residual``)."""
        return self.norm(self.depth)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for k in range(1, self.depth + 1):
            out = norms.forward_with_wide_norms(self.norm(k), getattr(self, f'conv{k}')(out))
            if k < self.depth:
                out = self.relu(out)
        # In place: the norm's output is ours and its backward does not need it.
        out += norms.forward_with_wide_norms(self.downsample, x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(self._body, x, use_reentrant=False)
        else:
            out = self._body(x)
        return self.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (``conv1``/``bn1``, ``conv2``/``bn2``)."""

    expansion = 1
    depth = 2

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *,
                 downsample: Optional[nn.Module] = None, with_cp: bool = False,
                 conv_cfg=None, norm_cfg=dict(type='BN'), init_cfg=None):
        super().__init__(with_cp, init_cfg)
        self._add_conv_norm(1, conv_cfg, norm_cfg, in_channels, channels, 3, stride)
        self._add_conv_norm(2, conv_cfg, norm_cfg, channels, channels, 3)
        self._set_shortcut(downsample)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "pytorch" style), 1x1 expand."""

    expansion = 4
    depth = 3

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *,
                 downsample: Optional[nn.Module] = None, with_cp: bool = False,
                 conv_cfg=None, norm_cfg=dict(type='BN'), init_cfg=None):
        super().__init__(with_cp, init_cfg)
        self._add_conv_norm(1, conv_cfg, norm_cfg, in_channels, channels, 1)
        self._add_conv_norm(2, conv_cfg, norm_cfg, channels, channels, 3, stride)
        self._add_conv_norm(3, conv_cfg, norm_cfg, channels, channels * self.expansion, 1)
        self._set_shortcut(downsample)

    @property
    def norm3(self) -> nn.Module:
        return self.norm(3)


BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}


def make_res_layer(block: type, in_channels: int, channels: int, num_blocks: int, *,
                   stride: int = 1, with_cp: bool = False, conv_cfg=None,
                   norm_cfg=dict(type='BN')) -> nn.Sequential:
    """``num_blocks`` units of ``block``; a 1x1 conv + norm shortcut where the shape changes."""
    out_channels = channels * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            build_conv_layer(conv_cfg, in_channels, out_channels, 1, stride=stride, bias=False),
            build_norm_layer(norm_cfg, out_channels)[1])
    kwargs = dict(with_cp=with_cp, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
    layers = [block(in_channels, channels, stride, downsample=downsample, **kwargs)]
    layers += [block(out_channels, channels, **kwargs) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)
