"""Export a seg, pose or det config + checkpoint to ONNX (and OpenVINO), check it, evaluate it.

    # export with dynamic height and width, check against PyTorch on images, compile for OpenVINO
    python tools/deploy.py export configs/hrnet_w48_cityscapes.py iter_80000.pth \\
        --images a.png b.png --openvino --out-dir work_dirs/deploy/w48
    # evaluate the exported model with the config's dataset and mmseg's metric
    python tools/deploy.py test work_dirs/deploy/w48/deploy_onnxruntime.py

``export`` prints, for every image and runtime, the largest difference to PyTorch's output and
the argmax agreement (seg: pixels, pose: keypoints), and fails when a runtime disagrees beyond
``--tolerance``. For seg configs it writes ``deploy_<runtime>[_bf16].py``, a config whose model
is the exported network inside mmseg's test loop (``hrnet_mm.DeployedSegmentor``). Without
``--images`` it checks on two procedural street scenes (one of an odd size).
"""
import argparse
import logging
import os
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))


def build(config, checkpoint):
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from get_flops import build_model
    from hrnet_mm.deploy import TASKS
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    cfg, scope, model = build_model(config)
    if cfg.get('default_scope') not in TASKS:
        raise SystemExit(f'{config}: default_scope {scope!r} is not one of {sorted(TASKS)}')
    init_default_scope(scope)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        print('no checkpoint: exporting randomly initialised weights', file=sys.stderr)
    return cfg, model.eval(), TASKS[scope]


def load_inputs(model, images, shape, task):
    """Normalised batches of one image each, as the model's data preprocessor makes them."""
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
        batches.append(model.data_preprocessor(dict(inputs=[t]), False)['inputs'])
    return batches


def export(args):
    from hrnet_mm.deploy import Runtime, agreement, export_onnx, network, to_openvino
    from hrnet_mm.inference import native_bf16
    cfg, model, task = build(args.config, args.checkpoint)
    os.makedirs(args.out_dir, exist_ok=True)
    inputs = load_inputs(model, args.images, args.shape, task)
    onnx_path = osp.join(args.out_dir, 'model.onnx')
    print(f'exporting the {task} network to {onnx_path} (dynamic batch, height, width)')
    export_onnx(model, task, onnx_path, inputs[0])
    runtimes = [('onnxruntime', onnx_path, 'fp32')]
    if args.openvino:
        xml = to_openvino(onnx_path)
        print(f'OpenVINO IR: {xml}')
        runtimes.append(('openvino', xml, 'fp32'))
        if native_bf16(torch.device('cpu')):
            runtimes.append(('openvino', xml, 'bf16'))
    net = network(model, task)
    failed = False
    for backend, path, precision in runtimes:
        runtime = Runtime(backend, path, precision)
        for i, x in enumerate(inputs):
            with torch.no_grad():
                ref = net(x)
            ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            diff, scale, agree = agreement(ref, runtime(x), task)
            tol = args.tolerance if precision == 'fp32' else args.tolerance_bf16
            ok = diff <= tol * max(1.0, scale)
            failed |= not ok
            print(f'{backend:12} {precision}  input {i} {tuple(x.shape[-2:])}: max |diff| '
                  f'{diff:.2e} (largest |output| {scale:.2f})'
                  + (f', argmax agreement {100 * agree:.3f}%' if agree is not None else '')
                  + ('' if ok else f'  <- beyond {tol:g} relative'))
        if task == 'seg':
            write_deploy_config(args, cfg, backend, path, precision)
    if failed:
        raise SystemExit('an exported model disagrees with PyTorch beyond the tolerance')


def write_deploy_config(args, cfg, backend, path, precision):
    head = cfg.model.decode_head
    head = head[-1] if isinstance(head, (list, tuple)) else head
    name = f"deploy_{backend}{'' if precision == 'fp32' else '_' + precision}.py"
    model = dict(type='hrnet_mm.DeployedSegmentor', backend=backend,
                 model_file=osp.abspath(path), precision=precision,
                 num_classes=head['num_classes'],
                 align_corners=head.get('align_corners', False),
                 data_preprocessor=cfg.model.data_preprocessor.to_dict())
    text = (f'# The network of {args.config} exported to {backend} ({precision}); the rest is '
            f'the config.\n_base_ = {osp.abspath(args.config)!r}\n'
            f'model = dict(_delete_=True, **{model!r})\ncustom_hooks = []\n')
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
    cfg.load_from = None
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
    p.add_argument('--tolerance', type=float, default=5e-3,
                   help='largest fp32 |diff| relative to the largest output (default 5e-3: '
                   "ONNX Runtime agrees to ~1e-6, OpenVINO's f32 to ~1e-3)")
    p.add_argument('--tolerance-bf16', type=float, default=0.1,
                   help='the same for bf16 runtimes (default 0.1)')
    t = sub.add_parser('test', help="evaluate a deploy config with the toolbox's metric")
    t.add_argument('config')
    t.add_argument('--work-dir')
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
