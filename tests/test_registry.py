"""``type='hrnet_mm.X'`` builds from mmseg's, mmpose's and mmdet's MODELS under their own
default scopes; their own ``type='HRNet'`` stays theirs."""
import importlib

import pytest
from mmengine.registry import DefaultScope

import hrnet_mm
from hrnet_mm import HRNet, HRNetConcatNeck, HRNetPyramidNeck

SCOPES = {'mmseg': 'mmseg.registry', 'mmpose': 'mmpose.registry', 'mmdet': 'mmdet.registry'}
EXTRA = {k: dict(v) for k, v in hrnet_mm.ARCH_ZOO['w18_small'].items()}


@pytest.mark.parametrize('scope', list(SCOPES))
def test_hrnet_mm_types_resolve_from_each_toolbox(scope):
    registry = importlib.import_module(SCOPES[scope]).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        net = registry.build(dict(type='hrnet_mm.HRNet', arch='w18_small'))
        concat = registry.build(dict(type='hrnet_mm.HRNetConcatNeck',
                                     in_channels=list(net.out_channels)))
        pyramid = registry.build(dict(type='hrnet_mm.HRNetPyramidNeck',
                                      in_channels=list(net.out_channels), out_channels=32))
        theirs = registry.build(dict(type='HRNet', extra=EXTRA))
    assert type(net) is HRNet
    assert type(concat) is HRNetConcatNeck and type(pyramid) is HRNetPyramidNeck
    assert type(theirs).__module__.startswith(scope)


def test_registry_is_a_child_of_the_root():
    from mmengine.registry import MODELS as ROOT
    assert hrnet_mm.MODELS.scope == 'hrnet_mm'
    assert hrnet_mm.MODELS.parent is ROOT
    assert ROOT._children['hrnet_mm'] is hrnet_mm.MODELS


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match='w18_small, w18_small_v2, w18, w30, w32, w40, w44, w48, w64'):
        HRNet('w50')


@pytest.mark.parametrize('extra, message', [
    (dict(stage2=dict(num_channels=(18, 36, 72))), 'one entry per branch'),
    (dict(stage3=dict(num_branches=1, num_blocks=(4,), num_channels=(18,))), 'fewer than'),
    (dict(stage2=dict(block='RESNEXT')), "use one of \\['BASIC', 'BOTTLENECK'\\]"),
])
def test_inconsistent_extra_is_refused_clearly(extra, message):
    with pytest.raises(ValueError, match=message):
        HRNet('w18', extra=extra)


def test_neck_in_channels_must_match_the_backbone():
    import torch
    net = HRNet('w18_small').eval()
    neck = HRNetConcatNeck([18, 36, 72, 144])
    with pytest.raises(ValueError, match=r"channels \(16, 32, 64, 128\).*backbone's out_channels"):
        neck(net(torch.rand(1, 3, 64, 64)))
