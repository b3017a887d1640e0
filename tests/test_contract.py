"""One contract over every preset and every representation: backbone (all streams), V2
concat neck, V2p pyramid neck. Shapes follow the declared channels and strides; gradients reach
every parameter; odd sizes work in both upsample modes."""
import math

import pytest
import torch

from hrnet_mm import ARCH_ZOO, HRNet, HRNetConcatNeck, HRNetPyramidNeck

from .conftest import averaging_weights, quiet

PRESETS = list(ARCH_ZOO)
KINDS = ['backbone', 'concat', 'pyramid']


def attach(backbone, kind):
    """``(model, declared)``: the backbone alone or followed by a neck read off its channels."""
    if kind == 'backbone':
        return backbone, backbone
    neck_cls = HRNetConcatNeck if kind == 'concat' else HRNetPyramidNeck
    neck_kw = dict(upsample_mode=backbone.upsample_mode)
    if kind == 'pyramid':
        neck_kw['out_channels'] = 32
    neck = quiet(neck_cls(backbone.out_channels, **neck_kw))
    return torch.nn.Sequential(backbone, neck), neck


def build(arch, kind, **kw):
    return attach(quiet(HRNet(arch, **kw)), kind)


def stream_size(n, stride):
    """Rows (or columns) of a stride-``stride`` stream: stride-2 convs with padding 1 round up."""
    for _ in range(int(math.log2(stride))):
        n = math.ceil(n / 2)
    return n


def expected_sizes(kind, declared, h, w):
    if kind != 'pyramid':
        return [(stream_size(h, s), stream_size(w, s)) for s in declared.out_strides]
    h0, w0 = stream_size(h, 4), stream_size(w, 4)
    # Pyramid levels are pooled from the 1/4 map with floor, as mmdet's HRFPN.
    return [(h0 // (s // 4), w0 // (s // 4)) for s in declared.out_strides]


def necks(backbone):
    """``(kind, declared, head)`` for each representation: ``head`` maps the backbone's
    outputs to the representation's (the backbone runs once for all three)."""
    for kind in KINDS:
        model, declared = attach(backbone, kind)
        yield kind, declared, (lambda outs: outs) if kind == 'backbone' else model[1]


@pytest.mark.parametrize('arch', PRESETS)
def test_shapes_follow_declared_channels_and_strides(arch):
    """Each representation (one backbone per upsample mode, each neck on it): the declared
    channels, the stream sizes of the stride-2 convs, finite values, at an even size and an
    odd one (65x67: rows odd in every stream, columns even at 1/2 then odd, 5x5 at 1/32; the
    pyramid's fifth level 1x1)."""
    for mode in ('bilinear', 'nearest'):
        with torch.device('meta'):
            backbone = HRNet(arch, upsample_mode=mode)
        backbone = averaging_weights(backbone).eval()
        for h, w in ((64, 96), (65, 67)):
            with torch.no_grad():
                streams = backbone(torch.rand(1, 3, h, w))
            for kind, declared, head in necks(backbone):
                with torch.no_grad():
                    outs = head(streams)
                assert isinstance(outs, tuple)
                assert [o.shape[1] for o in outs] == list(declared.out_channels), kind
                assert [tuple(o.shape[-2:]) for o in outs] == expected_sizes(kind, declared, h,
                                                                             w), kind
                assert all(torch.isfinite(o).all() for o in outs), kind


@pytest.mark.parametrize('arch', PRESETS)
def test_gradients_reach_every_parameter(arch):
    """The backbone's loss reaches every parameter of the backbone; each neck's loss alone
    reaches every parameter of its neck and every channel of every stream (so, through the
    backbone, its parameters too: one backbone backward, not one per representation). Would
    catch: a parameter no output depends on, a neck that drops a stream or a channel."""
    backbone = HRNet(arch).train()
    streams = backbone(torch.rand(2, 3, 64, 64))
    for kind, _, head in necks(backbone):
        if kind == 'backbone':
            params = dict(backbone.named_parameters())
            sum(o.square().mean() for o in streams).backward(retain_graph=True)
            reached = {n: p.grad is not None and bool(p.grad.any()) for n, p in params.items()}
        else:
            head.train()
            params = dict(head.named_parameters())
            found = torch.autograd.grad(sum(o.square().mean() for o in head(streams)),
                                        [*streams, *params.values()], allow_unused=True,
                                        retain_graph=True)
            reached = {n: g is not None and bool(g.any())
                       for n, g in zip(params, found[len(streams):])}
            for i, g in enumerate(found[:len(streams)]):
                per_channel = torch.zeros(streams[i].shape[1]) if g is None else g.abs().sum(
                    (0, 2, 3))
                reached.update({f'stream {i} channel {c}': bool(v)
                                for c, v in enumerate(per_channel)})
        missing = [n for n, ok in reached.items() if not ok]
        assert not missing, f'{kind}: no gradient reached {missing[:10]}'


@pytest.mark.parametrize('kind', KINDS)
def test_with_cp_gives_same_outputs_and_gradients(kind):
    torch.manual_seed(0)
    plain, _ = build('w18_small', kind)
    cp_model, _ = build('w18_small', kind, with_cp=True)
    cp_model.load_state_dict(plain.state_dict())
    if kind == 'pyramid':
        cp_model[1].with_cp = True
    x = torch.rand(2, 3, 64, 96)
    results = []
    for model in (plain, cp_model):
        model.train()
        outs = model(x.clone().requires_grad_())
        sum(o.square().mean() for o in outs).backward()
        results.append((outs, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (o1, g1), (o2, g2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 3, 4])
def test_frozen_stages_stay_frozen(frozen):
    net = quiet(HRNet('w18_small', frozen_stages=frozen))
    assert net.train() is net and net.eval() is net  # train()/eval() return the module
    net.train()
    frozen_mods = [m for i in range(frozen + 1) for m in net._stage_modules(i)]
    frozen_params = {id(p) for m in frozen_mods for p in m.parameters()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    sum(o.mean() for o in net(x)).backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    for n, p in net.named_parameters():
        if id(p) in frozen_params:
            assert not p.requires_grad and p.grad is None, n
            assert torch.equal(p, before[n]), n
        else:
            assert p.requires_grad, n
    for m in frozen_mods:
        for sub in m.modules():
            if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                assert not sub.training
    trainable_norms = [m for m in net.modules()
                       if isinstance(m, torch.nn.BatchNorm2d)
                       and not any(m is s for f in frozen_mods for s in f.modules())]
    assert all(m.training for m in trainable_norms)
    assert len(frozen_params) == 0 if frozen == -1 else len(frozen_params) > 0


def test_norm_eval_keeps_norms_in_eval_while_training():
    net = HRNet('w18_small', norm_eval=True).train()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert net.training


def test_zero_init_residual_zeroes_each_last_norm():
    from hrnet_mm.models.blocks import ResidualBlock
    net = quiet(HRNet('w18_small', zero_init_residual=True))
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 1 + 2 * 2 + 2 * 3 + 2 * 4  # stage 1..4 units of w18_small
    assert all(b.last_norm.weight.abs().sum() == 0 for b in blocks)
    net = quiet(HRNet('w18_small'))
    assert all(b.last_norm.weight.abs().sum() > 0 for b in net.modules()
               if isinstance(b, ResidualBlock))


def test_w48_has_mmseg_parameter_count():
    with torch.device('meta'):  # (the count is the shapes')
        net = HRNet('w48')
    assert sum(p.numel() for p in net.parameters()) == 65_325_120


def test_presets_are_deep_copied_before_overrides():
    before = repr(ARCH_ZOO['w18'])
    with torch.device('meta'):
        net = HRNet('w18', extra=dict(stage4=dict(num_modules=1)))
        assert len(net.stage4) == 1
        assert repr(ARCH_ZOO['w18']) == before
        assert len(HRNet('w18').stage4) == 3


def test_multiscale_output_false_gives_v1_only():
    net = HRNet('w18_small', multiscale_output=False).eval()
    outs = net(torch.rand(1, 3, 64, 64))
    assert len(outs) == 1 and net.out_channels == (16,) and net.out_strides == (4,)
    assert len(net.stage4[-1].fuse_layers) == 1


def test_concat_neck_in_index_gives_v1():
    net = HRNet('w18_small').eval()
    neck = HRNetConcatNeck(net.out_channels, in_index=[0])
    feats = net(torch.rand(1, 3, 64, 64))
    (out,) = neck(feats)
    assert torch.equal(out, feats[0]) and neck.out_channels == (16,)


def test_concat_neck_mixing_conv():
    neck = HRNetConcatNeck([16, 32, 64, 128], out_channels=48, kernel_size=3)
    feats = [torch.rand(2, c, 32 >> i, 48 >> i) for i, c in enumerate([16, 32, 64, 128])]
    (out,) = neck(feats)
    assert out.shape == (2, 48, 32, 48) and neck.out_channels == (48,)


def test_pyramid_neck_honours_norm_cfg():
    neck = HRNetPyramidNeck([16, 32, 64, 128], 32, norm_cfg=dict(type='BN'))
    assert isinstance(neck.reduction_conv.norm, torch.nn.BatchNorm2d)
    assert all(isinstance(c.norm, torch.nn.BatchNorm2d) for c in neck.fpn_convs)
    assert neck.reduction_conv.conv.bias is None


def test_channels_last_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = quiet(HRNet('w18_small'))
    fast = HRNet('w18_small', channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 96)
    grads = []
    for net in (plain, fast):
        outs = net.train()(x)
        sum(o.square().mean() for o in outs).backward()
        grads.append((outs, {n: p.grad for n, p in net.named_parameters()}))
    (o1, g1), (o2, g2) = grads
    assert o2[0].is_contiguous(memory_format=torch.channels_last)
    # Different conv kernels reduce in another order: equal up to float32 rounding, relative
    # to each tensor's own scale.
    for a, b in zip(o1, o2):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    for n in g1:
        assert (g1[n] - g2[n]).abs().max() <= 1e-3 * g1[n].abs().max(), n
