"""Inference: the same function in fewer passes over memory, at the precision asked for.

:func:`prepare_for_inference` returns a new model for inference and leaves the given one as it
was (a deep copy: the weights are held twice while both live):

* batch norms are folded into the conv that provably feeds them (:func:`hrnet_mm.rewrites.fold_batch_norms`),
  and weights are stored channels-last, which oneDNN and cuDNN run faster;
* a 1x1 conv that mixes the concatenated streams (the FCN head's, in the FCN-HRNetV2 configs)
  mixes each stream at its own resolution before resizing (:func:`hrnet_mm.rewrites.mix_streams_before_resize`):
  the same function, W48's head with 8x fewer multiply-adds (where it saves enough to pay
  for wider maps to resize: W48, not W18);
* ``precision='bf16'`` (or ``'fp16'``, CUDA only) runs the network (backbone, neck, seg/pose
  heads; detection heads stay float32) under ``torch.autocast`` on the model's device; what
  comes out is float32 again, so the toolbox's post-processing (resize, argmax, decoding) runs
  as before. ``'auto'`` chooses from the model's device (:func:`hrnet_mm.precision.
  resolve_precision`: bf16 where it is native, fp16 on GPUs without native bf16, else fp32)
  and says what it chose. Exported models (``hrnet_mm.deploy``) run fp32 or bf16;
* ``compile=True`` compiles those parts with inductor, weights frozen as constants. A new
  input size recompiles once; from the second size on, height and width are dynamic, so a
  validation set of many sizes does not recompile per image;
* on CPU, glibc is asked to keep freed memory (:func:`keep_freed_memory`), so large
  activations are not page-faulted in again on every forward;
* ``.train()`` on it raises: a folded model cannot be trained.

:class:`FastInferenceHook` does this for ``mim test`` (the test loop only), on a copy, so hooks
that hold the trained model's parameters (EMA) are not disturbed.
"""
import copy
import functools
import types
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.hooks import Hook

from .memory import keep_freed_memory
from .precision import AUTOCAST_DTYPES, check_precision, device_of, resolve_precision, unwrap
from .rewrites import fold_batch_norms, mix_streams_before_resize, streams_mixed
from .registry import HOOKS


# --- precision and compilation ------------------------------------------------------------

def _to_float(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


def _network_parts(model: nn.Module) -> List[Tuple[nn.Module, str, bool]]:
    """``(owner, method, upcast)``: the parts that run the network. Post-processing (resizing
    to the image, decoding, NMS) stays outside. ``upcast``: return float32 from the part."""
    heads = []
    for name in ('decode_head', 'head'):  # mmseg segmentors, mmpose estimators
        head = getattr(model, name, None)
        if isinstance(head, nn.ModuleList):
            heads += list(head)
        elif isinstance(head, nn.Module):
            heads.append(head)
    if callable(getattr(model, 'extract_feat', None)):
        # seg/pose heads take the features in the same precision; detection heads in fp32.
        return [(model, 'extract_feat', not heads)] + [(h, 'forward', True) for h in heads]
    return [(model, 'forward', True)]


def _wrap(fn: Callable, dtype: Optional[torch.dtype], device_type: str, upcast: bool):
    if dtype is None:
        return fn

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            out = fn(*args, **kwargs)
        return _to_float(out) if upcast else out
    return run


def compile_frozen(fn: Callable) -> Callable:
    """``torch.compile(fn)`` with the weights frozen into the graph as constants (inductor's
    ``freezing``: convolution weights pre-packed for oneDNN, norms and casts folded). The
    setting is scoped to these calls, where (re)compilation happens; ``torch.compile``'s
    ``options={'freezing': True}`` does not reach it."""
    import torch._inductor.config as inductor_config
    compiled = torch.compile(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with inductor_config.patch(freezing=True):
            return compiled(*args, **kwargs)
    return run


def _refuse_train(self, mode: bool = True):
    if mode:
        raise RuntimeError('this model was prepared for inference (batch norms folded into '
                           'convs): it cannot be trained. Train the original model and prepare '
                           'it again.')
    return nn.Module.train(self, False)


# --- the entry points --------------------------------------------------------------------------

def _outermost(module: nn.Module, chosen: Callable[[nn.Module], bool]) -> List[nn.Module]:
    """The modules ``chosen`` selects, without those inside another selected one."""
    if chosen(module):
        return [module]
    return [m for child in module.children() for m in _outermost(child, chosen)]


def prepare_for_inference(model: nn.Module, *, precision: str = 'fp32', compile: bool = False,
                          channels_last: bool = True, mix_before_resize: bool = True,
                          keep_memory: Optional[bool] = None) -> nn.Module:
    """A copy of ``model`` for inference: norms folded, streams mixed before resizing,
    channels-last, at ``precision``.

    Args:
        model: an HRNet, a neck, or an mmseg/mmpose/mmdet model (it is not changed).
        precision (str): ``'fp32'`` (default), ``'bf16'``, ``'fp16'`` (CUDA only) or
            ``'auto'`` (decided from the model's device, see
            :func:`hrnet_mm.precision.resolve_precision`; never int8). The chosen one is
            ``prepared.inference_precision``, and why ``prepared.inference_precision_reason``.
            int8 is the exported OpenVINO model's (``tools/deploy.py export --int8``).
        compile (bool): compile the network parts with inductor (weights frozen).
        channels_last (bool): store weights channels-last. Default True.
        mix_before_resize (bool): apply the 1x1 conv that mixes the concatenated streams to
            each stream before resizing (:func:`mix_streams_before_resize`). Default True.
        keep_memory (bool, optional): on CPU, keep freed memory in the process
            (:func:`hrnet_mm.memory.keep_freed_memory`). Default: True on CPU.

    Example:
        >>> import torch
        >>> from hrnet_mm import HRNet, prepare_for_inference
        >>> net = HRNet('w18_small', compat=None).eval()
        >>> fast = prepare_for_inference(net)
        >>> x = torch.rand(1, 3, 64, 96)
        >>> with torch.no_grad():
        ...     bool((fast(x)[0] - net(x)[0]).abs().max() < 1e-4)
        True
    """
    device = device_of(model)
    precision, why = resolve_precision(precision, device)
    prepared = copy.deepcopy(unwrap(model))
    prepared.eval()
    for p in prepared.parameters():
        p.requires_grad_(False)
    fold_batch_norms(prepared)
    if mix_before_resize:
        mix_streams_before_resize(prepared)
    if channels_last:
        prepared.to(memory_format=torch.channels_last)
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is not None:
        # hrnet_mm's own modules (backbone, necks) hold their weights in it once, instead of
        # autocast casting them again on every forward; other modules stay under autocast.
        for m in _outermost(prepared, lambda m: type(m).__module__.startswith('hrnet_mm.models')):
            m.to(dtype)
    for owner, name, upcast in _network_parts(prepared):
        fn = _wrap(getattr(owner, name), dtype, device.type, upcast)
        if compile:
            fn = compile_frozen(fn)
        setattr(owner, name, fn)
    prepared.train = types.MethodType(_refuse_train, prepared)
    prepared.inference_precision = precision
    prepared.inference_precision_reason = why
    if (device.type == 'cpu' if keep_memory is None else keep_memory):
        keep_freed_memory()
    return prepared


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Run ``mim test`` on a model prepared by :func:`prepare_for_inference`.

    Add ``custom_hooks = [dict(type='hrnet_mm.FastInferenceHook', precision='auto')]`` to a
    config. Only the test loop is affected (validation during training keeps the trainable
    model); the trained model is left as it is, its ``test_step`` pointing at the prepared copy
    for the duration of the test. The copy is taken when the test epoch starts, after
    ``EMAHook`` has swapped the averaged weights in (``before_test_epoch``, at a lower priority),
    so a ``runner.test()`` after training evaluates the weights the toolbox would evaluate.

    Args:
        precision (str): ``'fp32'`` (default), ``'bf16'``, ``'fp16'`` (CUDA) or ``'auto'``
            (decided from the model's device; never int8); per run with
            ``mim test ... --cfg-options custom_hooks.0.precision=bf16``. int8 is the exported
            OpenVINO model's: ``tools/deploy.py export --int8`` writes its deploy config.
        compile (bool): compile with inductor. Default False.
        channels_last (bool): channels-last weights. Default True.
        mix_before_resize (bool): mix the streams before resizing them where a 1x1 conv
            mixes their concatenation (:func:`mix_streams_before_resize`). Default True.
    """

    priority = 'VERY_LOW'

    def __init__(self, precision: str = 'fp32', compile: bool = False,
                 channels_last: bool = True, mix_before_resize: bool = True):
        check_precision(precision)  # validate now; the device is judged at test time
        self.precision = precision
        self.compile = compile
        self.channels_last = channels_last
        self.mix_before_resize = mix_before_resize
        self._prepared = None

    def before_test_epoch(self, runner) -> None:
        model = unwrap(runner.model)
        self._prepared = prepare_for_inference(model, precision=self.precision,
                                               compile=self.compile,
                                               channels_last=self.channels_last,
                                               mix_before_resize=self.mix_before_resize)
        model.test_step = self._prepared.test_step
        mixed = streams_mixed(self._prepared)
        runner.logger.info(
            f'hrnet_mm: testing on a copy with batch norms folded into convs'
            f"{', streams mixed before resizing' if mixed else ''}"
            f"{', channels-last weights' if self.channels_last else ''}, precision "
            f'{self._prepared.inference_precision} ({self._prepared.inference_precision_reason})'
            f"{', compiled' if self.compile else ''}")

    def after_test_epoch(self, runner, metrics=None) -> None:
        model = unwrap(runner.model)
        if 'test_step' in vars(model):
            del model.test_step
        self._prepared = None

