"""Check hrnet_mm's GPU path on a CUDA host, in one command: prints a table, writes JSON.

    python tools/gpu_check.py                        # every check, JSON to work_dirs/gpu_check.json
    python tools/gpu_check.py --checks a b --out x.json

The checks (each row of the table says what it measured, its bound, and whether it held):

a. exactness: mmseg's FCN-HRNetV2-W18 config with its backbone swapped for hrnet_mm's, against
   mmseg's own with the same weights, on CUDA with cuDNN deterministic: logits in eval and in
   train mode, and every buffer (the norms' running statistics) after one SGD step. Bound:
   max |diff| <= 1e-5 x the largest |value|.
b. mixed-precision training: 20 steps of configs/hrnet_w18_cityscapes.py on one batch of street
   scenes (2 x 512x1024) under ``hrnet_mm.MixedPrecisionOptimWrapper``, float16 (dynamic loss
   scaling) and bfloat16, with and without ``with_cp``: every loss finite, the last five below
   the first five on average, every running statistic finite.
c. fast inference (what ``hrnet_mm.FastInferenceHook`` runs: ``prepare_for_inference``) at fp16
   and bf16, eager and compiled, on the bf16-trained model of (b), whose norm statistics come
   from the street scenes: argmax agreement with fp32 on two new scenes, over every pixel and
   over the pixels whose fp32 class wins by more than 5% of the logit scale (bound: 99.9%).
d. speed and peak memory against mmseg (median of timed runs after warm-up, one process):
   W48 inference at 1x3x1024x2048 (mmseg fp32 eager as shipped; mmseg under fp16 autocast, as
   its ``--amp``; hrnet_mm compiled at ``precision='auto'``); the W18 train step at batch 8,
   512x1024 (mmseg fp32; mmseg ``--amp``, i.e. ``AmpOptimWrapper`` fp16; hrnet_mm
   ``MixedPrecisionOptimWrapper(dtype='auto')``). Targets: W48 inference >= 3x mmseg fp32 eager;
   W18 step >= 1.3x mmseg ``--amp`` at no more peak memory.
e. two-process DDP with SyncBN over NCCL (mmseg's train.py on the demo config, 20 iterations),
   when two GPUs are present; skipped with the reason otherwise.

On a host without CUDA it says so and exits with status 2, checking nothing. Exit status 1
when a check failed. ``--cpu-smoke`` runs (a)-(d) at toy sizes on the CPU instead (10
training steps, one exchange unit per stage; the fp16 parts, which need a GPU, and compilation
are skipped): the test suite's proof that the script runs; its figures mean nothing, and (d)'s
targets are not judged there.

Needs mmseg (its models import mmcv's compiled ops, so mmcv must be built with ops: on a bare
CUDA machine, see README "On a GPU").
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, osp.join(REPO, 'tools'))

SEG_CONFIGS = {  # ours, mmseg's stock config of the same model
    'w18': ('configs/hrnet_w18_cityscapes.py', 'hrnet/fcn_hr18_4xb2-80k_cityscapes-512x1024.py'),
    'w48': ('configs/hrnet_w48_cityscapes.py', 'hrnet/fcn_hr48_4xb2-80k_cityscapes-512x1024.py'),
}
EXACT = 1e-5          # (a): max |diff| relative to the largest |value|
CLEAR_AGREEMENT = 0.999  # (c)
INFERENCE_TARGET = 3.0   # (d): W48 inference vs mmseg fp32 eager
TRAIN_TARGET = 1.3       # (d): W18 step vs mmseg --amp


class Setting:
    """Sizes and device: the real ones on a GPU, toy ones for ``--cpu-smoke``."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.device = torch.device('cpu' if smoke else 'cuda')
        self.train_size = (64, 64) if smoke else (512, 1024)
        self.infer_size = (64, 128) if smoke else (1024, 2048)
        self.train_batch = 2 if smoke else 8
        self.steps = 10 if smoke else 20  # (the loss halves in 10 steps on the CPU too)
        self.runs, self.warmup = (2, 1) if smoke else (10, 3)
        self.dtypes = ['bfloat16'] if smoke else ['float16', 'bfloat16']
        self.precisions = ['bf16'] if smoke else ['fp16', 'bf16']
        self.compiles = [False] if smoke else [False, True]  # compiling takes minutes on CPUs
        # smoke: one exchange unit of one residual unit per stream in each stage, in every
        # model (ours and mmseg's alike): every code path at a fraction of the work
        self.model_options = {} if not smoke else {
            f'model.backbone.extra.stage{i}.{key}': value for i in range(1, 5)
            for key, value in (('num_modules', 1), ('num_blocks', (1, ) * i))}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn, setting):
    """(median seconds, peak MiB allocated on the GPU or None) over the timed runs."""
    device = setting.device
    for _ in range(setting.warmup):
        fn()
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(setting.runs):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20
            if device.type == 'cuda' else None)
    return statistics.median(times), peak


def seg_model(which, setting, source='ours', options=None):
    """A segmentor on the device, random weights: ``source`` ``'ours'`` (our config, as shipped:
    channels-last, inference hooks), ``'mmseg'`` (mmseg's stock config) or ``'swapped'``
    (mmseg's stock config with only the backbone's type swapped to ``hrnet_mm.HRNet``)."""
    import mmseg

    from hrnet_mm.builder import build_model
    mine, stock = SEG_CONFIGS[which]
    path = (osp.join(REPO, mine) if source == 'ours' else
            osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', stock))
    options = dict(setting.model_options, **(options or {}))
    if source == 'swapped':
        options['model.backbone.type'] = 'hrnet_mm.HRNet'
    _, _, model = build_model(path, options)
    model.data_preprocessor.size = setting.train_size  # the size of the batches here
    return model.to(setting.device)


def scenes(n, size, seed, setting):
    """A data batch of ``n`` street scenes (``data_preprocessor`` input) and their labels."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from street_scenes import draw_scene
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for _ in range(n):
        img, lbl, _ = draw_scene(rng, *size)
        inputs.append(torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1))  # BGR, CHW
        s = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        s.gt_sem_seg = PixelData(data=torch.from_numpy(lbl.astype(np.int64))[None])
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def normalised(model, batch):
    with torch.no_grad():
        return model.data_preprocessor(copy.copy(batch), False)['inputs']


def rel_diff(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def row(rows, check, item, value, bound=None, ok=None, **extra):
    rows.append(dict(check=check, item=item, value=value, bound=bound, ok=ok, **extra))


# --- the checks --------------------------------------------------------------------------------

def check_exactness(setting, rows):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    from hrnet_mm.precision import device_of
    theirs = seg_model('w18', setting, 'mmseg')
    ours = seg_model('w18', setting, 'swapped')
    g = torch.Generator().manual_seed(0)
    for m in theirs.modules():  # norm statistics that matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    batch = scenes(2, setting.train_size, 1, setting)
    x = normalised(theirs, batch).to(device_of(theirs))
    for mode in ('eval', 'train'):
        outs = []
        for model in (ours, theirs):
            model.train(mode == 'train')
            with torch.no_grad():
                outs.append(model._forward(x))
        d = rel_diff(*outs)
        row(rows, 'a', f'W18 logits, {mode} mode, vs mmseg', d, EXACT, d <= EXACT)
    # buffers after one SGD step on the same batch (both models start from the same state)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    from mmengine.optim import OptimWrapper
    for model in (ours, theirs):
        model.train()
        model.train_step(copy.copy(batch), OptimWrapper(
            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)))
    a, b = dict(ours.named_buffers()), dict(theirs.named_buffers())
    worst = max((rel_diff(a[k].float(), b[k].float()), k) for k in b)
    row(rows, 'a', 'W18 buffers after a train step, vs mmseg (worst)', worst[0], EXACT,
        worst[0] <= EXACT, buffer=worst[1])
    torch.backends.cudnn.deterministic = False


def check_training(setting, rows):
    """Returns the bf16-trained model without with_cp, for (c)."""
    from hrnet_mm import MixedPrecisionOptimWrapper
    batch = scenes(2, setting.train_size, 2, setting)
    kept = None
    for dtype in setting.dtypes:
        for with_cp in (False, True):
            torch.manual_seed(0)
            model = seg_model('w18', setting, options={'model.backbone.with_cp': with_cp})
            model.train()
            wrapper = MixedPrecisionOptimWrapper(dtype=dtype, optimizer=torch.optim.SGD(
                model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4))
            losses = [model.train_step(copy.copy(batch), wrapper)['loss'].item()
                      for _ in range(setting.steps)]
            finite_stats = all(torch.isfinite(b).all().item() for n, b in model.named_buffers()
                               if 'running' in n)
            ok = (all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])
                  and finite_stats)
            scale = (wrapper.loss_scaler.get_scale() if wrapper.loss_scaler is not None
                     else None)
            cp_label = ' with_cp' if with_cp else ''
            row(rows, 'b', f'W18 {setting.steps} steps {dtype}{cp_label}: loss first -> last',
                f'{losses[0]:.3f} -> {losses[-1]:.3f}', 'finite, falling, statistics finite', ok,
                losses=losses, statistics_finite=finite_stats, loss_scale=scale)
            if dtype == 'bfloat16' and not with_cp:
                kept = model
    return kept


def check_inference(setting, rows, model):
    from hrnet_mm import prepare_for_inference
    from hrnet_mm.precision import device_of
    model.eval()
    x = normalised(model, scenes(2, setting.train_size, 3, setting)).to(device_of(model))
    reference = prepare_for_inference(model, precision='fp32')
    with torch.no_grad():
        ref = reference._forward(x)
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05 * ref.abs().amax(dim=1)
    for precision in setting.precisions:
        for compiled in setting.compiles:
            fast = prepare_for_inference(model, precision=precision, compile=compiled)
            with torch.no_grad():
                out = fast._forward(x)
            same = ref.argmax(1) == out.argmax(1)
            overall, on_clear = same.float().mean().item(), same[clear].float().mean().item()
            row(rows, 'c', f'W18 {precision} {"compiled" if compiled else "eager"}: argmax '
                'agreement with fp32 (clear pixels)', on_clear, CLEAR_AGREEMENT,
                on_clear >= CLEAR_AGREEMENT, overall=overall,
                clear_fraction=clear.float().mean().item())


def check_speed(setting, rows):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    from hrnet_mm import MixedPrecisionOptimWrapper, prepare_for_inference
    device = setting.device
    results = {}
    # W48 inference
    x = torch.randn(1, 3, *setting.infer_size, device=device)
    theirs = seg_model('w48', setting, 'mmseg').eval()
    systems = [('mmseg fp32 eager', lambda: theirs._forward(x))]
    if device.type == 'cuda':
        def amp():
            with torch.autocast('cuda', dtype=torch.float16):
                return theirs._forward(x)
        systems.append(('mmseg fp16 autocast (--amp)', amp))
    ours = seg_model('w48', setting).eval()
    compiled = setting.compiles[-1]
    fast = prepare_for_inference(ours, precision='auto', compile=compiled)
    systems.append((f'hrnet_mm {fast.inference_precision} {"compiled" if compiled else "eager"}',
                    lambda: fast._forward(x)))
    for name, fn in systems:
        with torch.no_grad():
            seconds, peak = timed(fn, setting)
        results[name] = seconds
        row(rows, 'd', f'W48 inference 1x3x{setting.infer_size[0]}x{setting.infer_size[1]}: '
            f'{name}', seconds, peak_mib=peak, unit='s')
    ours_name = systems[-1][0]
    systems.clear()  # the models go before the training rows
    theirs = ours = fast = None
    speedup = results['mmseg fp32 eager'] / results[ours_name]
    row(rows, 'd', 'W48 inference: hrnet_mm vs mmseg fp32 eager', speedup, INFERENCE_TARGET,
        None if setting.smoke else speedup >= INFERENCE_TARGET, unit='x')
    # W18 train step
    batch = scenes(setting.train_batch, setting.train_size, 4, setting)
    steps = {}

    def train_system(name, source, wrapper_of):
        torch.manual_seed(0)
        model = seg_model('w18', setting, source).train()
        wrapper = wrapper_of(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
        seconds, peak = timed(lambda: model.train_step(copy.copy(batch), wrapper), setting)
        steps[name] = (seconds, peak)
        row(rows, 'd', f'W18 train step, batch {setting.train_batch} at '
            f'{setting.train_size[0]}x{setting.train_size[1]}: {name}', seconds,
            peak_mib=peak, unit='s')
        model = wrapper = None
        if device.type == 'cuda':
            torch.cuda.empty_cache()

    train_system('mmseg fp32', 'mmseg', lambda o: OptimWrapper(optimizer=o))
    peer = 'mmseg fp32'
    if device.type == 'cuda':
        train_system('mmseg --amp (fp16)', 'mmseg',
                     lambda o: AmpOptimWrapper(optimizer=o, loss_scale='dynamic'))
        peer = 'mmseg --amp (fp16)'
    train_system('hrnet_mm auto', 'ours',
                 lambda o: MixedPrecisionOptimWrapper(dtype='auto', optimizer=o))
    speedup = steps[peer][0] / steps['hrnet_mm auto'][0]
    memory_ok = (steps['hrnet_mm auto'][1] is None
                 or steps['hrnet_mm auto'][1] <= steps[peer][1])
    row(rows, 'd', f'W18 train step: hrnet_mm vs {peer} (peak memory no higher)', speedup,
        TRAIN_TARGET, None if setting.smoke else speedup >= TRAIN_TARGET and memory_ok, unit='x',
        peak_mib=steps['hrnet_mm auto'][1], peer_peak_mib=steps[peer][1])


def check_ddp(setting, rows):
    if setting.device.type != 'cuda' or torch.cuda.device_count() < 2:
        row(rows, 'e', 'two-process DDP + SyncBN over NCCL', 'skipped', ok=None,
            reason=f'needs two GPUs; this host has {torch.cuda.device_count()}')
        return
    import mmseg
    from street_scenes import make_dataset
    work = tempfile.mkdtemp()
    data = osp.join(work, 'data')
    make_dataset(data, num_train=8, num_val=2, size=(256, 512), seed=0)
    train = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    args = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', train,
            osp.join(REPO, 'configs', 'demo_street_hrnet_w18_small.py'), '--launcher', 'pytorch',
            '--work-dir', osp.join(work, 'run'), '--cfg-options'] + [
        f'{s}_dataloader.dataset.data_root={data}' for s in ('train', 'val', 'test')] + [
        'train_cfg.max_iters=20', 'train_cfg.val_interval=20',
        'default_hooks.checkpoint.interval=20']
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=400)
    ckpt = osp.join(work, 'run', 'iter_20.pth')
    ok = proc.returncode == 0 and osp.exists(ckpt)
    if ok:
        from mmengine.runner import CheckpointLoader  # hrnet_mm's weights_only loader
        state = CheckpointLoader.load_checkpoint(ckpt, map_location='cpu')['state_dict']
        ok = all(torch.isfinite(v).all().item() for k, v in state.items() if 'running' in k)
    row(rows, 'e', 'two-process DDP + SyncBN over NCCL, 20 iterations', proc.returncode, 0, ok,
        log_tail=(proc.stdout + proc.stderr)[-2000:])


CHECKS = {'a': check_exactness, 'b': check_training, 'c': check_inference, 'd': check_speed,
          'e': check_ddp}


def environment(setting):
    from hrnet_mm.precision import describe
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                device=str(setting.device), smoke=setting.smoke)
    if setting.device.type == 'cuda':
        info.update(gpu=describe(setting.device), gpus=torch.cuda.device_count())
    else:
        info.update(cpu=describe('cpu'))
    return info


def show(value):
    if isinstance(value, float):
        return f'{value:.3g}'
    return str(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checks', nargs='+', choices=sorted(CHECKS), default=sorted(CHECKS))
    parser.add_argument('--out', default=osp.join('work_dirs', 'gpu_check.json'))
    parser.add_argument('--cpu-smoke', action='store_true',
                        help='toy sizes on the CPU, fp16 skipped (for the test suite)')
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print('gpu_check: this host has no CUDA device (torch.cuda.is_available() is False); '
              'nothing was checked. Run it on a machine with a GPU and a CUDA build of torch.')
        return 2
    setting = Setting(args.cpu_smoke)
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    import hrnet_mm  # noqa: F401  (registers the scope)
    rows, started = [], time.time()
    trained = None
    for name in args.checks:
        t = time.time()
        if name == 'c':
            trained = trained or check_training(setting, [])
            check_inference(setting, rows, trained)
        elif name == 'b':
            trained = check_training(setting, rows)
        else:
            CHECKS[name](setting, rows)
        print(f'[gpu_check] ({name}) done in {time.time() - t:.0f} s', file=sys.stderr)
    report = dict(environment=environment(setting), seconds=time.time() - started, rows=rows)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(f"gpu_check on {report['environment'].get('gpu') or report['environment']['cpu']}, "
          f"torch {torch.__version__}, {report['seconds']:.0f} s")
    print(f"{'check':5} {'what':80} {'value':>12} {'bound':>10}  ok")
    for r in rows:
        mark = {True: 'yes', False: 'NO', None: '-'}[r['ok']]
        print(f"{r['check']:5} {r['item'][:80]:80} {show(r['value']):>12} "
              f"{show(r['bound']) if r['bound'] is not None else '':>10}  {mark}")
    print(f'JSON: {args.out}')
    return 1 if any(r['ok'] is False for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
