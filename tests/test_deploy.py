"""Export for deployment, as a user runs it: tools/deploy.py exports with dynamic height and
width, checks ONNX Runtime and OpenVINO against PyTorch, and the exported seg model is
evaluated by mmseg's own test loop and metric."""
import glob
import os.path as osp
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from .conftest import (REPO, coco_options, coco_test_options, run_cli, run_tool, run_tool_main,
                       toolbox_tool)

DEPLOY = [sys.executable, osp.join(REPO, 'tools', 'deploy.py')]


@pytest.fixture(scope='session')
def exported_tiny(trained_demo_tiny, street_data, tmp_path_factory):
    """The tiny demo config trained 4 iterations (conftest) and exported with its int8 model,
    calibrated on 3 validation scenes (once: two tests read the export): ``(config,
    checkpoint, mim test's mIoU of the PyTorch model (float32), export directory, export
    log)``."""
    cfg, _, ckpt, log = trained_demo_tiny
    out_dir = str(tmp_path_factory.mktemp('tiny_deploy'))
    export_log = run_tool(DEPLOY[1], ['export', cfg, ckpt, '--int8', '--calib', '3',
                                      '--out-dir', out_dir, '--cfg-options',
                                      f'val_dataloader.dataset.data_root={street_data}'])
    return cfg, ckpt, float(re.findall(r'mIoU: ([0-9.]+)', log)[-1]), out_dir, export_log


@pytest.mark.slow
@pytest.mark.xdist_group('trained_street')  # the worker that trains it (conftest)
def test_seg_export_checks_and_evaluates_with_mmseg_metric(exported_tiny, street_data,
                                                           tmp_path):
    cfg, ckpt, miou_torch, out_dir, log = exported_tiny
    # every runtime checked on two scenes, one of them of an odd size (dynamic H and W)
    rows = re.findall(r'(onnxruntime|openvino)\s+(fp32|bf16|int8)\s+input (\d) \((\d+), (\d+)\): '
                      r'max \|diff\| ([0-9.e+-]+) \(largest \|output\| ([0-9.]+)\), '
                      r'relative RMS ([0-9.e+-]+), argmax agreement ([0-9.]+)%', log)
    assert {(r[0], r[1]) for r in rows} >= {('onnxruntime', 'fp32'), ('openvino', 'fp32')}
    assert any(int(r[3]) % 32 for r in rows)
    for backend, precision, _, _, _, diff, scale, rms, agree in rows:
        if precision == 'fp32':
            # Both runtimes run the float32 weights in float32. Would catch an OpenVINO model
            # saved with float16 weights (ov.save_model's default): 3.7e-4 of the largest
            # output off on this network with random weights, 3.8e-7 with float32 ones.
            tol = 1e-4
            assert float(diff) <= tol * max(1, float(scale)), (backend, diff)
            assert float(rms) <= tol, (backend, rms)
            assert float(agree) > 99.0, (backend, agree)
        else:  # int8, judged as a whole: within --tolerance-int8's default 0.5, not exact
            assert 0 < float(rms) <= 0.5, (backend, precision, rms)
    deploy_cfg = osp.join(out_dir, 'deploy_onnxruntime.py')
    assert osp.exists(deploy_cfg)
    # mmseg's own test tool on the deploy config (tools/deploy.py test, the same test loop
    # without the checkpoint argument, evaluates the int8 model below)
    out = run_cli(['mim', 'test', 'mmsegmentation', deploy_cfg, '--checkpoint',
                   osp.join(out_dir, 'torch_weights.pth'), '--work-dir', str(tmp_path / 'mim'),
                   '--cfg-options', f'test_dataloader.dataset.data_root={street_data}',
                   f"test_evaluator.1.output_dir={tmp_path / 'cs'}"])
    miou_onnx = float(re.findall(r'mIoU: ([0-9.]+)', out)[-1])
    assert abs(miou_onnx - miou_torch) <= 0.2, (miou_onnx, miou_torch)
    # int8 (--int8 implies --openvino): calibrated on 3 of the 4 validation scenes, checked
    # against PyTorch, and evaluated by mmseg's metric; an int8 model is not an fp32 one
    assert 'calibration images: 3/3' in log
    int8 = [r for r in rows if r[1] == 'int8']
    assert len(int8) == 2 and all(float(r[-1]) > 90.0 for r in int8), int8
    import openvino as ov

    from hrnet_mm.deploy import Runtime, float_convolutions
    model_int8 = osp.join(out_dir, 'model_int8.xml')
    graph = ov.Core().read_model(model_int8)
    assert not float_convolutions(graph)  # every conv in int8
    # OpenVINO computes bilinear resizes in floating point whatever their input, so neither
    # they nor the sums they feed take a FakeQuantize'd input: would catch quantize_openvino
    # wrapping them in conversions again (W48 3-6% slower so: docs/deployment.md)
    resizes = [op for op in graph.get_ordered_ops() if op.get_type_name() == 'Interpolate']
    assert resizes and all(op.get_attributes()['mode'] == 'linear_onnx' for op in resizes)
    names = {op.get_friendly_name() for op in resizes}
    fed = resizes + [op for op in graph.get_ordered_ops() if op.get_type_name() == 'Add' and
                     any(v.get_node().get_friendly_name() in names for v in op.input_values())]
    assert len(fed) > len(resizes)  # the exchange units' sums
    assert not [op.get_friendly_name() for op in fed for v in op.input_values()
                if v.get_node().get_type_name() == 'FakeQuantize']
    with pytest.raises(ValueError, match="use precision='int8'"):
        Runtime('openvino', model_int8, 'fp32')
    with pytest.raises(ValueError, match='not quantized: make an int8 model'):
        Runtime('openvino', osp.join(out_dir, 'model.xml'), 'int8')
    out = run_tool(DEPLOY[1], ['test', osp.join(out_dir, 'deploy_openvino_int8.py'),
                               '--work-dir', str(tmp_path / 'test8'), '--cfg-options',
                               f'test_dataloader.dataset.data_root={street_data}',
                               f"test_evaluator.1.output_dir={tmp_path / 'cs8'}"])
    miou_int8 = float(re.findall(r'mIoU: ([0-9.]+)', out)[-1])
    assert abs(miou_int8 - miou_torch) <= 0.5, (miou_int8, miou_torch)


def metric(log, name):
    found = re.findall(rf'coco/{name}: (-?[0-9.]+)', log)
    assert found, log[-3000:]
    return float(found[-1])


def predictions(path, key):
    import mmengine
    return [np.asarray(sample['pred_instances'][key]) for sample in mmengine.load(path)]


def _export_trained(trained, coco, out_dir):
    """``tools/deploy.py export --int8`` of a trained pose / det test model, checked on the
    validation images (the default street scenes are not what these toy models saw: their int8
    activation ranges, calibrated on the people, clip on streets): ``(config, checkpoint,
    mim test's log and predictions of the PyTorch model, export directory, images)``."""
    cfg, ckpt, torch_log, torch_dump = trained
    images = sorted(glob.glob(osp.join(coco, 'val', '*.png')))
    run_tool(DEPLOY[1], ['export', cfg, ckpt, '--out-dir', out_dir, '--int8', '--calib', '4',
                         '--images'] + images + coco_options(coco))
    return cfg, ckpt, torch_log, torch_dump, out_dir, images


@pytest.fixture(scope='session')
def exported_pose(trained_pose, coco, tmp_path_factory):
    """The trained pose test model exported (once: two tests read the export)."""
    return _export_trained(trained_pose, coco, str(tmp_path_factory.mktemp('pose_deploy')))


@pytest.fixture(scope='session')
def exported_det(trained_det, coco, tmp_path_factory):
    """The trained det test model exported (once: two tests read the export)."""
    return _export_trained(trained_det, coco, str(tmp_path_factory.mktemp('det_deploy')))


@pytest.mark.slow
@pytest.mark.xdist_group('trained_coco')  # the worker that trains them (test_e2e_pose_det)
@pytest.mark.parametrize('task, metrics', [('pose', ['AP', 'AR']),
                                           ('det', ['bbox_mAP', 'segm_mAP'])])
def test_pose_and_det_exports_evaluate_with_the_toolbox_metric(task, metrics, coco, tmp_path,
                                                               request):
    """The trained pose / det test model exported, then evaluated by mmpose's / mmdet's own
    test loop and CocoMetric (pose: flip test and codec as configured; det: heads in PyTorch
    with the checkpoint's weights): the same scores and the same predictions as the PyTorch
    model under mim test."""
    # the PyTorch model's scores and predictions: mim test's, in the fixture
    _, _, torch_log, torch_dump, out_dir, images = request.getfixturevalue(f'exported_{task}')
    shutil.copy(torch_dump, tmp_path / 'torch.pkl')
    package, dump = ('mmpose', '--dump') if task == 'pose' else ('mmdet', '--out')
    options = coco_test_options(package, coco)
    deploy_cfg = osp.join(out_dir, 'deploy_onnxruntime.py')
    assert osp.exists(deploy_cfg)
    # the toolbox's own test tool, the one mim test runs for the PyTorch model, in this
    # process (the int8 config below goes through mim test itself)
    log = run_tool(toolbox_tool(package, 'test.py'), [
        deploy_cfg, osp.join(out_dir, 'torch_weights.pth'), dump, str(tmp_path / 'onnx.pkl'),
        '--work-dir', str(tmp_path / 'test'), '--launcher', 'none'] + options)
    for name in metrics:
        assert abs(metric(log, name) - metric(torch_log, name)) <= 0.01, name
    # The scores of two epochs from scratch are near 0: the predictions themselves decide.
    if task == 'pose':
        ref, got = (np.concatenate(predictions(tmp_path / f'{n}.pkl', 'keypoints'))
                    for n in ('torch', 'onnx'))
        assert ref.shape == got.shape and ref.size
        # Heatmap peaks are the keypoint scores: equal everywhere (flip-averaged heatmaps, as
        # configured). A barely trained network's heatmaps are flat: near-ties in the peak and
        # in the codec's quarter-pixel refinement (the sign of a neighbour difference) may go
        # either way, so most locations agree exactly and the rest may not.
        ref_s, got_s = (np.concatenate(predictions(tmp_path / f'{n}.pkl', 'keypoint_scores'))
                        for n in ('torch', 'onnx'))
        np.testing.assert_allclose(got_s, ref_s, rtol=1e-3, atol=1e-5)
        close = np.linalg.norm(ref - got, axis=-1) <= 0.5  # pixels
        assert close.mean() >= 0.75, close.mean()
    else:
        boxes = [predictions(tmp_path / f'{n}.pkl', 'bboxes') for n in ('torch', 'onnx')]
        scores = [predictions(tmp_path / f'{n}.pkl', 'scores') for n in ('torch', 'onnx')]
        assert len(boxes[0]) == len(boxes[1]) > 0
        # the exported model's best boxes are torch's: box within a pixel, score within 1e-3.
        # A barely trained RPN has near-ties among its proposals (scores of 1 - 1e-6), so one
        # in ten of these may be another proposal's box; a wrong export matches almost none.
        assert top_boxes_matched(boxes, scores, 1.0, 1e-3) >= 0.8
    # int8 (OpenVINO, calibrated on 4 validation images) under the toolbox's own test tool,
    # its predictions against the fp32 export's
    log8 = run_cli(['mim', 'test', package, osp.join(out_dir, 'deploy_openvino_int8.py'),
                    '--checkpoint', osp.join(out_dir, 'torch_weights.pth'), dump,
                    str(tmp_path / 'int8.pkl'), '--work-dir', str(tmp_path / 'test8')] + options)
    for name in metrics:
        metric(log8, name)
    if task == 'pose':
        # Flat heatmaps put the peaks of a barely trained network anywhere (int8 moves them);
        # their heights, the keypoint scores, are what int8 must keep.
        ref, got = (np.concatenate(predictions(tmp_path / f'{n}.pkl', 'keypoint_scores'))
                    for n in ('onnx', 'int8'))
        assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max()
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99
    else:
        # A detector one epoch old has near-ties everywhere among its proposals and boxes:
        # int8's best boxes are other proposals' (about one in six matches the fp32 export's
        # within 4 px). What int8 changes is the network it quantized, the backbone and neck:
        # on each validation image (mmdet's preprocessing written out: RGB, mean/std), every
        # pyramid level within 15% relative RMS of the fp32 export's (11.0% at worst measured:
        # activations quantized per tensor, features of a barely trained network) and
        # correlated > 0.99 (0.9947 at worst).
        import cv2

        from hrnet_mm.deploy import Runtime, relative_rms
        fp32 = Runtime('openvino', osp.join(out_dir, 'model.xml'), 'fp32')
        int8 = Runtime('openvino', osp.join(out_dir, 'model_int8.xml'), 'int8')
        mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
        assert images
        for path in images:
            rgb = cv2.imread(path)[..., ::-1]
            x = torch.from_numpy(((rgb - mean) / std).astype(np.float32)).permute(2, 0, 1)
            for ref, got in zip(fp32(x[None]), int8(x[None])):
                rms = relative_rms([ref], [got])
                corr = np.corrcoef(ref.float().numpy().ravel(), got.float().numpy().ravel())[0, 1]
                assert rms <= 0.15 and corr > 0.99, (path, rms, corr)


def top_boxes_matched(boxes, scores, pixels, score_tol):
    """The fraction of the second system's five best boxes per image that the first system
    has too (box within ``pixels``, score within ``score_tol``)."""
    hits = []
    for (rb, gb), (rs, gs) in zip(zip(*boxes), zip(*scores)):
        for k in np.argsort(-gs)[:5]:
            hits.append(((np.abs(rb - gb[k]).max(1) <= pixels)
                         & (np.abs(rs - gs[k]) <= score_tol)).any())
    return float(np.mean(hits))


@pytest.mark.slow
@pytest.mark.xdist_group('trained_coco')  # the worker that trains and exports them
@pytest.mark.parametrize('task', ['pose', 'det'])
def test_pose_and_det_networks_export_with_dynamic_size(task, request):
    """The exported pose / det network (the trained test model's) takes other batch sizes and
    image sizes than it was exported at, with PyTorch's outputs."""
    from hrnet_mm.deploy import Runtime, agreement, network
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from deploy import build
    cfg, ckpt, _, _, out_dir, _ = request.getfixturevalue(f'exported_{task}')
    _, model, got_task = build(cfg, ckpt)
    assert got_task == task
    size = (256, 192) if task == 'pose' else (192, 256)  # the size it was exported at
    runtime = Runtime('onnxruntime', osp.join(out_dir, 'model.onnx'))
    for hw in (size, (size[0] + 32, size[1] + 64)):
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            ref = network(model, task)(x)
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        outs = runtime(x)
        assert [o.shape for o in outs] == [r.shape for r in ref]
        diff, scale, _ = agreement(ref, outs, task)
        assert diff <= 1e-4 * max(1.0, scale)


@pytest.mark.slow
def test_export_mixes_the_streams_before_resizing_with_the_same_output(tmp_path):
    """The default export folds the norms and mixes the streams before resizing: the streams'
    concatenation is gone from the graph; ``fold=False`` keeps the model's own graph. ONNX
    Runtime gives PyTorch's logits from both."""
    import onnx

    from hrnet_mm.deploy import Runtime, export_onnx, network

    from .test_inference import _seg_model
    # the neck's own 1x1 conv mixes the streams to 64 channels; one exchange unit per stage
    # (every stream and kind of resize of W18-Small, in two thirds of the export time)
    model = _seg_model('hrnet_w18_small_cityscapes.py', {
        'model.neck.out_channels': 64, 'model.decode_head.in_channels': 64,
        'model.decode_head.channels': 64,
        'model.backbone.extra': dict(stage3=dict(num_modules=1), stage4=dict(num_modules=1))})
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        ref = network(model, 'seg')(x)
    concats = {}
    for fold in (True, False):
        path = export_onnx(model, 'seg', str(tmp_path / f'fold{fold}.onnx'), x, fold=fold)
        ops = [n.op_type for n in onnx.load(path, load_external_data=False).graph.node]
        concats[fold] = ops.count('Concat')
        out = Runtime('onnxruntime', path)(x)[0]
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert concats[False] - concats[True] == 1, concats
    assert model.neck.premix is None  # the model exported is not changed


@pytest.mark.slow
def test_both_exporters_give_the_pyramid_at_sizes_and_batches_not_exported(tmp_path):
    """The det network (HRNet and its pooled pyramid, the most size-dependent graph here),
    exported by the default trace and by torch.export: ONNX Runtime gives PyTorch's pyramid at
    another batch and at odd sizes from either. Would catch a size the trace recorded at the
    example's (a resize or pooling fixed to it: shapes or values off at other sizes), and
    either exporter missing a path. The export says nothing of its own choices: no deprecation
    or trace warnings from hrnet_mm."""
    import warnings

    from hrnet_mm.deploy import Runtime, export_onnx, network

    from .conftest import build_random
    _, model = build_random(osp.join(REPO, 'tests', 'configs', 'det_tiny.py'))
    net = network(model, 'det')
    x = torch.randn(1, 3, 96, 128)
    for exporter in ('torchscript', 'dynamo'):
        path = str(tmp_path / f'{exporter}.onnx')
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter('always')
            export_onnx(model, 'det', path, x, exporter=exporter)
        ours = [w for w in said if 'hrnet_mm' in w.filename
                or issubclass(w.category, DeprecationWarning) and 'ONNX' in str(w.message)]
        assert not ours, [str(w.message) for w in ours]
        runtime = Runtime('onnxruntime', path)
        for shape in ((1, 3, 96, 128), (3, 3, 131, 97), (1, 3, 160, 224)):
            y = torch.randn(*shape)
            with torch.no_grad():
                ref = list(net(y))
            outs = runtime(y)
            assert [o.shape for o in outs] == [r.shape for r in ref], (exporter, shape)
            for o, r in zip(outs, ref):
                assert (o - r).abs().max() <= 1e-4 * r.abs().max(), (exporter, shape)


def test_export_refuses_an_example_too_small_for_every_stream(tmp_path):
    """Below 33 px the 1/32 stream is a pixel (a detector's coarsest pooled level is empty
    below 61): the export says what example it needs before exporting anything."""
    from hrnet_mm.deploy import export_onnx

    from .conftest import build_random
    _, det = build_random(osp.join(REPO, 'tests', 'configs', 'det_tiny.py'))
    with pytest.raises(ValueError, match='at least 61 px high and wide; give a larger one'):
        export_onnx(det, 'det', str(tmp_path / 'det.onnx'), torch.randn(1, 3, 60, 128))
    with pytest.raises(ValueError, match="exporter must be one of"):
        export_onnx(det, 'det', str(tmp_path / 'det.onnx'), torch.randn(1, 3, 64, 64),
                    exporter='jit')
    assert not list(tmp_path.iterdir())


def test_relative_rms_is_the_worst_outputs_error_over_its_spread():
    """Hand-computed: a reference of ones, one element off by 2 in four (RMS of the error 1,
    of the reference 1); a second output off by 1% everywhere. Would catch: the mean over
    the outputs (0.505) hiding the broken one, or the error not divided by the spread."""
    from hrnet_mm.deploy import relative_rms
    ref = [torch.ones(1, 4), torch.full((2, 3), 10.0)]
    other = [torch.tensor([[3.0, 1.0, 1.0, 1.0]]), torch.full((2, 3), 10.1)]
    assert relative_rms(ref, other) == pytest.approx(1.0)
    assert relative_rms(ref[1:], other[1:]) == pytest.approx(0.01, rel=1e-5)


def test_int8_leaves_out_only_bilinear_resizes_and_their_sums():
    """A hand-built graph: a bilinear and a nearest resize of the same map, each added to a
    second input, and a sum of that input with itself. Only the bilinear resize and its sum
    stay in floating point; would catch a nearest resize (which OpenVINO runs in int8) or an
    unrelated sum left out of quantization."""
    import openvino as ov
    import openvino.opset13 as ops

    from hrnet_mm.deploy import float_resizes_and_sums
    x = ops.parameter([1, 4, 8, 8], np.float32, name='x')
    y = ops.parameter([1, 4, 16, 16], np.float32, name='y')
    size, axes = ops.constant(np.array([16, 16])), ops.constant(np.array([2, 3]))
    resized = {mode: ops.interpolate(x, size, mode, 'sizes', axes=axes, name=mode)
               for mode in ('linear_onnx', 'nearest')}
    sums = [ops.add(r, y, name=f'{mode}_sum') for mode, r in resized.items()]
    model = ov.Model(sums + [ops.add(y, y, name='plain_sum')], [x, y])
    assert float_resizes_and_sums(model) == ['linear_onnx', 'linear_onnx_sum']


def test_missing_runtime_file_says_how_to_make_it(tmp_path):
    from hrnet_mm.deploy import Runtime
    with pytest.raises(FileNotFoundError, match='run tools/deploy.py export'):
        Runtime('onnxruntime', str(tmp_path / 'nope.onnx'))
    with pytest.raises(ValueError, match="no bf16 path"):
        Runtime('onnxruntime', __file__, precision='bf16')


@pytest.mark.slow
@pytest.mark.xdist_group('trained_street')  # the worker that trains and exports it
def test_deployed_segmentor_slides_as_mmseg_does(exported_tiny):
    """``test_cfg.mode='slide'``: the exported model runs mmseg's own sliding window, so its
    logits are the PyTorch segmentor's in slide mode. Would catch: the whole image run once
    (the window ignored), which differs from slide by far more than the export's rounding."""
    from mmengine.config import ConfigDict

    from hrnet_mm.deploy import DeployedSegmentor
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from deploy import build
    cfg, ckpt, _, out_dir, _ = exported_tiny
    _, model, _ = build(cfg, ckpt)  # the trained model the export was made from
    slide = dict(mode='slide', crop_size=(64, 96), stride=(48, 64))
    deployed = DeployedSegmentor('onnxruntime', osp.join(out_dir, 'model.onnx'),
                                 num_classes=19, test_cfg=slide,
                                 data_preprocessor=model.data_preprocessor).eval()
    x = torch.randn(1, 3, 100, 150)

    def metas():  # fresh each call: mmseg's slide_inference writes the crop's shape into them
        return [dict(img_shape=(100, 150), ori_shape=(100, 150), pad_shape=(100, 150),
                     padding_size=[0, 0, 0, 0])]
    with torch.no_grad():
        model.test_cfg = ConfigDict(slide)
        torch_slide = model.inference(x, metas())
        model.test_cfg = ConfigDict(mode='whole')
        torch_whole = model.inference(x, metas())
        ours = deployed.inference(x, metas())
    scale = torch_slide.abs().max()
    assert (torch_slide - torch_whole).abs().max() > 1e-2 * scale
    assert (ours - torch_slide).abs().max() <= 1e-4 * scale


def deploy_cli(monkeypatch, *args):
    """tools/deploy.py's command line, in this process (:func:`run_tool_main`): its error as a
    user reads it."""
    code, _ = run_tool_main(DEPLOY[1], args, monkeypatch)
    assert isinstance(code, str), code  # it exits with a message
    return code


TINY = osp.join(REPO, 'tests', 'configs', 'demo_tiny.py')


def test_int8_export_refuses_what_it_cannot_calibrate(street_data, tmp_path, monkeypatch):
    """Each refusal comes before the export (minutes for a large model) and names the fix:
    no NNCF; a validation set that cannot be read or has no images; more calibration images
    than the set has; calibration options without --int8."""
    out = ['--out-dir', str(tmp_path / 'out')]
    root = f'val_dataloader.dataset.data_root={street_data}'
    monkeypatch.setitem(sys.modules, 'nncf', None)  # a host without the deploy extra
    assert 'pip install .[deploy]' in deploy_cli(monkeypatch, 'export', TINY, '--int8', *out,
                                                 '--cfg-options', root)
    monkeypatch.delitem(sys.modules, 'nncf')
    missing = deploy_cli(monkeypatch, 'export', TINY, '--int8', *out, '--cfg-options',
                         f'val_dataloader.dataset.data_root={tmp_path / "nowhere"}')
    assert "cannot read the config's validation set" in missing
    assert 'val_dataloader.dataset.data_root=PATH' in missing
    empty = tmp_path / 'empty'
    for sub in ('leftImg8bit/val', 'gtFine/val'):
        (empty / sub).mkdir(parents=True)
    assert 'has no images' in deploy_cli(monkeypatch, 'export', TINY, '--int8', *out,
                                         '--cfg-options',
                                         f'val_dataloader.dataset.data_root={empty}')
    assert 'the validation set has 4 images; give --calib between 1 and 4' in deploy_cli(
        monkeypatch, 'export', TINY, '--int8', '--calib', '5', *out, '--cfg-options', root)
    assert '--calib and --max-drop go with --int8' in deploy_cli(
        monkeypatch, 'export', TINY, '--calib', '2', *out)
    assert not (tmp_path / 'out').exists()  # nothing was exported


def test_export_refuses_an_unknown_exporter_before_building(tmp_path, monkeypatch):
    """Checked by the tool itself (so that --help need not import hrnet_mm): the refusal
    names the exporters and comes before the model is built or anything is written."""
    assert '--exporter jit: give one of torchscript, dynamo' in deploy_cli(
        monkeypatch, 'export', TINY, '--exporter', 'jit', '--out-dir', str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()
