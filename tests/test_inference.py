"""The inference path keeps the function (folding only where provably safe, bf16 judged on the
task), never changes the model it is given and cannot be trained by mistake; the backbone
traces without graph breaks."""
import copy

import pytest
import torch

from hrnet_mm import (HRNet, HRNetConcatNeck, HRNetPyramidNeck, fold_batch_norms,
                      mix_streams_before_resize, prepare_for_inference)

from .conftest import ONE_UNIT_PER_STAGE, REPO, build_model, build_random, quiet, randomize_norms


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
    """One exchange unit per stage: each of its parts traced once (more units repeat them)."""
    import torch._dynamo
    torch._dynamo.reset()
    net = HRNet('w18_small', extra=ONE_UNIT_PER_STAGE).eval()
    explanation = torch._dynamo.explain(net)(torch.rand(1, 3, 64, 96))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_benchmark_reports_every_system(tmp_path):
    """tools/benchmark.py as documented, at a small size: every system timed side by side,
    with its start-up time and argmax agreement; the training rows with peak memory; the
    profile accounts for every conv of the model. Would catch: a system missing or failing, a
    float32 system that computes another function, a profile that misses the convolutions."""
    import json
    import os.path as osp
    import sys

    from .conftest import run_cli
    out = tmp_path / 'bench.json'
    log = run_cli([sys.executable, osp.join(REPO, 'tools', 'benchmark.py'),
                   '--config', osp.join(REPO, 'configs', 'demo_street_hrnet_w18_small.py'),
                   '--size', '64', '128', '--rounds', '2', '--no-compile', '--train',
                   '--train-config', osp.join(REPO, 'configs', 'demo_street_hrnet_w18_small.py'),
                   '--train-size', '64', '128', '--train-rounds', '1', '--profile',
                   '--unmixed', '--calib', '2', '--json', str(out)])
    assert 'CPU: ' in log
    res = json.loads(out.read_text())
    assert res['cpu']['model'] and isinstance(res['cpu']['flags'], list)
    names = {r['name'] for r in res['systems']}
    assert {'mmseg', 'mmseg+fused', 'hrnet_mm', 'onnxruntime', 'openvino'} <= names
    assert res['systems'][0]['name'] == 'mmseg'  # the reference the others are compared with
    # int8 by default, OpenVINO's (NNCF, calibrated in its start-up), and nothing else's
    assert {r['name'] for r in res['systems'] if r['precision'] == 'int8'} == {'openvino'}
    for r in res['systems'][1:]:
        assert set(r) >= {'name', 'precision', 'compiled', 'median_s', 'min_s', 'startup_s',
                          'argmax_agreement'}
        assert 0 < r['min_s'] <= r['median_s'] and r['startup_s'] > 0
        assert 0 <= r['argmax_agreement'] <= 1
        if r['precision'] == 'fp32':  # the same network: all but near-ties of random logits
            assert r['argmax_agreement'] > 0.97, r
        # W18-Small's head keeps the concatenation (too little saving): no row claims the
        # streams mixed before resizing, and --unmixed has nothing to add
        assert 'mix_before_resize' not in r, r
    assert 'no extra rows' in log
    ours_rows = [(r['precision'], r['compiled']) for r in res['systems'] if r['name'] == 'hrnet_mm']
    assert len(ours_rows) == len(set(ours_rows))
    train = {(r['name'], r['precision'], r['with_cp']): r for r in res['train']}
    assert {('mmseg', 'fp32', False), ('hrnet_mm', 'fp32', False), ('mmseg', 'fp32', True),
            ('hrnet_mm', 'fp32', True)} <= set(train)
    assert all(r['peak_mib'] > 0 and r['median_s'] > 0 for r in res['train'])
    # --profile: one forward of our eager model runs each of the model's convs once, and they
    # take most of its time (HRNet is convolutions, whatever the CPU)
    from hrnet_mm.builder import build_model
    _, _, model = build_model(osp.join(REPO, 'configs', 'demo_street_hrnet_w18_small.py'))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    ops = res['profiles']['hrnet_mm fp32']['ops']
    conv_ops = [op for op in ops if 'conv' in op['op']]
    # aten::convolution is the entry every conv call passes (the kernels below it vary)
    assert [op['calls'] for op in ops if op['op'] == 'aten::convolution'] == [convs], ops
    assert sum(op['share'] for op in conv_ops) > 0.5, ops
    assert 'training step, hrnet_mm fp32' in res['train_profiles']
    # and OpenVINO's per-op counters: the int8 model's convolutions run int8 kernels, the
    # float32 model's none (would catch an int8 row that ran floating-point convolutions)
    def conv_kernels(label):
        ops = res['profiles'][label]['ops']
        return [op['op'].split()[1] for op in ops if op['op'].startswith('Convolution ')]
    assert conv_kernels('openvino int8') and all(
        k.lower().endswith('i8') for k in conv_kernels('openvino int8')), res['profiles']
    assert conv_kernels('openvino fp32') and not any(
        k.lower().endswith('i8') for k in conv_kernels('openvino fp32')), res['profiles']


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
    and width, and later sizes (odd ones too) reuse that graph; the compiled outputs are the
    eager ones. Nearest upsampling: the strategy and the exchange units' resize logic are the
    same in either mode, and inductor's C++ code generation for bilinear resizes with dynamic
    sizes takes minutes on 2 cores (2 min against 40 s for this network)."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from .conftest import TINY_EXTRA
    torch._dynamo.reset()
    counters.clear()
    # one exchange unit per stage, one block per stream: every stream and resize, and a third
    # less graph to compile twice than TINY_EXTRA's
    extra = {name: dict(stage, **ONE_UNIT_PER_STAGE[name]) for name, stage in TINY_EXTRA.items()}
    net = HRNet(None, extra=extra, compat=None, upsample_mode='nearest').eval()
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


def _seg_model(config, options=None):
    """An mmseg segmentor of one of our configs (``options`` as ``--cfg-options``), random
    weights and norm statistics, in eval mode."""
    import os.path as osp
    return build_random(osp.join(REPO, 'configs', config), options)[1]


# W48's neck and head as they are, on one exchange unit per stage: the rewrites of the neck and
# head read only the streams' widths.
SHALLOW = {'model.backbone.extra': ONE_UNIT_PER_STAGE}


def test_fcn_head_conv_mixes_the_streams_before_resizing():
    """FCN-HRNetV2-W48: the head's 1x1 conv over the concatenation moves into the neck and
    mixes each stream at its own resolution; mmseg's logits are kept at every size, for each
    way the neck resizes (bilinear with and without align_corners, nearest: set on one built
    model, as the config's ``model.neck.upsample_mode`` and ``align_corners`` would)."""
    model = _seg_model('hrnet_w48_cityscapes.py', SHALLOW)
    for mode, align_corners in [('bilinear', False), ('bilinear', True), ('nearest', None)]:
        model.neck.upsample_mode, model.neck.align_corners = mode, align_corners
        fast = prepare_for_inference(model)
        assert len(fast.neck.premix) == 4 and isinstance(fast.decode_head.convs[0].conv,
                                                         torch.nn.Identity)
        assert [c.in_channels for c in fast.neck.premix] == [48, 96, 192, 384]
        assert (fast.neck.upsample_mode, fast.neck.align_corners) == (mode, align_corners)
        assert model.neck.premix is None  # the given model keeps its graph
        assert isinstance(model.decode_head.convs[0].conv, torch.nn.Conv2d)
        # the concat-then-mix copy, for the rounding that folding alone causes
        concat_first = prepare_for_inference(model, mix_before_resize=False)
        assert concat_first.neck.premix is None
        for size in [(64, 96), (97, 131)]:
            x = torch.randn(1, 3, *size)
            with torch.no_grad():
                ref, mixed, folded = (model._forward(x), fast._forward(x),
                                      concat_first._forward(x))
            scale = ref.abs().max().item()
            assert (mixed - ref).abs().max() <= 1e-4 * scale, mode
            assert (mixed - ref).abs().max() <= 2 * (folded - ref).abs().max() + 1e-6 * scale


def test_mixing_moves_only_where_it_saves_enough():
    """W18's head (114 multiply-adds saved per element added to the resizing) stays after the
    concatenation by default, where it measured no faster; moved on request, the same logits."""
    from hrnet_mm.rewrites import MIX_MIN_SAVING
    model = _seg_model('hrnet_w18_cityscapes.py')
    assert model.neck.mix_saving(270) < MIX_MIN_SAVING
    assert prepare_for_inference(model).neck.premix is None
    moved = mix_streams_before_resize(fold_batch_norms(copy.deepcopy(model)), min_saving=0)
    assert len(moved.neck.premix) == 4
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        a, b = model._forward(x), moved._forward(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_necks_own_pointwise_convs_mix_before_resizing():
    """HRNetConcatNeck's 1x1 mixing conv (norm and act stay after the sum) and
    HRNetPyramidNeck's 1x1 reduction: the same outputs, every pyramid level."""
    widths = [18, 36, 72, 144]
    feats = [torch.randn(2, c, 48 // 2 ** i, 80 // 2 ** i) for i, c in enumerate(widths)]
    concat = randomize_norms(HRNetConcatNeck(widths, out_channels=32)).eval()
    pyramid = HRNetPyramidNeck(widths, out_channels=32, num_outs=3,
                               norm_cfg=dict(type='BN')).eval()
    randomize_norms(pyramid)
    for neck in (concat, pyramid):
        moved = mix_streams_before_resize(copy.deepcopy(neck))
        assert moved.premix is not None
        with torch.no_grad():
            for a, b in zip(neck(feats), moved(feats)):
                assert a.shape == b.shape
                assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_mixing_conv_is_left_where_it_cannot_be_moved():
    """Only a 1x1 conv that runs first on the concatenation moves: not a 3x3 one, not an FCN
    head that concatenates its input again (concat_input), not another head (OCRNet's)."""
    from mmcv.cnn import ConvModule
    widths = [18, 36, 72, 144]
    neck = mix_streams_before_resize(HRNetConcatNeck(widths, out_channels=32, kernel_size=3))
    assert neck.premix is None and isinstance(neck.mix.conv, torch.nn.Conv2d)
    pre_norm = HRNetConcatNeck(widths)
    pre_norm.mix = ConvModule(270, 32, 1, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act'))
    assert mix_streams_before_resize(pre_norm).premix is None
    model = _seg_model('hrnet_w48_cityscapes.py', SHALLOW)
    model.decode_head.concat_input = True
    assert mix_streams_before_resize(model).neck.premix is None
    ocr = _seg_model('ocrnet_hrnet_w48_cityscapes.py', SHALLOW)
    fast = prepare_for_inference(ocr)
    assert getattr(getattr(fast, 'neck', None), 'premix', None) is None
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = ocr._forward(x), fast._forward(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


@pytest.mark.slow
def test_hook_tests_the_ema_weights_after_training(street_data, tmp_path):
    """The test loop run in the process that trained with ``EMAHook``: the prepared copy holds
    the averaged weights, which EMAHook swaps in when the test epoch starts. Would catch: the
    copy taken before the swap (``before_test``), which tests the raw weights. (``runner.test()``
    would not show it: it calls ``before_run`` again, where mmengine's EMAHook starts a new
    average from the raw weights, with or without hrnet_mm.)"""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from hrnet_mm import FastInferenceHook

    from .conftest import REPO
    x = torch.rand(1, 3, 64, 128) * 255
    seen = {}

    class Probe(Hook):
        priority = 'LOWEST'  # after EMAHook's swap and FastInferenceHook's copy

        def before_test(self, runner):
            with torch.no_grad():
                seen['raw'] = runner.model._forward(runner.model.data_preprocessor(
                    dict(inputs=[x[0].byte()]), False)['inputs'])

        def before_test_epoch(self, runner):
            model = runner.model
            hook = next(h for h in runner.hooks if isinstance(h, FastInferenceHook))
            inputs = model.data_preprocessor(dict(inputs=[x[0].byte()]), False)['inputs']
            with torch.no_grad():
                seen['ema'] = model._forward(inputs)
                seen['prepared'] = hook._prepared._forward(inputs)

    cfg = Config.fromfile(osp.join(REPO, 'tests', 'configs', 'demo_tiny.py'))
    cfg.work_dir = str(tmp_path)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = street_data
    cfg.test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    cfg.train_cfg.val_interval = 1000
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.5),
                        dict(type='hrnet_mm.FastInferenceHook')]
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Probe())
    runner.train()
    runner.test_loop.run()
    scale = seen['ema'].abs().max()
    assert (seen['raw'] - seen['ema']).abs().max() > 1e-2 * scale  # the averages differ
    assert (seen['prepared'] - seen['ema']).abs().max() <= 1e-4 * scale
