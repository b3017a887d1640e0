"""The wide-view training batch norm for channels-last CPU tensors (hrnet_mm.models.norms)
against torch's own batch norm: outputs, gradients and every buffer, and the cases where it
must step aside."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.model import revert_sync_batchnorm

from hrnet_mm import HRNet
from hrnet_mm.models import norms

from .conftest import ONE_UNIT_PER_STAGE, quiet, randomize_norms


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


def make_norm(c, seed=0, **kw):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(c, **kw)
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return bn


def batch(c, h=64, w=64, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, h, w, generator=g) * 2 + 3
    dy = torch.randn(2, c, h, w, generator=g)
    return channels_last(x.to(dtype)), channels_last(dy.to(dtype))


def step(norm, forward, x, dy):
    x = x.clone().requires_grad_()
    y = forward(norm, x)
    y.backward(dy)
    return y, x.grad


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize('c', [18, 36, 30])
@pytest.mark.parametrize('kw', [dict(), dict(momentum=None), dict(affine=False),
                                dict(track_running_stats=False)],
                         ids=['momentum', 'cumulative', 'no-affine', 'no-running-stats'])
def test_equals_torch_batch_norm_in_float32(c, kw):
    ref, ours = make_norm(c, **kw), make_norm(c, **kw)
    for seed in range(3):  # three steps: running statistics and num_batches_tracked evolve
        x, dy = batch(c, seed=seed)
        assert norms.applies(ours, x)
        y0, g0 = step(ref, lambda m, t: m(t), x, dy)
        y1, g1 = step(ours, norms.forward_with_wide_norms, x, dy)
        assert y1.is_contiguous(memory_format=torch.channels_last)
        assert g1.is_contiguous(memory_format=torch.channels_last)
        assert rel(y1, y0) < 1e-5 and rel(g1, g0) < 1e-5
    for (name, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert rel(b.grad, a.grad) < 1e-5, name
    for (name, a), (_, b) in zip(ref.named_buffers(), ours.named_buffers()):
        if a.is_floating_point():
            assert rel(b, a) < 1e-5, name
        else:
            assert torch.equal(a, b), name


def test_gradients_are_the_derivative():
    """gradcheck of the autograd function itself, in float64 (any size: no threshold there)."""
    x = channels_last(torch.randn(2, 18, 4, 8, dtype=torch.float64)).requires_grad_()
    w = torch.rand(18, dtype=torch.float64, requires_grad=True)
    b = torch.rand(18, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: norms._WideBatchNorm.apply(x, w, b, None, None, 0.1, 1e-5)  # noqa
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize('c', [18, 36])
def test_bfloat16_error_is_that_of_torch_batch_norm(c):
    """bfloat16 input, float32 parameters (as under autocast): both compared with float64."""
    x, dy = batch(c, dtype=torch.bfloat16)
    norm = make_norm(c)
    exact = copy.deepcopy(norm).double()
    y_ref, g_ref = step(exact, lambda m, t: m(t), x.double(), dy.double())
    errors = {}
    for name, forward in (('torch', lambda m, t: m(t)), ('wide', norms.forward_with_wide_norms)):
        m = copy.deepcopy(norm)
        y, g = step(m, forward, x, dy)
        assert y.dtype == g.dtype == torch.bfloat16
        assert m.weight.grad.dtype == torch.float32
        errors[name] = [(y.double() - y_ref).abs().mean() / y_ref.abs().mean(),
                        (g.double() - g_ref).abs().mean() / g_ref.abs().mean(),
                        rel(m.weight.grad, exact.weight.grad),
                        rel(m.running_var, exact.running_var)]
    # The wide view rounds the input gradient twice (a * dy + d, then + b * x): at most twice
    # torch's error, which rounds once; the rest is float32 arithmetic.
    torch_err, wide_err = errors['torch'], errors['wide']
    assert wide_err[0] <= 2 * torch_err[0] + 1e-6
    assert wide_err[1] <= 2 * torch_err[1]
    assert wide_err[2] < 1e-4 and wide_err[3] < 1e-4


def test_steps_aside_where_it_does_not_apply():
    c = 18
    x, _ = batch(c)
    norm = make_norm(c)
    assert norms.applies(norm, x)
    assert not norms.applies(norm.eval(), x)
    norm.train()
    assert not norms.applies(norm, x.contiguous())                 # not channels-last
    assert not norms.applies(make_norm(32), batch(32)[0])          # full vectors already
    assert not norms.applies(norm, batch(c, 8, 8)[0])              # too small to pay off
    assert not norms.applies(norm, x.double())
    assert not norms.applies(nn.GroupNorm(2, c), x)
    with pytest.raises(ValueError, match='expected 2D or 3D input'):  # torch's own error
        norms.forward_with_wide_norms(nn.BatchNorm1d(c), x)

    class Custom(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    assert not norms.applies(Custom(c), x)
    assert norms.applies(nn.SyncBatchNorm(c), x)  # not distributed: a plain batch norm
    # what mmengine's Runner makes of a SyncBN config when it does not train distributed
    assert norms.applies(revert_sync_batchnorm(nn.SyncBatchNorm(c)), x)

    seen = []
    norm.register_forward_hook(lambda m, i, o: seen.append(o))
    assert not norms.applies(norm, x)
    out = norms.forward_with_wide_norms(norm, x)
    assert len(seen) == 1 and seen[0] is out  # hooks still run: the module ran itself

    seq = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), make_norm(c))
    seq.register_forward_pre_hook(lambda m, i: seen.append('pre'))
    norms.forward_with_wide_norms(seq, x)
    assert seen[-1] == 'pre'


def graph_names(t):
    names, todo, done = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in done:
            continue
        done.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def train_step(net, x):
    outs = net.train()(x.to(next(net.parameters()).dtype))
    sum(o.square().mean() for o in outs).backward()
    flat = lambda ts: torch.cat([t.detach().double().flatten() for t in ts])  # noqa
    return outs, dict(out=flat(outs), grad=flat(p.grad for p in net.parameters()),
                      buffers=flat(b for b in net.buffers() if b.is_floating_point()))


@pytest.mark.parametrize('with_cp', [False, True])
def test_channels_last_w18_trains_as_exactly_as_torch_norms(with_cp, monkeypatch):
    """HRNet-W18 (one exchange unit per stage: every stream and kind of norm), channels-last,
    one training step: outputs, every gradient and every buffer as far from the float64 model
    as with torch's own norms. At 2x3x128x128 and a threshold of 512 pixels, the 18- and
    36-channel streams (2048 and 512 pixels a channel) take the wide norms (the default
    threshold, 8192, is where `tools/benchmark.py --norms` measured the wide view start to
    pay)."""
    torch.manual_seed(0)
    w18 = dict(compat=None, with_cp=with_cp, extra=ONE_UNIT_PER_STAGE)
    plain = randomize_norms(quiet(HRNet('w18', **w18)))
    state = copy.deepcopy(plain.state_dict())
    x = torch.rand(2, 3, 128, 128)
    _, exact = train_step(plain.double(), x)
    errors = {}
    for name, min_pixels in (('torch', 10**12), ('wide', 512)):
        monkeypatch.setattr(norms, 'MIN_PIXELS', min_pixels)
        fast = HRNet('w18', channels_last=True, **w18)
        fast.load_state_dict(state)
        outs, got = train_step(fast, x)
        assert ('_WideBatchNormBackward' in graph_names(outs[0])) == (name == 'wide')
        assert all(torch.equal(a, b) for a, b in zip(fast.buffers(), plain.buffers())
                   if not a.is_floating_point())  # num_batches_tracked
        errors[name] = {k: ((got[k] - exact[k]).norm() / exact[k].norm()).item() for k in got}
    for k, err in errors['wide'].items():
        assert err <= 1.5 * errors['torch'][k] + 1e-7, (k, errors)
