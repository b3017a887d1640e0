"""Where a model runs and which precisions that device computes natively.

Every decision about device or precision in hrnet_mm is taken here, from the model's own
parameters (or the tensor at hand), never from what the host has: a model on the CPU of a GPU
host is a CPU model, and a GPU that only emulates bfloat16 (V100, T4: torch's
``is_bf16_supported()`` counts emulation as support) does not compute it natively.

* :func:`unwrap`: the model a wrapper (DDP) holds; :func:`device_of`: the device of a module's
  parameters (buffers, if it has none).
* :func:`native_bf16`, :func:`native_fp16`: whether a device computes that type in hardware:
  CUDA bfloat16 from compute capability 8.0 (Ampere), float16 from 7.0 (Volta's tensor cores);
  CPU bfloat16 with AVX512-BF16 or AMX-BF16 (read from :func:`cpu_flags`).
* :func:`resolve_precision`: ``'auto'`` made concrete for a device, with the reason.
"""
import functools
from typing import Dict, FrozenSet, Tuple

import torch
import torch.nn as nn

#: What :func:`resolve_precision` takes; ``'fp16'`` only on CUDA devices.
PRECISIONS = ('fp32', 'bf16', 'fp16', 'auto')
#: The autocast dtype of each concrete precision (None: no autocast).
AUTOCAST_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside an mmengine model wrapper (``MMDistributedDataParallel`` and the
    like), or ``model`` itself."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module with
    neither. Model wrappers (DDP) are looked through, as they hold the same parameters."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device('cpu')


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where there is none)."""
    fields: Dict[str, str] = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    return frozenset(_cpuinfo().get('flags', '').split())


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    import platform
    return (_cpuinfo().get('model name') or platform.processor() or platform.machine())


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not emulated through float32)."""
    device = torch.device(device)
    if device.type == 'cuda':
        if torch.version.hip:  # every ROCm GPU torch supports has bfloat16 units
            return torch.cuda.is_bf16_supported()
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == 'cpu':
        return bool({'avx512_bf16', 'amx_bf16'} & cpu_flags())
    return False


def native_fp16(device) -> bool:
    """Whether ``device`` computes float16 natively in its matrix units (CUDA tensor cores,
    compute capability 7.0 on). CPUs are not counted: hrnet_mm's CPU paths are bf16."""
    device = torch.device(device)
    if device.type == 'cuda':
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (7, 0)
    return False


def describe(device) -> str:
    """``device`` in words for a log line: ``'cuda:0 (NVIDIA A100, sm_80)'``, ``'cpu (AMD
    EPYC)'``."""
    device = torch.device(device)
    if device.type == 'cuda':
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f'cuda:{index} ({torch.cuda.get_device_name(index)}, sm_{major}{minor})'
    if device.type == 'cpu':
        return f'cpu ({cpu_model()})'
    return str(device)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; else a ``ValueError`` naming them
    (int8: naming the exported path that has it)."""
    if precision == 'int8':
        raise ValueError("precision='int8' is the exported models' (OpenVINO, calibrated and "
                         'checked against the toolbox metric): python tools/deploy.py export '
                         'CONFIG CHECKPOINT --int8, then tools/deploy.py test or mim test on the '
                         f'deploy_openvino_int8.py it writes. PyTorch has {PRECISIONS}')
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    return precision


def resolve_precision(precision: str, device) -> Tuple[str, str]:
    """``(precision, why)`` for running on ``device``: ``'auto'`` becomes ``'bf16'`` where
    the device computes bfloat16 natively, ``'fp16'`` on a CUDA GPU with float16 tensor cores
    but no native bfloat16 (V100, T4), ``'fp32'`` elsewhere. ``why`` names the device judged.
    ``'fp16'`` on anything but CUDA is refused with the fix."""
    check_precision(precision)
    device = torch.device(device)
    if precision == 'fp16' and device.type != 'cuda':
        raise ValueError(f"precision='fp16' is for CUDA GPUs; the model is on {device}: use "
                         "'bf16' (or 'auto') there")
    where = describe(device)
    if precision != 'auto':
        return precision, f'as asked, model on {where}'
    if native_bf16(device):
        return 'bf16', f'auto: model on {where}, which computes bf16 natively'
    if native_fp16(device):
        return 'fp16', f'auto: model on {where}, which computes fp16 but not bf16 natively'
    return 'fp32', f'auto: model on {where}, which has no native bf16'

