"""Load mmengine Runner checkpoints under torch's ``weights_only=True``, and nothing wider.

Since torch 2.6 ``torch.load`` refuses any global that is not allowlisted, and mmengine 0.10.7
does not allowlist what its own Runner writes: the message hub's ``HistoryBuffer`` logs (numpy
arrays, plus their statistic methods pickled as ``getattr(HistoryBuffer, 'mean')``) and the
numpy scalars and arrays in ``meta`` (dataset metainfo, seeds). So ``mim test --checkpoint
iter_N.pth``, ``--resume`` and ``load_from`` fail out of the box.

:func:`load_local_checkpoint` is mmengine's loader for local files with exactly those
plain-data globals allowed *for that load* (``torch.serialization.safe_globals``, a context,
not the process-wide ``add_safe_globals``). :func:`register_checkpoint_loader` installs it
through mmengine's own extension point (``CheckpointLoader.register_scheme``) for paths without
a scheme, which is where mmengine reads Runner checkpoints; ``import hrnet_mm`` calls it.
``getattr`` is *not* allowlisted: the name ``builtins.getattr`` is bound to
:func:`_history_buffer_getattr`, which resolves only ``HistoryBuffer``'s registered statistic
methods and refuses anything else, so a checkpoint crafted to reach a code-running callable is
still refused and runs nothing. ``weights_only`` stays on everywhere; a plain ``torch.load``
outside mmengine is not affected.
"""
import os.path as osp
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


# Registered by HistoryBuffer.__init__; present before any buffer exists in this process.
_DEFAULT_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as Runner checkpoints use it: a ``HistoryBuffer`` statistic, nothing more."""
    allowed = _DEFAULT_STATISTICS | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({getattr(obj, "__qualname__", type(obj).__name__)}, {name!r}) while '
        'loading a checkpoint: only HistoryBuffer statistics are allowed under weights_only')


def _numpy_globals() -> List[Any]:
    """numpy's array/scalar reconstruction, under the module path this numpy pickles with."""
    core = np._core if hasattr(np, '_core') else np.core  # numpy 2 / numpy 1
    items: List[Any] = [np.ndarray, np.dtype]
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        items += [(core.multiarray._reconstruct, f'{mod_name}._reconstruct'),
                  (core.multiarray.scalar, f'{mod_name}.scalar')]
    # numpy >= 1.25 rebuilds a dtype's state through its DType class: the plain numeric ones.
    items += [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG']
    return items


def runner_checkpoint_globals() -> List[Any]:
    """The globals a Runner checkpoint holds, for ``torch.serialization.safe_globals``."""
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] + _numpy_globals()


def load_local_checkpoint(filename: str, map_location=None):
    """mmengine's local-file loader, with Runner checkpoints' plain-data globals allowed for
    this load only (weights_only stays on)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    with torch.serialization.safe_globals(runner_checkpoint_globals()):
        return torch.load(filename, map_location=map_location, weights_only=True)


def register_checkpoint_loader() -> None:
    """Make mmengine read local checkpoints with :func:`load_local_checkpoint` (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
