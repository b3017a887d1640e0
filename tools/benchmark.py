"""Inference speed of a whole model against what a user would run instead, side by side.

    python tools/benchmark.py                                  # FCN-HRNetV2-W48, 1x3x512x1024
    python tools/benchmark.py --config configs/hrnet_w18_cityscapes.py --json out.json
    python tools/benchmark.py --pose                           # + pose W32 256x192, batch 32

One process, one input, the same weights everywhere; every round runs each system once, in an
order rotated from round to round, and the median and minimum over ``--rounds`` rounds are
reported with each system's start-up time (build, export or compile, and its first call) and
its argmax agreement with mmseg's float32 output. The systems:

* ``mmseg``: mmseg's own model for the same network (mmseg's HRNet, FCN head on the
  resized-and-concatenated streams), eager, float32, as shipped;
* ``mmseg+fused``: the same after mmcv's ``fuse_conv_bn`` and with channels-last weights (the
  generic speed-ups), eager and compiled;
* ``hrnet_mm``: ``hrnet_mm.prepare_for_inference`` at each precision, eager and compiled;
* ``onnxruntime``: our model exported to ONNX (``hrnet_mm.deploy.export_onnx``, which folds
  the norms and mixes the streams before resizing where ``prepare_for_inference`` does), CPU
  provider, all graph optimisations (float32: its CPU provider has no bf16 path);
* ``openvino``: the same ONNX model compiled by OpenVINO, float32 and, where the CPU has native
  bf16, bf16; int8 (``--precisions ... int8``): quantized by NNCF, its calibration counted in
  the start-up.

``--profile`` prints where one call's time goes: torch.profiler's operators for the hrnet_mm
rows, OpenVINO's per-op counters for its rows (by layer type and kernel: which layers run int8
kernels and which stay in floating point).

``--dynamo`` adds ONNX Runtime and OpenVINO on the graph ``torch.export`` captures
(``export_onnx(exporter='dynamo')``) beside the default trace's: the same speed, and the
start-up column shows each export's time.

``--unmixed`` adds hrnet_mm and OpenVINO with the streams concatenated before the head's 1x1
conv, as the model is written, to show what mixing before resizing gives each. Where mixing
before resizing applies to the model, the rows of hrnet_mm and its exports say whether they do
it (``mix_before_resize`` in the JSON); where it does not (W18: too little saving), they carry
no such field and ``--unmixed`` adds nothing.

The CPU's model and flags are printed; absolute times mean nothing across machines, the ratios
in one run do. The inference path keeps freed memory (see ``hrnet_mm.memory``), a
process-wide glibc setting, so every inference system runs under it; ``--glibc-defaults`` runs
them all with glibc's defaults instead. Weights are random with norm statistics gathered on the
input (so outputs have a realistic scale) unless ``--checkpoint`` is given.

``--train`` times mmengine's ``train_step`` of each training system in a process of its own,
stepping them in turn (rotated each round), so each runs with the allocator setting its users
get: mmseg as shipped with glibc's defaults, hrnet_mm's configs with freed memory kept
(``hrnet_mm.KeepFreedMemoryHook``, which leaves ``with_cp`` models alone), and mmseg with
kept memory as well, so that the allocator's share and the network's are told apart.
"""
import argparse
import copy
import json
import logging
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, osp.join(REPO, 'tools'))

FLAGS_OF_INTEREST = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16',
                     'amx_int8', 'avx512_fp16')


def cpu_info():
    from hrnet_mm.precision import cpu_flags, cpu_model
    return dict(model=cpu_model(), flags=[f for f in FLAGS_OF_INTEREST if f in cpu_flags()],
                cores=os.cpu_count())


def quiet_logs():
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.ERROR)
    import warnings
    warnings.filterwarnings('ignore')


def calibrate_norms(model, x):
    """Norm statistics of the data (cumulative average over a few passes), as a trained
    network has them, so eval-mode outputs are on a realistic scale."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model._forward(x) if hasattr(model, '_forward') else model(x)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


# --- the models ----------------------------------------------------------------------------

def build(cfg_model, scope):
    from hrnet_mm.builder import build_in_scope
    return build_in_scope(cfg_model, scope).eval()


def mmseg_equivalent(cfg_model, ours, with_cp=False):
    """mmseg's own FCN-HRNet for the network of our config: its HRNet with our stage table, no
    neck, and the head resizing and concatenating the streams itself."""
    theirs = copy.deepcopy(cfg_model)
    theirs.backbone = dict(type='HRNet', norm_cfg=cfg_model.backbone.norm_cfg, with_cp=with_cp,
                           extra={k: dict(v) for k, v in ours.backbone.stages_cfg.items()})
    theirs.pop('neck', None)
    theirs.decode_head.update(in_index=(0, 1, 2, 3), input_transform='resize_concat',
                              in_channels=list(ours.backbone.out_channels))
    return theirs


def seg_pair(config, checkpoint, x):
    """(mmseg's model, ours) for a seg config of ours, with the same weights."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.model.pop('pretrained', None)
    ours = build(copy.deepcopy(cfg.model), 'mmseg')
    theirs = build(mmseg_equivalent(cfg.model, ours), 'mmseg')
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(theirs, checkpoint, map_location='cpu')
    else:
        torch.manual_seed(0)
        theirs = calibrate_norms(theirs, x)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours.eval()


def pose_pair(x):
    """(mmpose's stock HRNet-W32 top-down model, ours from configs/), the same weights."""
    from mmengine.config import Config
    from mmengine.hub import get_config
    theirs_cfg = get_config('mmpose::body_2d_keypoint/topdown_heatmap/coco/'
                            'td-hm_hrnet-w32_8xb64-210e_coco-256x192.py')
    theirs_cfg.model.backbone.init_cfg = None
    theirs = calibrate_norms(build(theirs_cfg.model, 'mmpose'), x)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'hrnet_w32_coco_256x192.py'))
    cfg.model.backbone.init_cfg = None
    ours = build(cfg.model, 'mmpose')
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours.eval()


def scene(size, seed=0):
    """A procedural street scene, normalised as the configs' data preprocessor does."""
    from street_scenes import draw_scene
    img = draw_scene(np.random.default_rng(seed), *size)[0].astype(np.float32)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    return torch.from_numpy(((img - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]


# --- the systems ---------------------------------------------------------------------------

class System:
    def __init__(self, name, precision, compiled, make, mix=None, exporter=None):
        self.name, self.precision, self.compiled, self.make = name, precision, compiled, make
        # hrnet_mm and its exports, where the model's streams can be mixed before resizing:
        # whether this row does; None otherwise
        self.mix = mix
        self.exporter = exporter  # an export's, where --dynamo asks for both
        self.times, self.run, self.out = [], None, None

    @property
    def label(self):
        return row_label(dict(name=self.name, precision=self.precision, compiled=self.compiled,
                              mix_before_resize=self.mix, exporter=self.exporter))

    def start(self, x):
        t = time.perf_counter()
        self.run = self.make()
        with torch.no_grad():
            out = self.run(x)
        self.startup_s = time.perf_counter() - t
        self.out = out[0] if isinstance(out, (list, tuple)) else out


def seg_systems(ref, ours, x, args, tmp):
    from mmcv.cnn import fuse_conv_bn

    from hrnet_mm import fold_batch_norms, mix_streams_before_resize, prepare_for_inference
    from hrnet_mm.deploy import Runtime, export_onnx, to_openvino
    from hrnet_mm.inference import compile_frozen
    from hrnet_mm.rewrites import streams_mixed
    from hrnet_mm.precision import native_bf16
    precisions = [p for p in args.precisions
                  if p == 'fp32' or (p == 'bf16' and native_bf16(x.device))]
    # whether the defaults mix the streams before resizing (a row field only where they do)
    mixes = streams_mixed(mix_streams_before_resize(fold_batch_norms(copy.deepcopy(ours))))
    mixed = True if mixes else None
    if args.unmixed and not mixes:
        print('--unmixed: this model keeps its streams concatenated before the 1x1 conv '
              '(mixing before resizing saves too little); no extra rows')

    def mmseg_fused(compiled):
        def make():
            m = fuse_conv_bn(copy.deepcopy(ref)).to(memory_format=torch.channels_last)
            fn = m._forward
            if compiled:
                fn = compile_frozen(fn)
            return lambda t: fn(t.contiguous(memory_format=torch.channels_last))
        return make

    def ours_at(precision, compiled, mix=True):
        def make():
            m = prepare_for_inference(ours, precision=precision, compile=compiled,
                                      mix_before_resize=mix)
            return m._forward
        return make

    systems = [System('mmseg', 'fp32', False, lambda: ref._forward)]
    compile_opts = [False, True] if args.compile else [False]
    systems += [System('mmseg+fused', 'fp32', c, mmseg_fused(c)) for c in compile_opts]
    systems += [System('hrnet_mm', p, c, ours_at(p, c), mix=mixed)
                for p in precisions for c in compile_opts]
    if args.unmixed and mixes:
        systems += [System('hrnet_mm', p, compile_opts[-1], ours_at(p, compile_opts[-1], False),
                           mix=False) for p in precisions]
    if args.runtimes:
        systems += exported_systems(ours, 'seg', x, args, tmp, precisions, mixed)
        if args.unmixed and mixes:
            systems += [System('openvino', p, False,
                               exported(ours, 'seg', x, tmp, 'openvino', p, fold=False),
                               mix=False) for p in precisions]
    return systems


def exported(ours, task, x, tmp, backend, precision, fold=True, calib=0,
             exporter='torchscript'):
    """A system's ``make``: our model exported (once per ``fold`` and ``exporter``), on
    ``backend`` at ``precision``; int8: quantized by NNCF on ``calib`` street scenes of the
    input's size (the calibration is part of the start-up)."""
    from hrnet_mm.deploy import Runtime, export_onnx, quantize_openvino, to_openvino

    def make():
        onnx_path = osp.join(tmp, f"{task}{'' if fold else '_unfolded'}_{exporter}.onnx")
        if not osp.exists(onnx_path):
            export_onnx(ours, task, onnx_path, x, fold=fold, exporter=exporter)
        path = onnx_path
        if backend == 'openvino':
            path = onnx_path[:-len('.onnx')] + '.xml'
            if not osp.exists(path):
                to_openvino(onnx_path, path)
        if precision == 'int8':
            calibration = [scene(tuple(x.shape[-2:]), seed=100 + i).numpy()
                           for i in range(calib)]
            int8_path = path[:-len('.xml')] + '_int8.xml'
            quantize_openvino(path, calibration, int8_path)
            path = int8_path
        runtime = Runtime(backend, path, precision, threads=torch.get_num_threads())

        def run(t):
            return runtime(t)[0]
        run.runtime = runtime  # for --profile
        return run
    return make


def runtime_precisions(args, precisions):
    """OpenVINO's precisions for this run: ``precisions`` (fp32, bf16 where native) and
    int8 when asked for and NNCF is installed."""
    out = list(precisions)
    if 'int8' in args.precisions:
        try:
            import nncf  # noqa: F401
            out.append('int8')
        except ImportError:
            print('int8: NNCF is not installed (pip install .[deploy]); no int8 rows')
    return out


def exported_systems(ours, task, x, args, tmp, precisions, mixed=None):
    """ONNX Runtime (fp32) and OpenVINO (each precision, int8 included) on our export; with
    ``--dynamo``, on the default trace's export and then on torch.export's."""
    from hrnet_mm.deploy import EXPORTERS
    systems = []
    for exporter in EXPORTERS if args.dynamo else ('torchscript', ):
        label = exporter if args.dynamo else None
        systems += [System('onnxruntime', 'fp32', False,
                           exported(ours, task, x, tmp, 'onnxruntime', 'fp32',
                                    exporter=exporter), mix=mixed, exporter=label)] + [
            System('openvino', p, False, exported(ours, task, x, tmp, 'openvino', p,
                                                  calib=args.calib, exporter=exporter),
                   mix=mixed, exporter=label)
            for p in runtime_precisions(args, precisions)]
    return systems


def pose_systems(ref, ours, x, args, tmp):
    from hrnet_mm import prepare_for_inference
    from hrnet_mm.precision import native_bf16
    precisions = [p for p in args.precisions
                  if p == 'fp32' or (p == 'bf16' and native_bf16(x.device))]
    compile_opts = [False, True] if args.compile else [False]

    def ours_at(precision, compiled):
        return lambda: prepare_for_inference(ours, precision=precision, compile=compiled)._forward
    systems = [System('mmpose', 'fp32', False, lambda: ref._forward)] + [
        System('hrnet_mm', p, c, ours_at(p, c)) for p in precisions for c in compile_opts]
    if args.runtimes:
        systems += exported_systems(ours, 'pose', x, args, tmp, precisions)
    return systems


def profiles(systems, x):
    """A profile of one call of each hrnet_mm system (compiled ones: the oneDNN convolutions
    against inductor's generated kernels, ``Call CompiledFxGraph``) and OpenVINO's per-op
    counters of each OpenVINO system (layer type and kernel: what runs int8 kernels and what
    stays in floating point)."""
    out = {}
    for s in systems:
        if s.name == 'hrnet_mm':
            with torch.no_grad():
                out[s.label] = profile(lambda: s.run(x))
        elif s.name == 'openvino':
            out[s.label] = s.run.runtime.op_counters(x)
        else:
            continue
        report_profile(s.label, out[s.label])
    return out


def measure(systems, x, rounds, task):
    for s in systems:
        print(f'  starting {s.label} ...', flush=True)
        s.start(x)
    for r in range(rounds):
        for i in range(len(systems)):
            s = systems[(i + r) % len(systems)]
            t = time.perf_counter()
            with torch.no_grad():
                s.run(x)
            s.times.append(time.perf_counter() - t)
    from hrnet_mm.deploy import agreement
    rows = []
    for s in systems:
        diff, _, agree = agreement([systems[0].out], [s.out], task)
        rows.append(dict(name=s.name, precision=s.precision, compiled=s.compiled,
                         median_s=statistics.median(s.times), min_s=min(s.times),
                         startup_s=s.startup_s, argmax_agreement=agree, max_abs_diff=diff))
        if s.mix is not None:
            rows[-1]['mix_before_resize'] = s.mix
        if s.exporter is not None:
            rows[-1]['exporter'] = s.exporter
    return rows


# --- training -------------------------------------------------------------------------------

def train_batch(size, batch, num_classes=19):
    """A batch as mmseg's data loader gives it: uint8 images and label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from street_scenes import draw_scene
    inputs, samples = [], []
    for i in range(batch):
        img, lbl, _ = draw_scene(np.random.default_rng(100 + i), *size)
        inputs.append(torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1))
        sample = SegDataSample(metainfo=dict(img_shape=tuple(size), ori_shape=tuple(size),
                                             pad_shape=tuple(size)))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(lbl.astype(np.int64))[None])
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def train_model(side, config, precision, with_cp):
    """(model, optim_wrapper) for one training system: mmseg's model or ours."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(config)
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.with_cp = with_cp
    model = build(copy.deepcopy(cfg.model), 'mmseg')
    if side == 'mmseg':
        model = build(mmseg_equivalent(cfg.model, model, with_cp), 'mmseg')
    torch.manual_seed(0)
    model.train()
    optim = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1e-4, momentum=0.9))
    if precision == 'bf16':
        optim = dict(type='hrnet_mm.MixedPrecisionOptimWrapper', dtype='bfloat16',
                     optimizer=optim['optimizer'])
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(model, optim)
    return model, wrapper


def _train_setup(system, args):
    """(model, optim_wrapper, batch) for ``system`` in this process, with its allocator."""
    side, precision, with_cp, _, kept = system
    if kept:
        from hrnet_mm.memory import keep_freed_memory
        keep_freed_memory()
    model, wrapper = train_model(side, args.train_config, precision, with_cp)
    return model, wrapper, train_batch(args.train_size, args.train_batch)


def _step_fn(system, args):
    """(startup seconds, peak bytes, a function running one training step) for ``system``,
    built here. The warm-up step is the process's first, a cold one: its peak resident-size
    growth is the system's peak memory (None for a compiled system, whose warm-up compiles)."""
    t = time.perf_counter()
    model, wrapper, data = _train_setup(system, args)
    compiled = system[3]
    if compiled:  # the model's forward and loss; backward through AOTAutograd
        model.loss = torch.compile(model.loss)
        model.train_step(data, wrapper)  # warm-up and compilation
        peak = None
    else:
        peak = _cold_step_peak(model, wrapper, data)
    return time.perf_counter() - t, peak, lambda: model.train_step(data, wrapper)


def _cold_step_peak(model, wrapper, data):
    """Run one training step; the peak growth of the process's resident size over it (bytes),
    sampled every millisecond."""
    import threading
    page = os.sysconf('SC_PAGE_SIZE')

    def rss():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * page
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)
    before = rss()
    sampler = threading.Thread(target=sample)
    sampler.start()
    model.train_step(data, wrapper)
    done.set()
    sampler.join()
    return max(peak[0], rss()) - before


def train_worker(system, args, conn):
    """Child process: one training system, stepping when the parent says so (its allocator
    setting is its own: glibc's settings are process-wide)."""
    quiet_logs()
    torch.set_num_threads(args.threads)
    startup, peak, step = _step_fn(system, args)
    conn.send([startup, peak])
    while True:
        try:
            command = conn.recv()
        except EOFError:  # the parent is done
            return
        if command == 'step':
            t = time.perf_counter()
            step()
            conn.send(time.perf_counter() - t)
        elif command == 'profile':
            conn.send(profile(step))


def train_probe(args):
    """Child process, for use by hand: peak resident-size growth over one cold training step
    (bytes), as the training rows report it."""
    quiet_logs()
    torch.set_num_threads(args.threads)
    model, wrapper, data = _train_setup(json.loads(args.train_probe), args)
    print('RESULT', json.dumps(_cold_step_peak(model, wrapper, data)))


# What every training process imports, loaded once into multiprocessing's fork server: each
# worker starts as a fork of it, without the seconds of imports a fresh interpreter spends
# (the server runs no torch operation, so no thread pool is forked half-way).
WORKER_IMPORTS = ['hrnet_mm', 'mmengine.optim', 'mmengine.runner', 'mmseg.models',
                  'mmseg.engine', 'mmseg.structures']


def _worker_context():
    import multiprocessing
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload(WORKER_IMPORTS)
    return context


class TrainWorker:
    """A training system in its own process, so that each runs with its own allocator: a
    fork of a server that holds the imports, started fresh from the interpreter (glibc's
    defaults; nothing of this process's allocator setting)."""

    def __init__(self, system, args, context):
        self.system = system
        self.conn, child = context.Pipe()
        work = argparse.Namespace(**{k: getattr(args, k) for k in (
            'train_config', 'train_size', 'train_batch', 'threads')})
        self.proc = context.Process(target=train_worker, args=(system, work, child))
        self.proc.start()
        child.close()
        self.startup, peak = self._result()
        self.peak_mib = None if peak is None else peak / 2 ** 20
        self.times = []

    def _result(self):
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            raise RuntimeError(f'training worker {self.system} exited {self.proc.exitcode}')

    def ask(self, command):
        self.conn.send(command)
        return self._result()

    def close(self):
        self.conn.close()
        self.proc.join()


def train_systems(args):
    """(side, precision, with_cp, compiled, kept): each system as its users run it. mmseg as
    shipped keeps glibc's defaults; hrnet_mm's configs keep freed memory
    (``hrnet_mm.KeepFreedMemoryHook``); mmseg with kept memory too, so that the difference
    the allocator makes is measured apart from the network's. ``--glibc-defaults``: every
    system with glibc's defaults."""
    from hrnet_mm.precision import native_bf16
    ours = not args.glibc_defaults
    best = 'bf16' if 'bf16' in args.precisions and native_bf16(torch.device('cpu')) else 'fp32'
    systems = [('mmseg', 'fp32', False, False, False)]
    if ours:
        systems.append(('mmseg', 'fp32', False, False, True))
    systems.append(('hrnet_mm', 'fp32', False, False, ours))
    if best == 'bf16':
        systems.append(('hrnet_mm', 'bf16', False, False, ours))
    if args.train_compiled:
        systems.append(('hrnet_mm', best, False, True, ours))
    # (KeepFreedMemoryHook leaves a with_cp model's allocator as it is)
    systems += [('mmseg', 'fp32', True, False, False), ('hrnet_mm', 'fp32', True, False, False)]
    return systems


def train_rows(args):
    workers, context = [], _worker_context()
    try:
        for system in train_systems(args):
            side, precision, with_cp, compiled, kept = system
            print(f'  starting training: {side} {precision}{" with_cp" if with_cp else ""}'
                  f'{" compiled" if compiled else ""}{" kept memory" if kept else ""} ...',
                  flush=True)
            workers.append(TrainWorker(system, args, context))
        for r in range(args.train_rounds):
            for i in range(len(workers)):
                w = workers[(i + r) % len(workers)]
                w.times.append(w.ask('step'))
        if args.profile:
            for w in workers:
                side, precision, with_cp, compiled, _ = w.system
                if side == 'hrnet_mm' and not (with_cp or compiled):
                    label = f'training step, hrnet_mm {precision}'
                    args.train_profiles[label] = w.ask('profile')
                    report_profile(label, args.train_profiles[label])
    finally:
        for w in workers:
            w.close()
    rows = []
    for w in workers:
        side, precision, with_cp, compiled, kept = w.system
        # (a compiled system's peak is not measured: its cold step compiles)
        rows.append(dict(name=side, precision=precision, with_cp=with_cp, compiled=compiled,
                         allocator='kept' if kept else 'glibc',
                         median_s=statistics.median(w.times), min_s=min(w.times),
                         startup_s=w.startup, peak_mib=w.peak_mib))
    return rows


def report_train(title, rows):
    """Each row against mmseg as shipped (the first row) and against mmseg with the same
    allocator setting."""
    base = rows[0]['median_s']
    same = {r['allocator']: r['median_s'] for r in rows
            if r['name'] == 'mmseg' and not r['with_cp'] and not r['compiled']}
    print(f'\n{title}')
    print(f"{'system':34}{'allocator':>10}{'median s':>10}{'min s':>9}{'vs mmseg':>10}"
          f"{'vs mmseg, same allocator':>26}{'start-up s':>12}{'peak MiB':>10}")
    for r in rows:
        label = (f"{r['name']} {r['precision']}{' with_cp' if r['with_cp'] else ''}"
                 f"{' compiled' if r['compiled'] else ''}")
        peak = '-' if r['peak_mib'] is None else f"{r['peak_mib']:.0f}"
        print(f"{label:34}{r['allocator']:>10}{r['median_s']:10.3f}{r['min_s']:9.3f}"
              f"{base / r['median_s']:9.2f}x{same[r['allocator']] / r['median_s']:25.2f}x"
              f"{r['startup_s']:12.1f}{peak:>10}")


# --- batch norms ----------------------------------------------------------------------------

def norm_rows(args):
    """Training forward + backward of one batch norm on a channels-last tensor: torch's kernel
    against hrnet_mm's wide view, per stream of W18/W30/W40 (2 images, 512x1024 input); and,
    for reference, torch's kernel on a contiguous tensor of the same values."""
    from hrnet_mm.models import norms
    rows = []
    for channels, stride in ((18, 4), (36, 8), (72, 16), (30, 4), (60, 8), (40, 4), (48, 4)):
        h, w = args.train_size[0] // stride, args.train_size[1] // stride
        for precision in [p for p in args.precisions if p in ('fp32', 'bf16')]:
            dtype = torch.float32 if precision == 'fp32' else torch.bfloat16
            g = torch.Generator().manual_seed(0)
            x = torch.randn(args.train_batch, channels, h, w, generator=g).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
            dy = torch.randn(x.shape, generator=g).to(dtype)
            dy = dy.contiguous(memory_format=torch.channels_last)
            xc = x.detach().contiguous().requires_grad_()
            calls = dict(torch=(lambda m: m(x), dy),
                         wide=(lambda m: norms.batch_norm_forward(m, x), dy),
                         contiguous=(lambda m: m(xc), dy.contiguous()))
            norm = torch.nn.BatchNorm2d(channels).train()
            times = {k: [] for k in calls}
            for r in range(args.rounds * 3 + 2):
                for name in list(calls)[r % 3:] + list(calls)[:r % 3]:
                    forward, grad = calls[name]
                    t = time.perf_counter()
                    forward(norm).backward(grad)
                    times[name].append(time.perf_counter() - t)
            med = {k: statistics.median(v[2:]) for k, v in times.items()}
            rows.append(dict(channels=channels, size=[args.train_batch, h, w], precision=precision,
                             torch_ms=1e3 * med['torch'], wide_ms=1e3 * med['wide'],
                             contiguous_ms=1e3 * med['contiguous'],
                             used=norms.applies(norm, x.detach())))
    print(f'\nbatch norm, training forward + backward, channels-last, batch {args.train_batch}')
    print(f"{'channels':>9}{'H x W':>11}{'precision':>10}{'torch ms':>10}{'wide ms':>9}"
          f"{'speed-up':>10}{'used':>6}{'contiguous ms':>15}")
    for r in rows:
        print(f"{r['channels']:9}{r['size'][1]:6}x{r['size'][2]:<4}{r['precision']:>10}"
              f"{r['torch_ms']:10.2f}{r['wide_ms']:9.2f}{r['torch_ms'] / r['wide_ms']:9.2f}x"
              f"{'yes' if r['used'] else 'no':>6}{r['contiguous_ms']:15.2f}")
    return rows


def profile(fn, top=8):
    """Where one call's time goes: the operators with the largest self CPU time, as shares."""
    with torch.profiler.profile() as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return dict(total_ms=total / 1e3, ops=[dict(op=e.key, self_ms=e.self_cpu_time_total / 1e3,
                                                 share=e.self_cpu_time_total / total,
                                                 calls=e.count) for e in ranked])


def report_profile(title, prof):
    print(f"\nprofile: {title} ({prof['total_ms']:.0f} ms in all)")
    for op in prof['ops']:
        print(f"  {op['op']:42}{op['self_ms']:9.0f} ms{100 * op['share']:6.1f}%  x{op['calls']}")


def row_label(r):
    return (f"{r['name']} {r['precision']}{' compiled' if r['compiled'] else ''}"
            f"{' concat-then-mix' if r.get('mix_before_resize') is False else ''}"
            f"{' (torch.export)' if r.get('exporter') == 'dynamo' else ''}")


def report(title, rows):
    base = rows[0]['median_s']
    print(f'\n{title}')
    print(f"{'system':42}{'median s':>10}{'min s':>9}{'vs ' + rows[0]['name']:>11}"
          f"{'start-up s':>12}{'argmax agree':>14}")
    for r in rows:
        label = row_label(r)
        print(f"{label:42}{r['median_s']:10.3f}{r['min_s']:9.3f}{base / r['median_s']:10.2f}x"
              f"{r['startup_s']:12.1f}{100 * r['argmax_agreement']:13.3f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=osp.join(REPO, 'configs', 'hrnet_w48_cityscapes.py'))
    parser.add_argument('--checkpoint', help='trained weights (default: random, calibrated)')
    parser.add_argument('--size', type=int, nargs=2, default=[512, 1024], metavar=('H', 'W'))
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16', 'int8'],
                        choices=['fp32', 'bf16', 'int8'],
                        help='bf16 runs where the CPU has it natively; int8 is OpenVINO only '
                        '(NNCF)')
    parser.add_argument('--calib', type=int, default=8,
                        help='int8 calibration images (street scenes of the input size)')
    parser.add_argument('--no-compile', dest='compile', action='store_false',
                        help='skip the compiled rows (compiling W48 takes minutes on 2 cores)')
    parser.add_argument('--no-runtimes', dest='runtimes', action='store_false',
                        help='skip ONNX Runtime and OpenVINO')
    parser.add_argument('--no-seg', dest='seg', action='store_false')
    parser.add_argument('--unmixed', action='store_true',
                        help='also hrnet_mm (compiled if compiling) and OpenVINO with the '
                        'streams concatenated before the head\'s 1x1 conv, as the model is '
                        'written (mix_before_resize=False; export with fold=False)')
    parser.add_argument('--dynamo', action='store_true',
                        help="also ONNX Runtime and OpenVINO on torch.export's graph "
                        "(export_onnx(exporter='dynamo')), beside the default trace's; the "
                        'start-up column holds each export')
    parser.add_argument('--pose', action='store_true', help='also pose W32 256x192, batch 32')
    parser.add_argument('--pose-batch', type=int, default=32)
    parser.add_argument('--glibc-defaults', action='store_true',
                        help="keep glibc's allocator defaults for every system")
    parser.add_argument('--train', action='store_true',
                        help='also time a training step (mmengine train_step: data '
                        'preprocessor, loss, backward, SGD) and its peak memory')
    parser.add_argument('--train-config', default=osp.join(REPO, 'configs',
                                                           'hrnet_w18_cityscapes.py'))
    parser.add_argument('--train-size', type=int, nargs=2, default=[512, 1024])
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--train-rounds', type=int, default=5)
    parser.add_argument('--train-compiled', action='store_true',
                        help='also a compiled training step (minutes of compilation)')
    parser.add_argument('--norms', action='store_true',
                        help="also time the channels-last training batch norm (torch's "
                        "kernel against hrnet_mm's wide view) at the training size")
    parser.add_argument('--profile', action='store_true',
                        help="print where the time of our rows goes (torch.profiler; "
                             "OpenVINO's per-op counters for its rows)")
    parser.add_argument('--train-probe', help=argparse.SUPPRESS)  # internal: memory child
    parser.add_argument('--json', help='write the figures here')
    args = parser.parse_args()
    if args.train_probe:
        return train_probe(args)
    quiet_logs()
    torch.set_num_threads(args.threads)
    if not args.glibc_defaults:
        from hrnet_mm.memory import keep_freed_memory
        keep_freed_memory()
    else:  # prepare_for_inference must not change it either
        import hrnet_mm.inference as inference
        inference.keep_freed_memory = lambda: False
    cpu = cpu_info()
    result = dict(cpu=cpu, threads=args.threads, torch=torch.__version__,
                  date=time.strftime('%Y-%m-%d'), rounds=args.rounds,
                  keep_freed_memory=not args.glibc_defaults,
                  command=' '.join(['python', 'tools/benchmark.py'] + sys.argv[1:]))
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['flags'])}), "
          f"{args.threads} threads, torch {torch.__version__}")
    if args.seg:
        x = scene(args.size)
        ref, ours = seg_pair(args.config, args.checkpoint, x)
        with tempfile.TemporaryDirectory() as tmp:
            systems = seg_systems(ref, ours, x, args, tmp)
            rows = measure(systems, x, args.rounds, 'seg')
            result.update(config=osp.relpath(args.config, REPO), size=args.size, systems=rows)
            report(f'{osp.basename(args.config)}, whole model, 1x3x{args.size[0]}x'
                   f'{args.size[1]}, {args.rounds} rounds', rows)
            if args.profile:
                result['profiles'] = profiles(systems, x)
            del systems
        del ref, ours
    if args.pose:
        x = torch.cat([scene((256, 192), seed=i) for i in range(args.pose_batch)])
        ref, ours = pose_pair(x)
        with tempfile.TemporaryDirectory() as tmp:
            rows = measure(pose_systems(ref, ours, x, args, tmp), x, args.rounds, 'pose')
        result['pose'] = dict(config='configs/hrnet_w32_coco_256x192.py', size=[256, 192],
                              batch=args.pose_batch, systems=rows)
        report(f'pose HRNet-W32, 256x192, batch {args.pose_batch}', rows)
    if args.train:
        args.train_profiles = {}
        rows = train_rows(args)
        result['train'] = rows
        if args.profile:
            result['train_profiles'] = args.train_profiles
        result['train_setup'] = dict(config=osp.relpath(args.train_config, REPO),
                                     size=args.train_size, batch=args.train_batch)
        report_train(f'training step, {osp.basename(args.train_config)}, batch '
                     f'{args.train_batch}, {args.train_size[0]}x{args.train_size[1]}', rows)
    if args.norms:
        result['norms'] = norm_rows(args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
