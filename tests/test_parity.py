"""Drop-in parity, decided by the toolboxes' real modules with the same weights.

mmseg's, mmpose's and mmdet's HRNet and mmdet's HRFPN against hrnet_mm, at a multiple of 32 and
at an odd size, in eval and train mode: outputs, the input's and every parameter's gradient, and
every parameter and buffer after one optimizer step must be identical (``torch.equal``).
Where a toolbox stops (mmpose and mmdet at sizes that are not multiples of 32), the test checks
that it does and that hrnet_mm runs. A small stage table keeps it fast: none of these properties
depends on width.
"""
import copy
import os.path as osp

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from mmdet.models.backbones import HRNet as DetHRNet
from mmdet.models.necks import HRFPN
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmpose.models.backbones import HRNet as PoseHRNet
from mmseg.models.backbones import HRNet as SegHRNet

from hrnet_mm import HRNet, HRNetPyramidNeck
from hrnet_mm.models.blocks import ResidualBlock

from .conftest import REPO, TINY_EXTRA, quiet, randomize_norms

PEERS = {'mmseg': SegHRNet, 'mmpose': PoseHRNet, 'mmdet': DetHRNet}
SIZES = [(64, 96), (97, 131)]
ODD = (97, 131)


def peer_pair(peer, peer_kw=None, our_kw=None, extra=None):
    """(ours, theirs): the toolbox's HRNet, randomised, and ours holding its weights."""
    extra = copy.deepcopy(TINY_EXTRA if extra is None else extra)
    theirs = randomize_norms(quiet(PEERS[peer](extra=copy.deepcopy(extra), **(peer_kw or {}))))
    ours = HRNet(arch=None, extra=extra, compat=peer, **(our_kw or {}))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def weighted_sum(outs):
    """A loss whose gradient differs at every output position."""
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).mean() for o in outs)


def step(model, x, train, forward=None):
    """One SGD step; returns what must agree: outputs, gradients, state after the step."""
    model.train(train)
    x = x.clone().requires_grad_()
    outs = (forward or model)(x)
    outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
    weighted_sum(outs).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if params:  # (frozen_stages=4 freezes every parameter)
        torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4).step()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return dict(outs=[o.detach() for o in outs], x_grad=x.grad, grads=grads, state=state)


def assert_identical(a, b):
    assert len(a['outs']) == len(b['outs'])
    for u, v in zip(a['outs'], b['outs']):
        assert u.shape == v.shape and torch.equal(u, v), (u - v).abs().max()
    assert torch.equal(a['x_grad'], b['x_grad'])
    assert a['grads'].keys() == b['grads'].keys()
    bad = [k for k in a['grads'] if not torch.equal(a['grads'][k], b['grads'][k])]
    assert not bad, f'gradients differ: {bad[:5]}'
    assert a['state'].keys() == b['state'].keys()
    bad = [k for k in a['state'] if not torch.equal(a['state'][k], b['state'][k])]
    assert not bad, f'parameters or buffers differ after the step: {bad[:5]}'


def stream_sizes(h, w, n):
    sizes = []
    for _ in range(2):
        h, w = (h + 1) // 2, (w + 1) // 2
    for _ in range(n):
        sizes.append((h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return sizes


@pytest.mark.parametrize('with_cp', [False, True], ids=['plain', 'with_cp'])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('peer', list(PEERS))
def test_backbone_identical_to_peer(peer, size, train, with_cp):
    ours, theirs = peer_pair(peer, dict(with_cp=with_cp), dict(with_cp=with_cp))
    x = torch.randn(2, 3, *size)
    if peer != 'mmseg' and size == ODD:
        # mmpose and mmdet upsample by 2**k only and cannot sum streams of odd sizes; hrnet_mm
        # resizes to the target's size there, as mmseg does.
        theirs.train(train)  # (their train() returns None)
        with pytest.raises(RuntimeError, match='size of tensor'):
            theirs(x)
        outs = ours.train(train)(x)
        assert [tuple(o.shape[-2:]) for o in outs] == stream_sizes(*size, 4)[:len(outs)]
        return
    assert_identical(step(ours, x, train), step(theirs, x, train))


@pytest.mark.parametrize('norm_eval', [False, True], ids=['train_norms', 'norm_eval'])
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 4])
@pytest.mark.parametrize('peer', ['mmseg', 'mmpose'])
def test_frozen_stages_and_norm_eval_identical_to_peer(peer, frozen_stages, norm_eval):
    kw = dict(frozen_stages=frozen_stages, norm_eval=norm_eval)
    ours, theirs = peer_pair(peer, kw, kw)
    x = torch.randn(2, 3, 64, 96)
    assert_identical(step(ours, x, True), step(theirs, x, True))

    def flags(model):
        return ({n for n, p in model.named_parameters() if p.requires_grad},
                {n: m.training for n, m in model.named_modules() if isinstance(m, _BatchNorm)})
    assert flags(ours) == flags(theirs)


@pytest.mark.parametrize('norm_eval', [None, False, True], ids=['default', 'off', 'on'])
def test_mmdet_norm_eval_identical(norm_eval):
    """mmdet's HRNet defaults to norm_eval=True (and has no frozen_stages)."""
    kw = {} if norm_eval is None else dict(norm_eval=norm_eval)
    ours, theirs = peer_pair('mmdet', kw, kw)
    assert ours.norm_eval == theirs.norm_eval == (True if norm_eval is None else norm_eval)
    x = torch.randn(2, 3, 64, 96)
    assert_identical(step(ours, x, True), step(theirs, x, True))


@pytest.mark.parametrize('variant', ['default', 'multiscale', 'bilinear'])
def test_mmpose_extra_keys_identical(variant):
    """mmpose reads stage4['multiscale_output'] (default False) and extra['upsample']."""
    extra = copy.deepcopy(TINY_EXTRA)
    if variant == 'multiscale':
        extra['stage4']['multiscale_output'] = True
    if variant == 'bilinear':
        extra['upsample'] = dict(mode='bilinear', align_corners=False)
    ours, theirs = peer_pair('mmpose', extra=extra)
    x = torch.randn(2, 3, 64, 96)
    a, b = step(ours, x, True), step(theirs, x, True)
    assert len(a['outs']) == (4 if variant == 'multiscale' else 1)
    assert_identical(a, b)


@pytest.mark.parametrize('kw', [dict(), dict(pooling_type='MAX'), dict(stride=2),
                                dict(with_cp=True)], ids=['avg', 'max', 'stride2', 'with_cp'])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('size', [(200, 336), (32, 48)], ids=['200x336', '32x48'])
def test_pyramid_neck_identical_to_hrfpn(size, train, kw):
    """(200, 336) is the 1/4 map of an 800x1344 COCO image: its top level is 12x21 (floor)."""
    chs = [4, 8, 16, 32]
    theirs = quiet(HRFPN(in_channels=chs, out_channels=8, **kw))
    ours = HRNetPyramidNeck(chs, 8, **kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = [torch.randn(2, c, size[0] >> i, size[1] >> i) for i, c in enumerate(chs)]

    def run(neck):
        neck.train(train)
        xs = [f.clone().requires_grad_() for f in feats]
        outs = neck(xs)
        weighted_sum(outs).backward()
        grads = {n: p.grad.clone() for n, p in neck.named_parameters()}
        return outs, [x.grad for x in xs], grads

    (oa, xa, ga), (ob, xb, gb) = run(ours), run(theirs)
    assert [tuple(o.shape[-2:]) for o in oa] == [tuple(o.shape[-2:]) for o in ob]
    if size == (200, 336) and 'stride' not in kw:
        assert tuple(oa[-1].shape[-2:]) == (12, 21)
    assert all(torch.equal(u, v) for u, v in zip(oa, ob))
    assert all(torch.equal(u, v) for u, v in zip(xa, xb))
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def test_pyramid_neck_ceil_mode_keeps_the_border():
    neck = HRNetPyramidNeck([4, 8, 16, 32], 8, ceil_mode=True)
    feats = [torch.randn(1, c, 200 >> i, 336 >> i) for i, c in enumerate([4, 8, 16, 32])]
    assert tuple(neck(feats)[-1].shape[-2:]) == (13, 21)


# --- each toolbox's stock config, with only the backbone (and neck) type swapped -------------

def build_stock(scope, path, swap):
    root = osp.dirname(__import__(scope).__file__)
    cfg = Config.fromfile(osp.join(root, '.mim', 'configs', path))
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.pop('init_cfg', None)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    if swap:
        cfg.custom_imports = dict(imports=['hrnet_mm'])
        cfg.model.backbone.type = 'hrnet_mm.HRNet'
        if cfg.model.get('neck', {}).get('type') == 'HRFPN':
            cfg.model.neck.type = 'hrnet_mm.HRNetPyramidNeck'
    # The Runner reverts SyncBN when it does not run distributed; so do we.
    with DefaultScope.overwrite_default_scope(scope):
        return revert_sync_batchnorm(registry.build(cfg.model))


STOCK = [
    ('mmseg', 'hrnet/fcn_hr18s_4xb2-80k_cityscapes-512x1024.py', ODD),
    ('mmseg', 'hrnet/fcn_hr18_4xb2-80k_cityscapes-512x1024.py', ODD),
    ('mmseg', 'hrnet/fcn_hr48_4xb2-80k_cityscapes-512x1024.py', ODD),
    ('mmseg', 'hrnet/fcn_hr18_4xb4-80k_ade20k-512x512.py', (128, 171)),  # keep-ratio resize
    # (the recipe's 256x192 halved: every stream a whole size, as at 256x192)
    ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py',
     (128, 96)),
    # a multiple of 32 as mmdet pads to, odd at 1/32 (5x7), and the neck's 1/64 level pooled
    # with a remainder both ways (40x56 at 1/4, pooled by 16: 2x3)
    ('mmdet', 'hrnet/faster-rcnn_hrnetv2p-w32-1x_coco.py', (160, 224)),
]


@pytest.mark.parametrize('scope, path, size', STOCK,
                         ids=[osp.basename(p).split('_')[0] + '-' + osp.basename(p).split('_')[1]
                              for _, p, _ in STOCK])
@pytest.mark.slow
def test_stock_config_with_type_swapped_is_identical(scope, path, size):
    theirs = randomize_norms(quiet(build_stock(scope, path, swap=False)))
    ours = build_stock(scope, path, swap=True)
    assert type(ours.backbone).__module__.startswith('hrnet_mm')
    ours.load_state_dict(theirs.state_dict(), strict=True)
    if scope == 'mmdet':
        assert type(ours.neck).__module__.startswith('hrnet_mm')
        forward = 'extract_feat'
    else:
        forward = '_forward'
    x = torch.randn(2, 3, *size)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        for u, v in zip(getattr(ours, forward)(x[:1]), getattr(theirs, forward)(x[:1])):
            assert torch.equal(u, v)
    a = step(ours, x, True, getattr(ours, forward))
    b = step(theirs, x, True, getattr(theirs, forward))
    assert_identical(a, b)


# --- where hrnet_mm intentionally differs ----------------------------------------------------

@pytest.mark.parametrize('peer', ['mmseg', 'mmdet'])
def test_zero_init_residual_works_where_the_peer_flag_does_nothing(peer):
    ours = quiet(HRNet(arch=None, extra=TINY_EXTRA, compat=peer, zero_init_residual=True))
    theirs = quiet(PEERS[peer](extra=copy.deepcopy(TINY_EXTRA), zero_init_residual=True))
    last_norms = [m.last_norm for m in ours.modules() if isinstance(m, ResidualBlock)]
    assert last_norms and all(not n.weight.any() and not n.bias.any() for n in last_norms)
    assert all(m.weight.all() for m in theirs.modules() if isinstance(m, _BatchNorm))


@pytest.mark.parametrize('peer', list(PEERS))
def test_train_returns_the_module_where_the_peer_returns_none(peer):
    ours, theirs = peer_pair(peer)
    assert ours.train() is ours and ours.eval() is ours
    assert theirs.train() is None


def test_exact_upsample_resizes_once():
    """Opt-in single resize: the same as the default at multiples of 32, not at odd sizes."""
    exact = HRNet(arch=None, extra=TINY_EXTRA, compat='mmseg', exact_upsample=True).eval()
    default = HRNet(arch=None, extra=TINY_EXTRA, compat='mmseg').eval()
    default.load_state_dict(exact.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 96)
        assert all(torch.equal(u, v) for u, v in zip(exact(x), default(x)))
        x = torch.randn(1, 3, *ODD)
        assert not torch.equal(exact(x)[0], default(x)[0])


@pytest.mark.parametrize('ours_cfg, stock', [
    ('hrnet_w18_small_cityscapes.py', 'hrnet/fcn_hr18s_4xb2-80k_cityscapes-512x1024.py'),
    ('hrnet_w18_cityscapes.py', 'hrnet/fcn_hr18_4xb2-80k_cityscapes-512x1024.py'),
    ('hrnet_w48_cityscapes.py', 'hrnet/fcn_hr48_4xb2-80k_cityscapes-512x1024.py'),
])
def test_shipped_seg_config_takes_mmseg_checkpoints(ours_cfg, stock):
    """Our configs keep mmseg's keys: an mmseg FCN-HRNet checkpoint loads strictly and predicts
    the same at an odd size. They run channels-last (other conv kernels), so the logits agree
    within float32 rounding relative to their scale rather than bit for bit."""
    from mmseg.registry import MODELS
    theirs = randomize_norms(quiet(build_stock('mmseg', stock, swap=False)))
    cfg = Config.fromfile(osp.join(REPO, 'configs', ours_cfg))
    cfg.model.pretrained = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        ours = revert_sync_batchnorm(MODELS.build(cfg.model))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, *ODD)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a, b = ours._forward(x), theirs._forward(x)
    assert a.shape == b.shape
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()


@pytest.mark.parametrize('peer', list(PEERS))
def test_kept_stream_that_changes_width_is_fed_from_itself(peer):
    """The toolboxes feed a kept stream's width-changing transition from the lowest stream
    (and fail on such tables); hrnet_mm feeds it from its own stream."""
    extra = copy.deepcopy(TINY_EXTRA)
    extra['stage3']['num_channels'] = (6, 8, 16)
    extra['stage4']['num_channels'] = (6, 8, 16, 32)
    theirs = PEERS[peer](extra=copy.deepcopy(extra))
    theirs.eval()
    with pytest.raises(RuntimeError, match='to have 4 channels, but got 8 channels'):
        theirs(torch.randn(1, 3, 64, 96))
    ours = HRNet(arch=None, extra=extra, compat=peer).eval()
    outs = ours(torch.randn(1, 3, 64, 96))
    assert outs[0].shape == (1, 6, 16, 24)
