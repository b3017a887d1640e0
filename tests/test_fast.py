"""The inference fast path keeps the outputs; the backbone traces without graph breaks."""
import copy

import pytest
import torch

from hrnet_mm import HRNet, HRNetConcatNeck, optimize_for_inference

from .conftest import quiet, randomize_norms


@pytest.mark.parametrize('arch', ['w18_small', 'w18'])
def test_folded_channels_last_model_gives_the_same_outputs(arch):
    model = torch.nn.Sequential(quiet(HRNet(arch)), HRNetConcatNeck(
        [18 * 2 ** i if arch == 'w18' else 16 * 2 ** i for i in range(4)], out_channels=64))
    randomize_norms(model)
    model.eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
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


def test_benchmark_tool_reports_both_sides(tmp_path):
    """tools/benchmark.py as documented, at a small size: every figure present and coherent."""
    import json
    import os.path as osp
    import sys

    from .conftest import REPO, run_cli
    out = tmp_path / 'bench.json'
    log = run_cli([sys.executable, osp.join(REPO, 'tools', 'benchmark.py'), '--arch',
                   'w18_small', '--size', '64', '128', '--iters', '2', '--warmup', '1',
                   '--train-batch', '2', '--keep-freed-memory', '--json', str(out)])
    res = json.loads(out.read_text())
    assert 'inference latency' in log and 'fp32 conv peak here' in log
    assert res['keep_freed_memory'] is True and res['device'] == 'cpu'
    for key in ('infer_s_mmseg', 'infer_s_hrnet_mm', 'train_s_mmseg', 'train_s_hrnet_mm',
                'conv_peak_gflops', 'infer_s_conv_floor', 'train_peak_bytes_mmseg',
                'train_peak_bytes_hrnet_mm', 'train_peak_bytes_hrnet_mm_with_cp'):
        assert res[key] > 0, key
    assert res['speedup_infer'] == res['infer_s_mmseg'] / res['infer_s_hrnet_mm']
    assert res['speedup_train'] == res['train_s_mmseg'] / res['train_s_hrnet_mm']
    assert res['speedup_infer_ceiling'] == res['infer_s_mmseg'] / res['infer_s_conv_floor']
    # Same weights: the fast path agrees with mmseg to float32 rounding, and both are that
    # close to the float64 result.
    tol = 1e-4 * max(1.0, res['max_abs_output'])
    assert res['max_abs_diff'] <= tol
    assert res['err_fp64_mmseg'] <= tol and res['err_fp64_hrnet_mm'] <= tol
    # The count is mmengine's over our backbone: convolutions are nearly all of it.
    assert 0.95 * res['gflop'] <= res['gflop_conv'] <= res['gflop']
    assert res['gflops_hrnet_mm'] == res['gflop'] / res['infer_s_hrnet_mm']
    assert res['gflops_mmseg'] == res['gflop'] / res['infer_s_mmseg']


def test_folding_leaves_norms_that_run_before_their_conv():
    """mmcv's ConvModule can normalise first: that norm must not be folded into the conv."""
    from mmcv.cnn import ConvModule
    model = torch.nn.Sequential(
        ConvModule(8, 8, 3, padding=1, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act')),
        ConvModule(8, 8, 3, padding=1, norm_cfg=dict(type='BN')))
    randomize_norms(model)
    model.eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    assert isinstance(fast[0].bn, torch.nn.BatchNorm2d)
    assert isinstance(fast[1].bn, torch.nn.Identity)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        a, b = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())


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
    rest = float(re.search(r'not convs: (-?[0-9.]+) s', log).group(1))
    # Five figures printed to 1 ms, each off by at most half of that.
    assert rest >= 0 and abs(sum(map(float, kinds.values())) + rest - total) <= 5 * 5e-4 + 1e-9
    # Every conv of the network is listed once per shape: the call counts add up.
    model = HRNet('w18_small')
    calls = sum(int(m.group(1)) for m in re.finditer(r'x\s*\d+\s+(\d+)\s+[0-9.]+\s+\d+$', log,
                                                      re.M))
    assert calls == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
