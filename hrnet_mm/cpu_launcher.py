"""Distributed training on CPU processes through mmengine's launchers.

mmengine 0.10.7 assumes a GPU per process in two places: ``_init_dist_pytorch`` calls
``torch.cuda.set_device(LOCAL_RANK)`` (a CPU build of torch has no CUDA at all), and
``Runner.wrap_model`` gives ``MMDistributedDataParallel`` ``device_ids=[LOCAL_RANK]``, which
torch refuses for a module on the CPU. On a machine with no accelerator of any kind (no CUDA,
NPU, MLU, MUSA, MPS or DIPU device, as mmengine detects them), :func:`enable_cpu_distributed`
(run when hrnet_mm is imported, which every config here does through ``custom_imports``) skips
the first for the ``torch`` init backend and drops the second for modules whose parameters
are all on the CPU, so ``torchrun ... tools/train.py cfg --launcher pytorch`` with
``env_cfg.dist_cfg.backend=gloo`` trains on CPU processes. Where any accelerator is present,
nothing is changed (mmengine's NPU/MLU/MUSA handling stays as it is).

A process group it initialises is destroyed at interpreter exit (an ``atexit`` handler, after
collecting the finished run's cyclic garbage, whose DDP wrapper holds the group as well):
mmengine's tools never call ``destroy_process_group``, and a gloo group left to interpreter
finalisation now and then aborts a finished run ("terminate called without an active
exception", pytorch/pytorch#190489).
"""
import atexit
import functools
import gc

import torch
from mmengine import device


def no_accelerator() -> bool:
    return not any(getattr(device, f'is_{kind}_available', lambda: False)()
                   for kind in ('cuda', 'npu', 'mlu', 'musa', 'mps', 'dipu'))


_ENABLED = False


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        # The finished Runner sits in reference cycles with its DDP-wrapped model, which holds
        # the group too: collect it first, so nothing frees gloo's threads at finalisation.
        gc.collect()
        torch.distributed.destroy_process_group()


def enable_cpu_distributed() -> None:
    global _ENABLED
    if _ENABLED or not no_accelerator():
        return
    import mmengine.dist.utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel

    original_init_dist = dist_utils._init_dist_pytorch

    @functools.wraps(original_init_dist)
    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if init_backend != 'torch':
            return original_init_dist(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend=backend, **kwargs)
        atexit.register(_destroy_process_group)

    original_ddp_init = MMDistributedDataParallel.__init__

    @functools.wraps(original_ddp_init)
    def ddp_init(self, module, detect_anomalous_params=False, **kwargs):
        if all(p.device.type == 'cpu' for p in module.parameters()):
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        original_ddp_init(self, module, detect_anomalous_params=detect_anomalous_params,
                          **kwargs)

    dist_utils._init_dist_pytorch = _init_dist_pytorch
    MMDistributedDataParallel.__init__ = ddp_init
    _ENABLED = True
