"""Distributed training on CPU processes through mmengine's launchers, GPU runs left as they are.

mmengine 0.10.7 assumes a GPU per process in two places: ``_init_dist_pytorch`` calls
``torch.cuda.set_device(LOCAL_RANK)`` whatever the backend, and ``Runner.wrap_model`` gives
``MMDistributedDataParallel`` ``device_ids=[LOCAL_RANK]``, which torch refuses for a module on
the CPU. :func:`enable_cpu_distributed` (run when hrnet_mm is imported, which every config here
does through ``custom_imports``) makes each of those decisions from the device the process's
model is on:

* DDP: a module whose parameters are all on the CPU is wrapped without ``device_ids``; any
  other module is wrapped as mmengine wraps it.
* the ``torch`` init backend: mmengine's Runner puts the model on the GPU whenever CUDA is
  visible (``mmengine.device.get_device``), one GPU per local rank. So where CUDA is visible
  the process is a GPU process and mmengine's own launcher runs (``set_device(LOCAL_RANK)``,
  the configured backend); a local rank with no GPU of its own gets an error that names the
  fix instead of CUDA's "invalid device ordinal". Where CUDA is not visible (a CPU host, or
  ``CUDA_VISIBLE_DEVICES=`` on a GPU host) the process is a CPU process: no ``set_device``,
  and ``nccl`` (mmseg's, mmpose's and mmdet's default backend, which needs GPUs) becomes
  ``gloo``, logged. NPU, MLU and MUSA hosts keep mmengine's handling, as do other init
  backends.

A process group it initialises is destroyed at interpreter exit (an ``atexit`` handler, after
collecting the finished run's cyclic garbage, whose DDP wrapper holds the group as well):
mmengine's tools never call ``destroy_process_group``, and a gloo group left to interpreter
finalisation now and then aborts a finished run ("terminate called without an active
exception", pytorch/pytorch#190489).
"""
import atexit
import functools
import gc
import os

import torch
from mmengine import device
from mmengine.logging import print_log

_ENABLED = False


def _other_accelerator() -> bool:
    """An NPU, MLU or MUSA host, whose launch mmengine handles on its own."""
    return any(getattr(device, f'is_{kind}_available', lambda: False)()
               for kind in ('npu', 'mlu', 'musa'))


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        # The finished Runner sits in reference cycles with its DDP-wrapped model, which holds
        # the group too: collect it first, so nothing frees gloo's threads at finalisation.
        gc.collect()
        torch.distributed.destroy_process_group()


def process_backend(backend: str, local_rank: int) -> str:
    """The backend a process of a ``torch`` init runs with, decided from the device its model
    will be on (see the module docstring); raises where a local rank has no GPU of its own."""
    if device.is_cuda_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f'LOCAL_RANK={local_rank} has no GPU of its own: this host shows {count} CUDA '
                "device(s) and mmengine's Runner puts each process's model on its own GPU. "
                f'Start at most {count} process(es) per node (--nproc_per_node={count}), or hide '
                'the GPUs (CUDA_VISIBLE_DEVICES=) to train on CPU processes.')
        return backend
    return 'gloo' if backend == 'nccl' else backend


def enable_cpu_distributed() -> None:
    global _ENABLED
    if _ENABLED:
        return
    import mmengine.dist.utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel

    original_init_dist = dist_utils._init_dist_pytorch

    @functools.wraps(original_init_dist)
    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if init_backend != 'torch' or _other_accelerator():
            return original_init_dist(backend, init_backend=init_backend, **kwargs)
        chosen = process_backend(backend, int(os.environ['LOCAL_RANK']))
        if device.is_cuda_available():
            original_init_dist(chosen, init_backend=init_backend, **kwargs)
        else:
            if chosen != backend:
                print_log(f'hrnet_mm: no CUDA device visible, so this is a CPU process: '
                          f'{backend} needs GPUs, initialising {chosen} instead',
                          logger='current')
            torch.distributed.init_process_group(backend=chosen, **kwargs)
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
