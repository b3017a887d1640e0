"""Export a seg, pose or det config + checkpoint to ONNX (and OpenVINO), check it, evaluate it.

    # export with dynamic height and width, check against PyTorch on images, compile for OpenVINO
    python tools/deploy.py export configs/hrnet_w48_cityscapes.py iter_80000.pth \\
        --images a.png b.png --openvino --out-dir work_dirs/deploy/w48
    # evaluate the exported model with the config's dataset and mmseg's metric
    python tools/deploy.py test work_dirs/deploy/w48/deploy_onnxruntime.py
    # also an int8 model (OpenVINO, NNCF), calibrated on 32 images of the config's val set
    python tools/deploy.py export configs/hrnet_w48_cityscapes.py iter_80000.pth --int8
    python tools/deploy.py test work_dirs/deploy/hrnet_w48_cityscapes/deploy_openvino_int8.py

``export`` prints, for every image and runtime, the largest difference to PyTorch's output, the
relative RMS difference and the argmax agreement (seg: pixels, pose: keypoints), and fails when
a runtime disagrees beyond ``--tolerance`` (int8: its relative RMS beyond ``--tolerance-int8``).
For every runtime it writes ``deploy_<runtime>[_bf16].py``, a config whose model is the
exported network inside the toolbox's test loop: seg as
``hrnet_mm.DeployedSegmentor``; pose as a ``TopdownPoseEstimator`` with
``hrnet_mm.ExportedNetwork`` for backbone and the heatmap head reduced to its decoding (flip
test and codec as configured); det as the detector with ``hrnet_mm.ExportedNetwork`` for
backbone and neck, its heads in PyTorch. Beside the model it writes ``torch_weights.pth``, the
weights of what stays in PyTorch (det: the heads; seg and pose: none), which the deploy config
loads. ``test`` evaluates such a config with the config's
dataset and the toolbox's metric, and so does the toolbox's own test tool:

    mim test mmsegmentation work_dirs/deploy/w48/deploy_onnxruntime.py \\
        --checkpoint work_dirs/deploy/w48/torch_weights.pth

``--int8`` (implies ``--openvino``) quantizes the OpenVINO model with NNCF's post-training
quantization, calibrated on ``--calib`` images (default 32, or the whole set when smaller)
drawn at random (seeded) from the config's validation set through its own test pipeline and data
preprocessor, and writes ``model_int8.xml`` and ``deploy_openvino_int8.py``. Its accuracy is for
you to check with ``test`` (the toolbox's metric); ``--max-drop D`` uses NNCF's
accuracy-controlled mode instead: layers go back to floating point, the most costly first,
until the metric on the validation set (seg mIoU, pose coco/AP, det coco/bbox_mAP, in the
metric's units) is within D of the floating-point model's, and the export prints what it kept.

Without ``--images`` it checks on two procedural street scenes (one of an odd size); check
images all of one size are joined by the first resized to another. The exported graph has the
batch norms folded into the convs and, where that pays, the streams mixed before resizing
(``hrnet_mm.rewrites``: the same function in fewer operations); ``--no-fold`` exports the
model's own graph. ``--exporter dynamo`` captures the network with torch.export instead of
tracing it (``hrnet_mm.deploy.export_onnx``: the same function; the trace is about 10x
faster).
"""
import argparse
import copy
import logging
import os
import os.path as osp
import sys
import time

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))


def build(config, checkpoint, options=None):
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from hrnet_mm.builder import build_model
    from hrnet_mm.deploy import TASKS
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    cfg, scope, model = build_model(config, options)
    if cfg.get('default_scope') not in TASKS:
        raise SystemExit(f'{config}: default_scope {scope!r} is not one of {sorted(TASKS)}')
    init_default_scope(scope)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        print('no checkpoint: exporting randomly initialised weights', file=sys.stderr)
    return cfg, model.eval(), TASKS[scope]


def load_inputs(model, images, shape, task):
    """Normalised batches of one image each, as the model's data preprocessor makes them; when
    they are all of one size, also the first resized to another (odd) size."""
    import mmcv
    import numpy as np
    arrays = []
    if images:
        for path in images:
            img = mmcv.imread(path)
            if img is None:
                raise SystemExit(f'cannot read image {path!r}')
            if shape or task == 'pose':
                img = mmcv.imresize(img, tuple(reversed(shape or (256, 192))))
            arrays.append(img)
    else:
        sys.path.insert(0, osp.join(REPO, 'tools'))
        from street_scenes import draw_scene
        rng = np.random.default_rng(0)
        size = tuple(shape or ((256, 192) if task == 'pose' else (256, 512)))
        odd = (size[0] + 17, size[1] + 27)
        arrays = [draw_scene(rng, *hw)[0][..., ::-1].copy() for hw in (size, odd)]  # BGR
    batches = []
    for img in arrays:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        data = dict(inputs=[t])
        if task == 'pose':  # mmpose's preprocessor records the pad shape in the samples
            from mmpose.structures import PoseDataSample
            data['data_samples'] = [PoseDataSample(metainfo=dict(img_shape=img.shape[:2]))]
        batches.append(model.data_preprocessor(data, False)['inputs'])
    if len({tuple(b.shape[-2:]) for b in batches}) == 1:
        # the export is for every size: checked at a second one too, the first image resized
        h, w = batches[0].shape[-2:]
        batches.append(torch.nn.functional.interpolate(
            batches[0], size=(h + 17, w + 27), mode='bilinear', align_corners=False))
    return batches


METRIC = dict(seg='mIoU', pose='coco/AP', det='coco/bbox_mAP')  # what --max-drop holds


def validation_set(cfg, what):
    """The config's validation dataset (its test-time pipeline), or an error naming the fix."""
    from mmengine.registry import DATASETS
    section = cfg.get('val_dataloader') or cfg.get('test_dataloader')
    fix = ('point the config at your data, e.g. --cfg-options '
           'val_dataloader.dataset.data_root=PATH')
    if not section:
        raise SystemExit(f'{what}: the config has no val_dataloader; {fix}')
    try:  # (not serialized: mmengine's serialization fails on an empty set)
        dataset = DATASETS.build(dict(section.dataset, serialize_data=False))
    except Exception as err:  # the toolbox's own message, kept in full
        raise SystemExit(f'{what}: cannot read the config\'s validation set '
                         f'({type(err).__name__}: {err}); {fix}') from err
    if len(dataset) == 0:
        raise SystemExit(f'{what}: the config\'s validation set has no images '
                         f'(data_root {section.dataset.get("data_root")!r}); {fix}')
    return dataset


def calibration_count(count, dataset):
    """``--calib`` checked against the validation set (default 32, or all when fewer)."""
    if count is None:
        return min(32, len(dataset))
    if count < 1 or count > len(dataset):
        raise SystemExit(f'--calib {count}: the validation set has {len(dataset)} images; '
                         f'give --calib between 1 and {len(dataset)}')
    return count


def calibration_inputs(dataset, model, count):
    """``count`` images drawn (seeded) from ``dataset`` (the validation set, through the
    config's test pipeline) and the model's data preprocessor: the network's inputs, as
    float32 arrays."""
    import numpy as np
    from mmengine.dataset import pseudo_collate
    picks = sorted(np.random.default_rng(0).choice(len(dataset), count, replace=False))
    inputs = []
    for k, i in enumerate(picks, 1):
        with torch.no_grad():
            x = model.data_preprocessor(pseudo_collate([dataset[int(i)]]), False)['inputs']
        inputs.append(np.ascontiguousarray(x.float().numpy()))
        if sys.stdout.isatty():
            print(f'\rcalibration images: {k}/{count}', end='' if k < count else '\n', flush=True)
        elif k == count or k % 8 == 0:
            print(f'calibration images: {k}/{count}', flush=True)
    return inputs


def metric_function(cfg, task, deploy_cfg, metainfo):
    """``validate(compiled_model, batches)``: the toolbox's metric (:data:`METRIC`) on
    ``batches`` of the validation set (NNCF gives all of them, or one at a time to rank the
    layers), for the deploy config's model with its network replaced by an OpenVINO compiled
    model."""
    from mmengine.config import Config
    from mmengine.evaluator import Evaluator
    from mmengine.runner import load_checkpoint

    from hrnet_mm.builder import build_in_scope
    dcfg = Config.fromfile(deploy_cfg)
    deployed = build_in_scope(dcfg.model, dcfg.default_scope).eval()
    load_checkpoint(deployed, dcfg.load_from, map_location='cpu', logger='silent')
    runtime = deployed.runtime if task == 'seg' else deployed.backbone.runtime

    def validate(compiled, batches):
        runtime.use_compiled(compiled)
        evaluator = Evaluator(copy.deepcopy(cfg.val_evaluator))
        evaluator.dataset_meta = metainfo
        count = 0
        with torch.no_grad():
            for batch in batches:
                evaluator.process(deployed.test_step(batch), batch)
                count += len(batch['inputs'])
        metrics = evaluator.evaluate(count)
        key = next(k for k in metrics if k.split('/')[-1] == METRIC[task].split('/')[-1])
        return float(metrics[key])
    return validate


def quantize(args, cfg, model, task, xml, dataset):
    """``tools/deploy.py export --int8``: the int8 OpenVINO model's path."""
    from mmengine.runner import Runner

    from hrnet_mm.deploy import quantize_openvino
    calibration = calibration_inputs(dataset, model, args.calib)
    out = osp.join(args.out_dir, 'model_int8.xml')
    options = {}
    if args.max_drop is not None:
        metainfo = dataset.metainfo
        print(f'accuracy-controlled quantization: {METRIC[task]} within {args.max_drop} of the '
              'floating-point model on the validation set')
        options = dict(max_drop=args.max_drop,
                       validation=Runner.build_dataloader(cfg.val_dataloader),
                       validate=metric_function(cfg, task,
                                                osp.join(args.out_dir, 'deploy_openvino.py'),
                                                metainfo))
    print(f'quantizing to int8 with NNCF ({len(calibration)} calibration images)')
    kept = quantize_openvino(xml, calibration, out, **options)
    if args.max_drop is not None:
        print(f'kept in floating point: {len(kept)} convolution(s)'
              + (': ' + ', '.join(kept) if kept else ''))
    print(f'OpenVINO int8 IR: {out}')
    return out


def export(args):
    from hrnet_mm.deploy import EXPORTERS, export_onnx, network, to_openvino
    from hrnet_mm.precision import native_bf16
    if args.exporter not in EXPORTERS:  # (checked here, not by argparse: -h stays quick)
        raise SystemExit(f'--exporter {args.exporter}: give one of {", ".join(EXPORTERS)}')
    cfg, model, task = build(args.config, args.checkpoint, args.cfg_options)
    if args.int8 or args.calib is not None or args.max_drop is not None:
        if not args.int8:
            raise SystemExit('--calib and --max-drop go with --int8')
        args.openvino = True
        try:
            import nncf  # noqa: F401
        except ImportError:
            raise SystemExit('--int8 needs NNCF: pip install .[deploy] (or pip install nncf)')
        # before minutes of export: there are images to calibrate on, as many as asked
        dataset = validation_set(cfg, '--int8')
        args.calib = calibration_count(args.calib, dataset)
    os.makedirs(args.out_dir, exist_ok=True)
    inputs = load_inputs(model, args.images, args.shape, task)
    onnx_path = osp.join(args.out_dir, 'model.onnx')
    folded = '' if args.no_fold else ('; batch norms folded, streams mixed before resizing '
                                      'where that pays')
    print(f'exporting the {task} network to {onnx_path} ({args.exporter}; dynamic batch, '
          f'height, width{folded})')
    start = time.perf_counter()
    export_onnx(model, task, onnx_path, inputs[0], fold=not args.no_fold,
                exporter=args.exporter)
    print(f'exported in {time.perf_counter() - start:.1f} s')
    runtimes = [('onnxruntime', onnx_path, 'fp32')]
    if args.openvino:
        xml = to_openvino(onnx_path)
        print(f'OpenVINO IR: {xml}')
        runtimes.append(('openvino', xml, 'fp32'))
        if native_bf16(torch.device('cpu')):
            runtimes.append(('openvino', xml, 'bf16'))
    net = network(model, task)
    torch_weights = save_torch_weights(model, task, args.out_dir)
    args.failed = False
    for backend, path, precision in runtimes:
        check(args, net, inputs, task, backend, path, precision)
        write_deploy_config(args, cfg, model, task, backend, path, precision, torch_weights)
    if args.int8:
        path = quantize(args, cfg, model, task, xml, dataset)
        check(args, net, inputs, task, 'openvino', path, 'int8')
        write_deploy_config(args, cfg, model, task, 'openvino', path, 'int8', torch_weights)
    if args.failed:
        raise SystemExit('an exported model disagrees with PyTorch beyond the tolerance')


def check(args, net, inputs, task, backend, path, precision):
    """Print how far a runtime's outputs are from PyTorch's on the check images; note in
    ``args.failed`` when beyond the tolerance of its precision."""
    from hrnet_mm.deploy import Runtime, agreement, relative_rms
    runtime = Runtime(backend, path, precision)
    tol = dict(fp32=args.tolerance, bf16=args.tolerance_bf16, int8=args.tolerance_int8)[precision]
    for i, x in enumerate(inputs):
        with torch.no_grad():
            ref = net(x)
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        out = runtime(x)
        diff, scale, agree = agreement(ref, out, task)
        rms = relative_rms(ref, out)
        # int8: judged as a whole (one clipped activation makes the largest |diff| large)
        ok = rms <= tol if precision == 'int8' else diff <= tol * max(1.0, scale)
        args.failed |= not ok
        print(f'{backend:12} {precision}  input {i} {tuple(x.shape[-2:])}: max |diff| '
              f'{diff:.2e} (largest |output| {scale:.2f}), relative RMS {rms:.2e}'
              + (f', argmax agreement {100 * agree:.3f}%' if agree is not None else '')
              + ('' if ok else f'  <- beyond {tol:g}'
                 + (' relative RMS' if precision == 'int8' else ' relative')))


def plain(value):
    """A config section as plain dicts and lists (written into a config file by repr)."""
    return value.to_dict() if hasattr(value, 'to_dict') else value


def deployed_model(cfg, model, task, exported):
    """The ``model`` section of a deploy config (None: no test config for this model)."""
    if task == 'seg':
        head = cfg.model.decode_head
        head = head[-1] if isinstance(head, (list, tuple)) else head
        return dict(_delete_=True, type='hrnet_mm.DeployedSegmentor', **exported,
                    num_classes=head['num_classes'],
                    align_corners=head.get('align_corners', False),
                    test_cfg=plain(cfg.model.get('test_cfg') or dict(mode='whole')),
                    data_preprocessor=plain(cfg.model.data_preprocessor))
    if task == 'pose':
        from mmpose.models.heads import HeatmapHead
        if not isinstance(model.head, HeatmapHead):
            return None
        head = plain(cfg.model.head)
        keypoints = head['out_channels']
        # The exported network ends with the heatmaps: the head keeps its decoding only.
        head.update(in_channels=keypoints, deconv_out_channels=None, conv_out_channels=None,
                    final_layer=None)
        for key in ('deconv_kernel_sizes', 'conv_kernel_sizes', 'init_cfg'):
            head.pop(key, None)
        return dict(_delete_=True, type=cfg.model.type, backbone=exported, head=head,
                    data_preprocessor=plain(cfg.model.data_preprocessor),
                    test_cfg=plain(cfg.model.get('test_cfg') or {}))
    # det: the exported network is the backbone and the neck; the heads stay in PyTorch.
    return dict(backbone=dict(_delete_=True, **exported), neck=None)


def save_torch_weights(model, task, out_dir):
    """The weights of what stays in PyTorch (det: the heads; seg, pose: none), as a checkpoint
    that the deploy config loads and that ``mim test --checkpoint`` accepts."""
    state = {}
    if task == 'det':
        state = {k: v for k, v in model.state_dict().items()
                 if not k.startswith(('backbone.', 'neck.'))}
    path = osp.join(out_dir, 'torch_weights.pth')
    torch.save(dict(state_dict=state), path)
    return path


def write_deploy_config(args, cfg, model, task, backend, path, precision, torch_weights):
    name = f"deploy_{backend}{'' if precision == 'fp32' else '_' + precision}.py"
    exported = dict(backend=backend, model_file=osp.abspath(path), precision=precision)
    if task != 'seg':
        exported = dict(type='hrnet_mm.ExportedNetwork', **exported)
    section = deployed_model(cfg, model, task, exported)
    if section is None:
        print(f'  no deploy test config: {type(model.head).__name__} is not a heatmap head '
              '(the export and its check stand)')
        return
    text = (f'# The network of {args.config} exported to {backend} ({precision}); the rest is '
            f'the config.\n_base_ = {osp.abspath(args.config)!r}\n'
            f'model = {section!r}\ncustom_hooks = []\n'
            f'load_from = {osp.abspath(torch_weights)!r}\n')
    out = osp.join(args.out_dir, name)
    with open(out, 'w') as f:
        f.write(text)
    print(f'  -> {out}: python tools/deploy.py test {out}')


def test(args):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or osp.join('work_dirs', 'deploy_test',
                                             osp.splitext(osp.basename(args.config))[0])
    if args.dump:  # as mmpose's test.py --dump (mmdet's --out)
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--dump {args.dump}: give a .pkl file')
        metrics = cfg.test_evaluator
        metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        cfg.test_evaluator = metrics + [dict(type='DumpResults', out_file_path=args.dump)]
    Runner.from_cfg(cfg).test()


def main():
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('export', help='export to ONNX (and OpenVINO) and check against torch')
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', help='omit to export random weights')
    p.add_argument('--out-dir', default=None)
    p.add_argument('--images', nargs='*', help='images to check on (default: two scenes)')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='resize the check images to this size (pose: default 256 192)')
    p.add_argument('--openvino', action='store_true', help='also convert and check OpenVINO')
    p.add_argument('--no-fold', action='store_true',
                   help="export the model's own graph: batch norms not folded into convs, "
                   'streams concatenated before the 1x1 conv that mixes them')
    p.add_argument('--exporter', default='torchscript',
                   help="torchscript (default): torch.onnx.export's trace, about 10x faster; "
                   'dynamo: torch.export (for a torch without the TorchScript exporter)')
    p.add_argument('--tolerance', type=float, default=1e-3,
                   help='largest fp32 |diff| relative to the largest output (default 1e-3: '
                   "ONNX Runtime and OpenVINO's f32 agree to about 1e-5)")
    p.add_argument('--tolerance-bf16', type=float, default=0.1,
                   help='the same for bf16 runtimes (default 0.1)')
    p.add_argument('--int8', action='store_true',
                   help='also quantize the OpenVINO model to int8 (NNCF; implies --openvino)')
    p.add_argument('--calib', type=int, metavar='N',
                   help='int8 calibration images from the validation set (default 32, or all '
                   'when fewer)')
    p.add_argument('--max-drop', type=float, metavar='D',
                   help="int8 with accuracy control: the toolbox's metric on the validation "
                   'set (seg mIoU, pose coco/AP, det coco/bbox_mAP) within D of the '
                   'floating-point model; layers that cost more stay in floating point')
    p.add_argument('--tolerance-int8', type=float, default=0.5,
                   help="the largest int8 relative RMS difference, RMS(int8 - PyTorch) / "
                   "RMS(PyTorch), worst output (default 0.5, a broken model's is about 1 or "
                   "more; int8's accuracy is judged by the metric: tools/deploy.py test)")
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings (e.g. the validation data_root for --int8)')
    t = sub.add_parser('test', help="evaluate a deploy config with the toolbox's metric")
    t.add_argument('config')
    t.add_argument('--work-dir')
    t.add_argument('--dump', help='also write the predictions to this .pkl file')
    t.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    if args.command == 'export':
        args.out_dir = args.out_dir or osp.join(
            'work_dirs', 'deploy', osp.splitext(osp.basename(args.config))[0])
        export(args)
    else:
        test(args)


if __name__ == '__main__':
    main()
