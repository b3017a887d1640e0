import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MMLogger

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The procedural street scenes live beside the demo, in tools/.
sys.path.insert(0, osp.join(REPO, 'tools'))

# mmengine logs one line per initialised parameter; keep test output readable.
MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
# Parallel workers (pytest-xdist, tools/test.sh) share the cores: each worker's torch, and the
# commands it runs (cli_env), get their share.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
torch.set_num_threads(THREADS)


def _read_each_metafile_once():
    """mmengine resolves each ``mmX::`` base of a config by parsing every metafile of that
    toolbox (0.07-0.15 s of YAML) before it looks in the toolbox's ``_base_`` folder, so each
    load of one of our seg configs parses all of mmseg's three times: 23 s of the quick tier.
    The installed metafiles do not change while the tests run, so each process parses each one
    once (the file reader mmengine's config resolution calls, and only that, is memoised;
    mmengine parses and merges the configs themselves as always). Commands the tests run
    (:func:`run_cli`) resolve configs as a user's would."""
    import functools

    from mmengine.config import utils
    if not hasattr(utils.load, 'cache_info'):
        utils.load = functools.lru_cache(maxsize=None)(utils.load)


_read_each_metafile_once()


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: trains, exports, benchmarks or runs several processes of its own (the '
        'quick tier is -m "not slow")')
    config.addinivalue_line(
        'markers', 'cuda: its subject is a CUDA GPU; skipped with the reason on a host without')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='its subject is a CUDA GPU and this host has none')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def on_the_cpu_unless_marked_cuda(request, monkeypatch):
    """Every test not marked ``cuda`` has the CPU for its subject, on any host. mmengine's Runner
    puts the model on the GPU whenever the host has one (``get_device``, decided when mmengine is
    imported), so on a CUDA host the Runner here is pinned to the CPU; commands run by
    :func:`run_cli` see no GPU."""
    if 'cuda' not in request.keywords:
        import mmengine.runner.runner as runner_module
        monkeypatch.setattr(runner_module, 'get_device', lambda: 'cpu')
    yield


@pytest.fixture(autouse=True)
def outside_any_toolbox_scope():
    """Each test starts outside any toolbox's registry scope. mmengine's current scope is
    process-wide and outlives the test that set it; it decides hrnet_mm.HRNet's defaults
    (compat='auto'), so a scope left by an earlier test would change a later one."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmengine'):
        yield


# A few channels wide, two modules in stages 3 and 4 (so multiscale_output=False touches only
# the last one), uneven block counts: every part of HRNet at a fraction of the cost.
TINY_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(1,),
                num_channels=(8,)),
    stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(1, 1),
                num_channels=(4, 8)),
    stage3=dict(num_modules=2, num_branches=3, block='BASIC', num_blocks=(1, 2, 1),
                num_channels=(4, 8, 16)),
    stage4=dict(num_modules=2, num_branches=4, block='BASIC', num_blocks=(1, 1, 2, 1),
                num_channels=(4, 8, 16, 32)))


# Overrides of a preset's ``extra``: one exchange unit per stage, one block per stream. Every
# stream, width, norm and kind of resize of the preset stays, for the checks whose subject is
# not the depth (W48: 8.0 M of its 65.3 M weights).
ONE_UNIT_PER_STAGE = {f'stage{i}': dict(num_modules=1, num_blocks=(1, ) * i) for i in range(1, 5)}


def quiet(module):
    """``init_weights`` without mmengine's per-parameter log lines."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        module.init_weights()
    finally:
        logger.setLevel(level)
    return module


def build_model(path, options=None):
    """``(cfg, model)`` for a config of ours, built as the tools build it
    (:func:`hrnet_mm.builder.build_model`: no pretrained weights, eval mode), its weights
    initialised as the Runner would; ``options`` as ``--cfg-options`` (dotted keys)."""
    from hrnet_mm.builder import build_model as build
    cfg, _, model = build(path, options)
    assert cfg.custom_imports['imports'] == ['hrnet_mm']
    return cfg, quiet(model)


def build_random(path, options=None, seed=0):
    """``(cfg, model)`` for a config of ours with random weights, in eval mode, for what
    compares two computations of one network (rewrites, exports): built without the seconds
    of initialisation a W48 takes (:func:`hrnet_mm.builder.build_model_shapes`), every weight
    drawn uniformly at He scale (``sqrt(6 / fan_in)``), biases and buffers zero, then
    :func:`randomize_norms`."""
    from hrnet_mm.builder import build_model_shapes
    cfg, _, model = build_model_shapes(path, options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                bound = (6 / p[0].numel()) ** 0.5
                p.uniform_(-bound, bound, generator=g)
            else:
                p.zero_()
        for b in model.buffers():
            b.zero_()
    return cfg, randomize_norms(model, seed).eval()


def averaging_weights(model):
    """``model`` (built on the meta device or not) with the cheapest weights that keep every
    activation in range, for checks of shapes and finite values: each weight tensor
    ``1 / fan_in`` (a conv averages its inputs), other parameters and buffers zero, norms the
    identity (weight and running variance 1)."""
    if any(t.is_meta for t in model.state_dict().values()):
        model.to_empty(device='cpu')
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1 / p[0].numel() if p.dim() > 1 else 0)
        for b in model.buffers():
            b.zero_()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._NormBase):
                if m.weight is not None:
                    m.weight.fill_(1)
                if m.running_var is not None:
                    m.running_var.fill_(1)
    return model


def randomize_norms(model, seed=0):
    """Non-trivial norm parameters and running statistics, so every buffer matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def cli_env(gpus=False):
    """The environment of a command a test runs: this venv's tools first on PATH, unbuffered
    output, and no GPU visible unless ``gpus`` (the suite's subject is the CPU)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if WORKERS > 1:
        env['OMP_NUM_THREADS'] = str(THREADS)
    if not gpus:
        env['CUDA_VISIBLE_DEVICES'] = ''
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


def run_cli(args, cwd=REPO, timeout=900, gpus=False):
    """Run a command line as a user would (:func:`cli_env`); fail the test with its output if
    it fails."""
    env = cli_env(gpus)
    proc = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}')
    return proc.stdout


def run_tool_main(path, args, monkeypatch):
    """``python PATH ARGS`` in this process: the tool's own ``main``, with its argument parsing
    and its exits, without the seconds of imports a second interpreter spends. Returns
    ``(exit, tool)``: ``exit`` is 0 when ``main`` returns, else what ``sys.exit`` was given (a
    message, printed to stderr with status 1, or a status); ``tool`` is the tool's module
    namespace."""
    import runpy
    monkeypatch.setattr(sys, 'argv', [str(path)] + [str(a) for a in args])
    monkeypatch.setattr(sys, 'path', list(sys.path))  # a tool may put its repository on it
    tool = runpy.run_path(str(path))
    try:
        tool['main']()
    except SystemExit as stop:
        return stop.code, tool
    return 0, tool


def toolbox_tool(package, *parts):
    """The path of a toolbox's own tool, as mim runs it: ``<package>/.mim/tools/PARTS``
    (``package`` as imported: ``'mmseg'``, ``'mmpose'``, ``'mmdet'``)."""
    import importlib
    return osp.join(osp.dirname(importlib.import_module(package).__file__), '.mim', 'tools',
                    *parts)


def run_tool(path, args):
    """``python PATH ARGS`` as :func:`run_cli` runs it, in this process (:func:`run_tool_main`,
    for session fixtures too): what it printed; the test fails with it if the tool exits
    with an error."""
    import contextlib
    import io
    printed = io.StringIO()
    environ = dict(os.environ)  # (a tool may set variables, e.g. the toolboxes' LOCAL_RANK)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(printed):
            code, _ = run_tool_main(path, args, monkeypatch)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    if code not in (0, None):
        pytest.fail(f'{path} {" ".join(map(str, args))} exited {code}:\n'
                    f'{printed.getvalue()[-6000:]}')
    return printed.getvalue()


@pytest.fixture(scope='session')
def street_data(tmp_path_factory):
    """A small copy of the procedural Cityscapes-layout dataset (8 train, 4 val images)."""
    from street_scenes import make_dataset
    root = tmp_path_factory.mktemp('street')
    make_dataset(str(root), num_train=8, num_val=4, size=(128, 256), seed=1)
    return str(root)


def data_options(root):
    """``--cfg-options`` pointing a street-scenes config's three dataloaders at ``root``."""
    return ['--cfg-options'] + [f'{split}_dataloader.dataset.data_root={root}'
                                for split in ('train', 'val', 'test')]


def last_checkpoint(work_dir):
    """The checkpoint ``mim train`` wrote last in ``work_dir``."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def coco_options(root):
    """``--cfg-options`` pointing a pose/det test config at generated COCO-format data."""
    ann = osp.join(root, 'annotations', 'val.json')
    return ['--cfg-options'] + [f'{s}_dataloader.dataset.data_root={root}/'
                                for s in ('train', 'val', 'test')] + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def coco_test_options(package, root):
    """:func:`coco_options` for ``mim test`` with ``--dump`` (mmpose) or ``--out`` (mmdet):
    mmpose's test.py makes test_evaluator a list (its DumpResults joins it) before merging the
    options, so they name the config's evaluator as its first item."""
    options = coco_options(root)
    if package == 'mmpose':
        options = [o.replace('test_evaluator.', 'test_evaluator.0.') for o in options]
    return options


@pytest.fixture(scope='session')
def coco(tmp_path_factory):
    from .coco_data import make_coco
    return make_coco(str(tmp_path_factory.mktemp('coco')))


def _train_then_test(package, config, root, work):
    """``mim train`` a test config, then ``mim test`` the checkpoint it wrote, its predictions
    dumped: ``(config, checkpoint, test log, predictions .pkl)``."""
    config = osp.join(REPO, 'tests', 'configs', config)
    run_cli(['mim', 'train', package, config, '--work-dir', osp.join(work, 'train')]
            + coco_options(root))
    checkpoint = last_checkpoint(osp.join(work, 'train'))
    dump = osp.join(work, 'predictions.pkl')
    log = run_cli(['mim', 'test', package, config, '--checkpoint', checkpoint,
                   '--dump' if package == 'mmpose' else '--out', dump,
                   '--work-dir', osp.join(work, 'test')] + coco_test_options(package, root))
    return config, checkpoint, log, dump


@pytest.fixture(scope='session')
def trained_demo_tiny(street_data, tmp_path_factory):
    """tests/configs/demo_tiny.py trained 4 iterations by ``mim train``, then ``mim test`` on
    the checkpoint it wrote (mmseg's IoU and Cityscapes metrics): ``(config, work dir,
    checkpoint, test log)``. The tests that need a trained segmentor share it (xdist_group
    'trained_street' keeps them on the worker that trains it)."""
    cfg = osp.join(REPO, 'tests', 'configs', 'demo_tiny.py')
    work = str(tmp_path_factory.mktemp('demo_tiny'))
    options = data_options(street_data)
    run_cli(['mim', 'train', 'mmsegmentation', cfg, '--work-dir', osp.join(work, 'train')]
            + options)
    checkpoint = last_checkpoint(osp.join(work, 'train'))
    log = run_cli(['mim', 'test', 'mmsegmentation', cfg, '--checkpoint', checkpoint,
                   '--work-dir', osp.join(work, 'test')] + options
                  + [f"test_evaluator.1.output_dir={osp.join(work, 'cs')}"])
    return cfg, osp.join(work, 'train'), checkpoint, log


@pytest.fixture(scope='session')
def trained_pose(coco, tmp_path_factory):
    """tests/configs/pose_tiny.py trained 2 epochs and tested with mmpose's CocoMetric."""
    return _train_then_test('mmpose', 'pose_tiny.py', coco,
                            str(tmp_path_factory.mktemp('pose')))


@pytest.fixture(scope='session')
def trained_det(coco, tmp_path_factory):
    """tests/configs/det_tiny.py trained 1 epoch and tested with mmdet's CocoMetric."""
    return _train_then_test('mmdet', 'det_tiny.py', coco, str(tmp_path_factory.mktemp('det')))
