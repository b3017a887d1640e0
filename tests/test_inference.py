"""The inference path keeps the function (folding only where provably safe, bf16 judged on the
task), never changes the model it is given and cannot be trained by mistake; the backbone
traces without graph breaks."""
import copy

import pytest
import torch

from hrnet_mm import HRNet, HRNetConcatNeck, fold_batch_norms, prepare_for_inference

from .conftest import quiet, randomize_norms


@pytest.mark.parametrize('arch', ['w18_small', 'w18'])
def test_folded_channels_last_model_gives_the_same_outputs(arch):
    model = torch.nn.Sequential(quiet(HRNet(arch)), HRNetConcatNeck(
        [18 * 2 ** i if arch == 'w18' else 16 * 2 ** i for i in range(4)], out_channels=64))
    randomize_norms(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    # the model it was given is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        (a,), (b,) = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    # Folding changes float32 rounding only: within 1e-4 of the output's own scale
    # (random weights give activations in the tens).
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())


def test_backbone_traces_without_graph_breaks():
    import torch._dynamo
    torch._dynamo.reset()
    net = HRNet('w18_small').eval()
    explanation = torch._dynamo.explain(net)(torch.rand(1, 3, 64, 96))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_benchmark_reports_every_system(tmp_path):
    """tools/benchmark.py as documented, at a small size: every system timed side by side,
    with its start-up time and argmax agreement; the training rows with peak memory."""
    import json
    import os.path as osp
    import sys

    from .conftest import REPO, run_cli
    out = tmp_path / 'bench.json'
    log = run_cli([sys.executable, osp.join(REPO, 'tools', 'benchmark.py'),
                   '--config', osp.join(REPO, 'configs', 'demo_street_hrnet_w18_small.py'),
                   '--size', '64', '128', '--rounds', '2', '--no-compile', '--train',
                   '--train-config', osp.join(REPO, 'configs', 'demo_street_hrnet_w18_small.py'),
                   '--train-size', '64', '128', '--train-rounds', '1', '--profile',
                   '--json', str(out)])
    assert 'CPU: ' in log
    res = json.loads(out.read_text())
    assert res['cpu']['model'] and isinstance(res['cpu']['flags'], list)
    names = {r['name'] for r in res['systems']}
    assert {'mmseg', 'mmseg+fused', 'hrnet_mm', 'onnxruntime', 'openvino'} <= names
    assert res['systems'][0]['name'] == 'mmseg' and res['systems'][0]['argmax_agreement'] == 1
    for r in res['systems']:
        assert set(r) >= {'name', 'precision', 'compiled', 'median_s', 'min_s', 'startup_s',
                          'argmax_agreement'}
        assert 0 < r['min_s'] <= r['median_s'] and r['startup_s'] > 0
        assert 0 <= r['argmax_agreement'] <= 1
        if r['precision'] == 'fp32':  # the same network: all but near-ties of random logits
            assert r['argmax_agreement'] > 0.97, r
    train = {(r['name'], r['precision'], r['with_cp']): r for r in res['train']}
    assert {('mmseg', 'fp32', False), ('hrnet_mm', 'fp32', False), ('mmseg', 'fp32', True),
            ('hrnet_mm', 'fp32', True)} <= set(train)
    assert all(r['peak_mib'] > 0 and r['median_s'] > 0 for r in res['train'])
    # --profile: where the time of our eager rows goes, the largest operators first
    for prof in list(res['profiles'].values()) + list(res['train_profiles'].values()):
        shares = [op['share'] for op in prof['ops']]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert 'hrnet_mm fp32' in res['profiles'] and 'training step, hrnet_mm fp32' in \
        res['train_profiles']


def test_folding_leaves_norms_that_run_before_their_conv():
    """mmcv's ConvModule can normalise first: that norm must not be folded into the conv."""
    from mmcv.cnn import ConvModule
    model = torch.nn.Sequential(
        ConvModule(8, 8, 3, padding=1, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act')),
        ConvModule(8, 8, 3, padding=1, norm_cfg=dict(type='BN')))
    randomize_norms(model)
    model.eval()
    fast = prepare_for_inference(model)
    assert isinstance(fast[0].bn, torch.nn.BatchNorm2d)
    assert isinstance(fast[1].bn, torch.nn.Identity)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        a, b = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())


def test_folding_leaves_a_norm_after_an_activation():
    """conv -> act -> norm (ConvModule order, or a module whose registration order says
    nothing about its forward): the norm is not adjacent to the conv and stays."""
    from mmcv.cnn import ConvModule

    class Registered(torch.nn.Module):  # conv and bn registered in a row, act between them
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(torch.relu(self.conv(x)))
    model = torch.nn.Sequential(
        ConvModule(8, 8, 3, padding=1, norm_cfg=dict(type='BN'), order=('conv', 'act', 'norm')),
        Registered())
    randomize_norms(model)
    model.eval()
    fast = fold_batch_norms(copy.deepcopy(model))
    assert isinstance(fast[0].bn, torch.nn.BatchNorm2d) and isinstance(fast[1].bn,
                                                                        torch.nn.BatchNorm2d)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), fast(x))


@pytest.mark.slow
def test_compiled_model_recompiles_once_for_new_sizes():
    """The shape strategy: the first size compiles, the second recompiles with dynamic height
    and width, and later sizes (odd ones too) reuse that graph."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    net = HRNet('w18_small', compat=None).eval()
    fast = prepare_for_inference(net, compile=True)
    graphs = []
    with torch.no_grad():
        for h, w in ((64, 96), (96, 128), (97, 131), (128, 160)):
            x = torch.randn(1, 3, h, w)
            assert (fast(x)[0] - net(x)[0]).abs().max() < 1e-3
            graphs.append(counters['stats']['unique_graphs'])
    assert graphs == [1, 2, 2, 2], graphs


def test_prepared_model_refuses_training():
    fast = prepare_for_inference(HRNet('w18_small').eval())
    assert fast.eval() is fast
    with pytest.raises(RuntimeError, match='cannot be trained'):
        fast.train()


def test_bf16_keeps_every_decision_that_is_not_a_near_tie():
    """bf16 judged on the task: every pixel whose float32 class wins by more than bf16's
    rounding keeps its class. (An untrained network's logits are mostly near-ties, so plain
    argmax agreement on random weights says little; on the trained demo checkpoint it is
    measured in docs/benchmarks.md, and mim test's mIoU in the README.)"""
    from .test_parity import build_stock
    torch.manual_seed(0)
    model = randomize_norms(quiet(build_stock(
        'mmseg', 'hrnet/fcn_hr18s_4xb2-80k_cityscapes-512x1024.py', swap=True))).eval()
    fast = prepare_for_inference(model, precision='bf16')
    assert fast.inference_precision == 'bf16'
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        a, b = model._forward(x), fast._forward(x)
    assert b.dtype == torch.float32  # the head hands float32 to the post-processing
    top2 = a.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    clear = margin > 0.05 * a.abs().amax(dim=1)  # wins by more than 5% of the logit scale
    assert clear.float().mean() > 0.2  # there are such pixels to judge
    agree = (a.argmax(1) == b.argmax(1))[clear].float().mean().item()
    assert agree >= 0.999, agree


def test_auto_precision_says_what_it_chose():
    from hrnet_mm.inference import native_bf16, resolve_precision
    chosen, why = resolve_precision('auto', 'cpu')
    assert chosen == ('bf16' if native_bf16(torch.device('cpu')) else 'fp32')
    assert why.startswith('auto:')
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision('fp16x', 'cpu')


@pytest.mark.slow
def test_profile_convs_accounts_for_every_conv():
    import os.path as osp
    import re
    import sys

    from .conftest import REPO, run_cli
    log = run_cli([sys.executable, osp.join(REPO, 'tools', 'profile_convs.py'), '--arch',
                   'w18_small', '--size', '64', '128', '--repeats', '1'])
    total = float(re.search(r'forward ([0-9.]+) s', log).group(1))
    kinds = dict(re.findall(r'(3x3 stride 1|3x3 stride 2|1x1): ([0-9.]+) s', log))
    assert set(kinds) == {'3x3 stride 1', '3x3 stride 2', '1x1'}
    assert total > 0 and all(float(v) >= 0 for v in kinds.values())
    # Every conv of the network is listed once per shape: the call counts add up.
    model = HRNet('w18_small')
    calls = sum(int(m.group(1)) for m in re.finditer(r'x\s*\d+\s+(\d+)\s+[0-9.]+\s+\d+$', log,
                                                      re.M))
    assert calls == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
