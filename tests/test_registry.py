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


@pytest.mark.parametrize('scope', list(SCOPES))
def test_toolbox_defaults_follow_the_registry_scope(scope):
    """Built from a toolbox's config (its default scope), every setting the config leaves out is
    what that toolbox's own HRNet does with the same stage table: its upsampling mode (mmpose's
    and mmdet's nearest, mmseg's bilinear), how many streams it returns, norm_eval and init_cfg.
    Would catch: a default copied wrong into hrnet_mm's table, or the scope not followed."""
    import torch
    registry = importlib.import_module(SCOPES[scope]).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        ours = registry.build(dict(type='hrnet_mm.HRNet', arch='w18_small'))
        theirs = registry.build(dict(type='HRNet', extra=EXTRA))
    assert ours.compat == scope
    modes = {m.mode for m in theirs.modules()
             if hasattr(m, 'scale_factor') and hasattr(m, 'mode')}
    assert modes == {ours.upsample_mode}
    assert ours.upsample_mode == ('bilinear' if scope == 'mmseg' else 'nearest')
    theirs.eval()  # (mmseg's and mmdet's train() return None)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert len(ours.eval()(x)) == len(theirs(x))
    assert ours.norm_eval == theirs.norm_eval
    assert ours.init_cfg == theirs.init_cfg
    assert HRNet('w18_small').compat is None  # outside any toolbox: hrnet_mm's own defaults
    with DefaultScope.overwrite_default_scope(scope):
        assert registry.build(dict(type='hrnet_mm.HRNet', arch='w18_small',
                                   compat=None)).compat is None


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


@pytest.mark.parametrize('extra, message', [
    (dict(stage2=dict(num_chanels=(18, 36))),
     r"extra\['stage2'\] has unknown keys \['num_chanels'\]"),
    (dict(stage3=dict(multiscale_output=False)), r"unknown keys \['multiscale_output'\]"),
    (dict(upsample=dict(mode='nearest', scale=2)), r"extra\['upsample'\] has unknown keys"),
    (dict(fuse_method='SUM'), r"unknown key 'fuse_method'"),
])
def test_unknown_extra_keys_are_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        HRNet('w18', extra=extra)


@pytest.mark.parametrize('kw, extra, message', [
    (dict(upsample_mode='bilinear'), dict(upsample=dict(mode='nearest')),
     r"upsample_mode='bilinear' but extra sets extra\['upsample'\]\['mode'\] to 'nearest'"),
    (dict(multiscale_output=True), dict(stage4=dict(multiscale_output=False)),
     r"multiscale_output=True but extra sets extra\['stage4'\]\['multiscale_output'\]"),
])
def test_contradictions_between_arguments_and_extra_are_refused(kw, extra, message):
    with pytest.raises(ValueError, match=message):
        HRNet('w18', extra=extra, **kw)


def test_extra_sets_what_the_arguments_leave_out():
    net = HRNet('w18_small', extra=dict(upsample=dict(mode='bilinear', align_corners=True),
                                        stage4=dict(multiscale_output=False)))
    assert (net.upsample_mode, net.align_corners, net.out_channels) == ('bilinear', True, (16,))
    # agreeing in both places is fine
    HRNet('w18_small', upsample_mode='nearest', extra=dict(upsample=dict(mode='nearest')))


def test_stage_dict_as_first_argument_says_to_use_extra():
    with pytest.raises(TypeError, match=r'extra=\.\.\. \(with arch=None\)'):
        HRNet(dict(hrnet_mm.ARCH_ZOO['w18']))


def test_neck_in_channels_must_match_the_backbone():
    import torch
    net = HRNet('w18_small').eval()
    neck = HRNetConcatNeck([18, 36, 72, 144])
    with pytest.raises(ValueError, match=r"channels \(16, 32, 64, 128\).*backbone's out_channels"):
        neck(net(torch.rand(1, 3, 64, 64)))
