"""The toolboxes' own HRNet unit tests, run on hrnet_mm.

The cases and assertions of ``tests/test_models/test_backbones/test_hrnet.py`` in
mmsegmentation, mmpose and mmdetection (mmdetection has no HRFPN unit test), with only the
imports and the construction changed: ``HRNet(arch=None, extra=..., compat=<toolbox>)`` for
the toolbox's ``HRNet(extra, ...)``, and ``HRModule(in_channels, block, num_blocks,
channels, ...)`` for ``HRModule(num_branches=..., blocks=..., ...)``. ``compat`` gives each
toolbox's defaults, as building from that toolbox's config does.
"""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from hrnet_mm import HRNet
from hrnet_mm.models.blocks import BasicBlock, Bottleneck
from hrnet_mm.models.exchange import HRModule


def w32_extra(num_stages=4):
    extra = dict(
        stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4, ),
                    num_channels=(64, )),
        stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4),
                    num_channels=(32, 64)),
        stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4),
                    num_channels=(32, 64, 128)),
        stage4=dict(num_modules=3, num_branches=4, block='BASIC', num_blocks=(4, 4, 4, 4),
                    num_channels=(32, 64, 128, 256)))
    return {k: v for k, v in extra.items() if int(k[-1]) <= num_stages}


# --- mmsegmentation: tests/test_models/test_backbones/test_hrnet.py ---------------------------

def test_mmseg_hrnet_backbone_two_stages_frozen():
    frozen_stages = 2
    model = HRNet(arch=None, extra=w32_extra(), frozen_stages=frozen_stages, compat='mmseg')
    model.init_weights()
    model.train()
    assert model.norm1.training is False

    for layer in [model.conv1, model.norm1]:
        for param in layer.parameters():
            assert param.requires_grad is False
    for i in range(1, frozen_stages + 1):
        if i == 1:
            layer = getattr(model, f'layer{i}')
            transition = getattr(model, f'transition{i}')
        elif i == 4:
            layer = getattr(model, f'stage{i}')
        else:
            layer = getattr(model, f'stage{i}')
            transition = getattr(model, f'transition{i}')

        for mod in layer.modules():
            if isinstance(mod, _BatchNorm):
                assert mod.training is False
        for param in layer.parameters():
            assert param.requires_grad is False

        for mod in transition.modules():
            if isinstance(mod, _BatchNorm):
                assert mod.training is False
        for param in transition.parameters():
            assert param.requires_grad is False


# --- mmpose: tests/test_models/test_backbones/test_hrnet.py -----------------------------------

def _all_zeros(module):
    weight_zero = torch.equal(module.weight.data, torch.zeros_like(module.weight.data))
    if hasattr(module, 'bias'):
        bias_zero = torch.equal(module.bias.data, torch.zeros_like(module.bias.data))
    else:
        bias_zero = True
    return weight_zero and bias_zero


def test_mmpose_hrmodule():
    block = HRModule([64], BasicBlock, (4, ), (64, ), multiscale_output=False)
    x = torch.randn(2, 64, 56, 56)
    x_out = block([x])
    assert x_out[0].shape == torch.Size([2, 64, 56, 56])


def test_mmpose_hrnet_backbone():
    extra = w32_extra()
    model = HRNet(arch=None, extra=extra, in_channels=3, compat='mmpose')

    imgs = torch.randn(2, 3, 224, 224)
    feat = model(imgs)
    assert isinstance(feat, tuple)
    assert feat[-1].shape == torch.Size([2, 32, 56, 56])

    # zero initialization of residual
    model = HRNet(arch=None, extra=extra, in_channels=3, zero_init_residual=True,
                  compat='mmpose')
    model.init_weights()
    for m in model.modules():
        if isinstance(m, Bottleneck):
            assert _all_zeros(m.norm3)
    model.train()

    imgs = torch.randn(2, 3, 224, 224)
    feat = model(imgs)
    assert isinstance(feat, tuple)
    assert feat[-1].shape == torch.Size([2, 32, 56, 56])

    # the first three stages frozen
    frozen_stages = 3
    model = HRNet(arch=None, extra=extra, in_channels=3, frozen_stages=frozen_stages,
                  compat='mmpose')
    model.init_weights()
    model.train()
    if frozen_stages >= 0:
        assert not model.norm1.training
        assert not model.norm2.training
        for layer in [model.conv1, model.norm1, model.conv2, model.norm2]:
            for param in layer.parameters():
                assert not param.requires_grad

    for i in range(1, frozen_stages + 1):
        if i == 1:
            layer = getattr(model, 'layer1')
        else:
            layer = getattr(model, f'stage{i}')
        for mod in layer.modules():
            if isinstance(mod, _BatchNorm):
                assert not mod.training
        for param in layer.parameters():
            assert not param.requires_grad

        if i < 4:
            layer = getattr(model, f'transition{i}')
        for mod in layer.modules():
            if isinstance(mod, _BatchNorm):
                assert not mod.training
        for param in layer.parameters():
            assert not param.requires_grad


# --- mmdetection: tests/test_models/test_backbones/test_hrnet.py ------------------------------

@pytest.mark.parametrize('block', [BasicBlock, Bottleneck])
def test_mmdet_hrmodule(block):
    # multiscale forward
    num_channels = (32, 64)
    in_channels = [c * block.expansion for c in num_channels]
    hrmodule = HRModule(in_channels, block, (4, 4), num_channels)

    feats = [torch.randn(1, in_channels[0], 64, 64), torch.randn(1, in_channels[1], 32, 32)]
    feats = hrmodule(feats)

    assert len(feats) == 2
    assert feats[0].shape == torch.Size([1, in_channels[0], 64, 64])
    assert feats[1].shape == torch.Size([1, in_channels[1], 32, 32])

    # single scale forward
    hrmodule = HRModule(in_channels, block, (4, 4), num_channels, multiscale_output=False)

    feats = [torch.randn(1, in_channels[0], 64, 64), torch.randn(1, in_channels[1], 32, 32)]
    feats = hrmodule(feats)

    assert len(feats) == 1
    assert feats[0].shape == torch.Size([1, in_channels[0], 64, 64])


def test_mmdet_hrnet_backbone():
    # only 3 stages
    extra = w32_extra(num_stages=3)
    with pytest.raises(AssertionError):
        HRNet(arch=None, extra=extra, compat='mmdet')
    extra['stage4'] = dict(
        num_modules=3,
        num_branches=3,  # should be 4
        block='BASIC',
        num_blocks=(4, 4, 4, 4),
        num_channels=(32, 64, 128, 256))
    with pytest.raises(AssertionError):
        # len(num_blocks) should equal num_branches
        HRNet(arch=None, extra=extra, compat='mmdet')

    extra['stage4']['num_branches'] = 4

    # hrnetv2p_w32
    model = HRNet(arch=None, extra=extra, compat='mmdet')
    model.init_weights()
    model.train()

    imgs = torch.randn(1, 3, 256, 256)
    feats = model(imgs)
    assert len(feats) == 4
    assert feats[0].shape == torch.Size([1, 32, 64, 64])
    assert feats[3].shape == torch.Size([1, 256, 8, 8])

    # single scale output
    model = HRNet(arch=None, extra=extra, multiscale_output=False, compat='mmdet')
    model.init_weights()
    model.train()

    imgs = torch.randn(1, 3, 256, 256)
    feats = model(imgs)
    assert len(feats) == 1
    assert feats[0].shape == torch.Size([1, 32, 64, 64])
