"""Same keys and same numbers as the installed peers: mmseg's HRNet (bilinear), mmpose's and
mmdet's (nearest), mmdet's HRFPN, and mmseg's whole FCN-HRNet segmentor."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.models.backbones import HRNet as DetHRNet
from mmdet.models.necks import HRFPN
from mmpose.models.backbones import HRNet as PoseHRNet
from mmseg.models.backbones import HRNet as SegHRNet

from hrnet_mm import ARCH_ZOO, HRNet, HRNetPyramidNeck

from .conftest import REPO, quiet

PEERS = {'mmseg': (SegHRNet, 'bilinear'), 'mmdet': (DetHRNet, 'nearest'),
         'mmpose': (PoseHRNet, 'nearest')}


def peer_extra(arch, peer, multiscale_output=True):
    extra = {k: dict(v) for k, v in copy.deepcopy(ARCH_ZOO[arch]).items()}
    if peer == 'mmpose':
        extra['stage4']['multiscale_output'] = multiscale_output
    return extra


def randomize_norm_stats(model):
    """Non-trivial running statistics so eval-mode outputs depend on every buffer."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize('peer', list(PEERS))
@pytest.mark.parametrize('arch', ['w18', 'w32', 'w48'])
def test_same_keys_and_outputs_as_peer(arch, peer):
    peer_cls, mode = PEERS[peer]
    theirs = quiet(peer_cls(extra=peer_extra(arch, peer)))
    randomize_norm_stats(theirs)
    ours = HRNet(arch, upsample_mode=mode)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert len(a) == len(b) == 4
    for u, v in zip(a, b):
        assert u.shape == v.shape
        assert (u - v).abs().max() <= 1e-5
    # ... and back: our state dict loads strictly into theirs.
    fresh = peer_cls(extra=peer_extra(arch, peer))
    fresh.load_state_dict(ours.state_dict(), strict=True)


def test_pose_v1_matches_mmpose():
    theirs = quiet(PoseHRNet(extra=peer_extra('w32', 'mmpose', multiscale_output=False)))
    randomize_norm_stats(theirs)
    ours = HRNet('w32', upsample_mode='nearest', multiscale_output=False)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 192)
    ours.eval(), theirs.eval()  # (mmpose's train() returns None, so no chaining)
    with torch.no_grad():
        (a,), (b,) = ours(x), theirs(x)
    assert (a - b).abs().max() <= 1e-5


def test_mmseg_extra_dict_builds_the_same_network():
    # A user's mmseg config keeps its full ``extra``: only the type changes.
    extra = peer_extra('w18_small_v2', 'mmseg')
    ours, theirs = HRNet(arch=None, extra=extra), SegHRNet(extra=extra)
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_pyramid_neck_equals_hrfpn():
    chs = [18, 36, 72, 144]
    theirs = quiet(HRFPN(in_channels=chs, out_channels=64))
    ours = HRNetPyramidNeck(chs, 64)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = [torch.randn(2, c, 64 >> i, 96 >> i) for i, c in enumerate(chs)]
    with torch.no_grad():
        for a, b in zip(ours(feats), theirs(feats)):
            assert a.shape == b.shape and (a - b).abs().max() <= 1e-5


def test_fcn_hrnet_segmentor_equals_mmseg(tmp_path):
    """mmseg's stock FCN-HRNetV2-W18 and ours (backbone + concat neck + FCNHead in_index=0)
    share every key, so an mmseg checkpoint loads into our config and predicts the same."""
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    stock = get_config('mmseg::hrnet/fcn_hr18_4xb2-80k_cityscapes-512x1024.py')
    mine = Config.fromfile(osp.join(REPO, 'configs', 'hrnet_w18_cityscapes.py'))
    for cfg in (stock, mine):
        cfg.model.pretrained = None
        cfg.norm_cfg = dict(type='BN')
        cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')
    theirs, ours = quiet(MODELS.build(stock.model)), MODELS.build(mine.model)
    randomize_norm_stats(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 256)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a, b = ours._forward(x), theirs._forward(x)
    assert a.shape == b.shape == (1, 19, 32, 64)
    # Our config runs channels-last (other conv kernels): equal up to float32 rounding,
    # relative to the logits' scale (random weights make them large).
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()
