"""Every decision about device and precision is taken from the model's own device, never from
the host. Decided here by simulating hosts on this CPU machine: a host that reports CUDA while
the model sits on the CPU, GPUs that only emulate bfloat16, CPUs with and without native
bfloat16. What torch reports for each simulated GPU is what it reports for the real one
(compute capability, name, and ``is_bf16_supported()`` counting emulation as support)."""
import copy
import json
import sys

import pytest
import torch
from mmengine.logging import MMLogger

from hrnet_mm import HRNet, MixedPrecisionOptimWrapper, prepare_for_inference
from hrnet_mm.precision import native_bf16, native_fp16, resolve_precision

from .conftest import TINY_EXTRA, quiet, run_cli

GPUS = {  # name: (compute capability, bf16 native, fp16 native)
    'Tesla P100-PCIE-16GB': ((6, 0), False, False),
    'Tesla V100-SXM2-16GB': ((7, 0), False, True),
    'Tesla T4': ((7, 5), False, True),
    'NVIDIA A100-SXM4-80GB': ((8, 0), True, True),
    'NVIDIA H100 80GB HBM3': ((9, 0), True, True),
}


def simulate_gpu(monkeypatch, name):
    """This host reports one CUDA GPU ``name``; tensors still live on the CPU."""
    capability = GPUS[name][0]
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
    # torch's own answer counts emulation: True on every one of these GPUs
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda including_emulation=True: including_emulation
                        or capability >= (8, 0))


@pytest.mark.parametrize('name', list(GPUS))
def test_emulated_bf16_is_not_native(monkeypatch, name):
    """Would catch: bf16 chosen on a V100 or T4 because torch counts its emulation."""
    simulate_gpu(monkeypatch, name)
    _, bf16, fp16 = GPUS[name]
    assert native_bf16('cuda') is bf16 and native_fp16('cuda:0') is fp16
    chosen, why = resolve_precision('auto', 'cuda')
    assert chosen == ('bf16' if bf16 else 'fp16' if fp16 else 'fp32')
    assert f'cuda:0 ({name}, sm_' in why


def test_cpu_flags_decide_native_bf16_on_the_cpu(monkeypatch):
    """Would catch: the CPU's answer taken from anything but its bf16 flags."""
    import hrnet_mm.precision as precision
    for flags, native in [({'avx512f', 'avx512_vnni'}, False), ({'avx512_bf16'}, True),
                          ({'amx_bf16', 'amx_tile'}, True), (set(), False)]:
        monkeypatch.setattr(precision, 'cpu_flags', lambda flags=flags: frozenset(flags))
        assert native_bf16('cpu') is native
        assert resolve_precision('auto', 'cpu')[0] == ('bf16' if native else 'fp32')


def test_fp16_is_refused_off_cuda_with_the_fix():
    with pytest.raises(ValueError, match="'fp16' is for CUDA GPUs; the model is on cpu"):
        prepare_for_inference(HRNet('w18_small').eval(), precision='fp16')
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve_precision('fp16x', 'cpu')


def test_int8_in_pytorch_names_the_exported_path():
    """int8 is the exported OpenVINO model's: the PyTorch paths say where it is, and the hook
    refuses it when the config is read, before any test runs."""
    from hrnet_mm import FastInferenceHook
    with pytest.raises(ValueError, match=r"tools/deploy.py export CONFIG CHECKPOINT --int8"):
        prepare_for_inference(HRNet('w18_small').eval(), precision='int8')
    with pytest.raises(ValueError, match=r"precision='int8' is the exported models'"):
        FastInferenceHook(precision='int8')


def test_cpu_model_on_a_gpu_host_is_prepared_for_the_cpu(monkeypatch):
    """'auto' on a host with an A100 but a model on a CPU without native bf16: fp32, and the
    reason names the CPU."""
    import hrnet_mm.precision as precision
    simulate_gpu(monkeypatch, 'NVIDIA A100-SXM4-80GB')
    monkeypatch.setattr(precision, 'cpu_flags', lambda: frozenset({'avx2'}))
    fast = prepare_for_inference(HRNet('w18_small').eval(), precision='auto', keep_memory=False)
    assert fast.inference_precision == 'fp32'
    assert 'model on cpu' in fast.inference_precision_reason


class Log:
    """The lines logged through mmengine's current logger while it is open."""
    opened = 0

    def __init__(self):
        Log.opened += 1  # a new instance is the current one
        self.logger = MMLogger.get_instance(f'hrnet_mm_devices_{Log.opened}', log_level='INFO')
        self.lines = []

    def __enter__(self):
        import logging
        handler = logging.Handler()
        handler.emit = lambda record: self.lines.append(record.getMessage())
        self.handler = handler
        self.logger.addHandler(handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def test_cpu_model_on_a_cuda_host_trains_in_cpu_bf16(monkeypatch):
    """The host reports CUDA, the model is on the CPU: CPU bf16 autocast, no loss scaler.
    Would catch: the wrapper keyed to the host (CUDA autocast, which does nothing to a CPU
    model: its output stays float32)."""
    simulate_gpu(monkeypatch, 'NVIDIA H100 80GB HBM3')
    model = torch.nn.Conv2d(3, 4, 3)
    with Log() as log:
        wrapper = MixedPrecisionOptimWrapper(
            dtype='bfloat16', optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.loss_scaler is None and wrapper.device == torch.device('cpu')
    with wrapper.optim_context(model):
        out = model(torch.randn(1, 3, 8, 8))
    assert out.dtype == torch.bfloat16
    assert any('bfloat16 (as asked, model on cpu' in line and 'cpu autocast' in line
               for line in log.lines), log.lines


@pytest.mark.parametrize('flags,expected', [({'avx512_bf16'}, torch.bfloat16),
                                            ({'avx2', 'avx512f'}, torch.float32)])
def test_auto_dtype_is_decided_by_the_models_cpu(monkeypatch, flags, expected):
    """Would catch: 'auto' picking bf16 on a CPU without it, or the choice going unlogged."""
    import hrnet_mm.precision as precision
    monkeypatch.setattr(precision, 'cpu_flags', lambda: frozenset(flags))
    model = torch.nn.Conv2d(3, 3, 3)
    with Log() as log:
        wrapper = MixedPrecisionOptimWrapper(
            dtype='auto', optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.cast_dtype == expected and wrapper.loss_scaler is None
    name = str(expected).split('.')[-1]
    assert any(line.startswith(f'hrnet_mm.MixedPrecisionOptimWrapper: {name} (auto: model '
                               'on cpu') for line in log.lines), log.lines


def test_a_wrapper_built_for_another_device_says_so():
    model = torch.nn.Conv2d(3, 3, 3)
    wrapper = MixedPrecisionOptimWrapper(dtype='bfloat16',
                                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    wrapper.device = torch.device('cuda', 0)  # as if built before the model moved
    with pytest.raises(RuntimeError, match='build the optimizer wrapper after moving the model'):
        with wrapper.optim_context(model):
            pass


# The launcher's decisions, in a fresh interpreter that reports CUDA before hrnet_mm is
# imported (as a GPU host would when a config's custom_imports runs).
LAUNCH = r'''
import json, os, sys
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
import hrnet_mm  # noqa: F401
import torch.distributed as dist
from mmengine.dist import init_dist
from mmengine.model.wrappers import MMDistributedDataParallel
result = {}
os.environ.update(RANK='1', LOCAL_RANK='1', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                  MASTER_PORT='29617')
try:  # a second process on a host with one GPU
    init_dist('pytorch', backend='nccl')
    result['rank1'] = 'initialised'
except RuntimeError as err:
    result['rank1'] = str(err)
dist.init_process_group('gloo', init_method='tcp://127.0.0.1:29618', rank=0, world_size=1)
# mmengine's Runner gives DDP device_ids=[LOCAL_RANK]; a model kept on the CPU must still wrap
ddp = MMDistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0])
result['cpu_ddp'] = ddp.device_ids
dist.destroy_process_group()
print(json.dumps(result))
'''


@pytest.mark.slow  # a fresh interpreter (CUDA reported before hrnet_mm is imported)
def test_launcher_decides_from_the_process_device_on_a_gpu_host():
    """Would catch: the launcher keyed to the host at import (on a GPU host its CPU-module
    handling was never installed, and a rank with no GPU got CUDA's 'invalid device
    ordinal')."""
    out = run_cli([sys.executable, '-c', LAUNCH], timeout=300)
    result = json.loads(out.strip().splitlines()[-1])
    assert result['cpu_ddp'] is None
    assert 'LOCAL_RANK=1 has no GPU of its own' in result['rank1']
    assert '--nproc_per_node=1' in result['rank1'] and 'CUDA_VISIBLE_DEVICES=' in result['rank1']


def test_cpu_processes_get_gloo_for_the_toolboxes_nccl(monkeypatch):
    from hrnet_mm.cpu_launcher import process_backend
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert process_backend('nccl', 3) == 'gloo' and process_backend('gloo', 0) == 'gloo'
    simulate_gpu(monkeypatch, 'Tesla T4')
    assert process_backend('nccl', 0) == 'nccl'


def test_exchange_statistics_after_an_overflowing_with_cp_step_match_the_toolbox():
    """An fp16 step that overflows leaves inf batch statistics. with_cp recomputes hrnet_mm's
    exchange in backward; its norms must end as the toolbox's (whose exchange is not
    recomputed): updated once, by the forward. Would catch: the recomputation updating at
    momentum 0, where ``1 * inf + 0 * inf`` is NaN where the toolbox keeps inf."""
    from mmseg.models.backbones import HRNet as SegHRNet

    from .conftest import randomize_norms
    theirs = randomize_norms(quiet(SegHRNet(extra=copy.deepcopy(TINY_EXTRA), with_cp=True)))
    theirs.train()  # (mmseg's train() returns None)
    ours = HRNet(arch=None, extra=copy.deepcopy(TINY_EXTRA), compat='mmseg', with_cp=True).train()
    ours.load_state_dict(theirs.state_dict())
    # a fuse conv whose output overflows: its batch variance is beyond float32's range
    key = 'stage2.0.fuse_layers.0.1.0.weight'
    for model in (ours, theirs):
        model.state_dict()[key].mul_(1e19)
    x = torch.randn(2, 3, 64, 96)
    for model in (ours, theirs):
        sum(o.float().mean() for o in model(x.clone().requires_grad_())).backward()
    norm = 'stage2.0.fuse_layers.0.1.1.running_var'
    assert torch.isinf(theirs.state_dict()[norm]).any()  # the overflow reached the statistics
    a, b = ours.state_dict(), theirs.state_dict()
    differ = [k for k in b if k.startswith('stage2.0.fuse_layers') and
              not torch.equal(a[k].nan_to_num(), b[k].nan_to_num())]
    assert not differ and not torch.isnan(a[norm]).any(), differ
