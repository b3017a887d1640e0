"""Freed memory kept in the process, for training and inference on CPU.

A forward of HRNet at 512x1024 allocates tens of activations of several MiB each. glibc serves
such blocks with ``mmap`` and unmaps them when freed (and trims the heap top), so every step
page-faults them in again: kernel time and freshly zeroed pages. Measured on a W18 training
step (batch 2, 512x1024, 2 cores), keeping the memory made the step 1.18x faster in bf16 and
1.26x in float32, mmseg's own 1.45x (docs/benchmarks.md). :func:`keep_freed_memory` raises glibc's mmap and
trim thresholds instead; :class:`KeepFreedMemoryHook` does it for ``mim train``/``mim test``
from a config, and :func:`hrnet_mm.prepare_for_inference` does it on CPU by default.

The cost: the process keeps its peak heap. Freed blocks are reused, but a heap that is never
trimmed fragments, so that peak is a few percent above glibc's default one (4-5% for a W18
training step), and it is not returned to the system until the process ends. Process-wide, so
it is an explicit call or config entry, never a side effect of importing hrnet_mm.
"""
import ctypes

from mmengine.hooks import Hook

from .precision import device_of, unwrap
from .registry import HOOKS

_KEEPING_FREED_MEMORY = False


def keep_freed_memory() -> bool:
    """glibc: keep freed blocks in the process instead of returning them to the kernel.

    As ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647`` would, set
    from inside the process (before or after the first allocation). A no-op off glibc.
    Returns whether it applies.
    """
    global _KEEPING_FREED_MEMORY
    if _KEEPING_FREED_MEMORY:
        return True
    try:
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, 1 << 30)
                  and libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        ok = False
    _KEEPING_FREED_MEMORY = ok
    return ok


@HOOKS.register_module()
class KeepFreedMemoryHook(Hook):
    """Keep freed memory in the process when the model runs on the CPU.

    Add ``dict(type='hrnet_mm.KeepFreedMemoryHook')`` to ``custom_hooks``; before the run
    starts it calls :func:`keep_freed_memory` if the model's parameters are on the CPU, and
    logs what it did. Dataloader workers started afterwards inherit the setting. It leaves the
    allocator as it is on an accelerator (the activations are not in glibc's heap) and for a
    model with ``with_cp=True`` anywhere: that is memory chosen over speed, and a heap that is
    never trimmed also fragments (a W18 ``with_cp`` step peaked 8% higher with it).
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = unwrap(runner.model)
        device = device_of(model)
        if device.type != 'cpu':
            runner.logger.info(f'hrnet_mm: model on {device}, glibc allocator left as it is')
        elif any(getattr(m, 'with_cp', False) is True for m in model.modules()):
            runner.logger.info('hrnet_mm: with_cp=True (memory over speed), glibc allocator '
                               'left as it is')
        elif keep_freed_memory():
            runner.logger.info(
                'hrnet_mm: glibc keeps freed memory in the process (no page faults for '
                'activations on every step; the process keeps its peak heap)')
        else:
            runner.logger.info('hrnet_mm: not glibc, allocator left as it is')
