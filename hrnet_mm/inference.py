"""Inference: the same function in fewer passes over memory, at the precision asked for.

:func:`prepare_for_inference` returns a new model for inference and leaves the given one as it
was (a deep copy: the weights are held twice while both live):

* batch norms are folded into the conv that provably feeds them (:func:`fold_batch_norms`),
  and weights are stored channels-last, which oneDNN and cuDNN run faster;
* a 1x1 conv that mixes the concatenated streams (the FCN head's, in the FCN-HRNetV2 configs)
  mixes each stream at its own resolution before resizing (:func:`mix_streams_before_resize`):
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
from mmcv.cnn import ConvModule
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _BatchNorm

from .memory import keep_freed_memory
from .models.necks import HRNetConcatNeck, HRNetPyramidNeck, is_pointwise
from .precision import AUTOCAST_DTYPES, check_precision, device_of, resolve_precision
from .registry import HOOKS


# --- folding -----------------------------------------------------------------------------------

def _fold(conv: nn.Conv2d, norm: _BatchNorm) -> None:
    """conv <- norm(conv(.)), computed in float64 and rounded once to the conv's dtype."""
    w = conv.weight.detach()
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale = scale * norm.weight.detach().double()
        shift = shift * norm.weight.detach().double() + norm.bias.detach().double()
    bias = shift if conv.bias is None else conv.bias.detach().double() * scale + shift
    conv.weight = nn.Parameter((w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _adjacent_pairs(module: nn.Module) -> List[Tuple[str, str]]:
    """Child names ``(conv, norm)`` whose forward provably computes ``norm(conv(x))`` with
    nothing between: consecutive children of an ``nn.Sequential``, mmcv's ``ConvModule``
    whose order puts the norm right after the conv, and modules that declare their pairs
    (``conv_norm_pairs()``, as hrnet_mm's own do). Anything else is left alone."""
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return list(zip(names, names[1:]))
    if isinstance(module, ConvModule):
        order = list(module.order)
        if module.with_norm and order.index('norm') == order.index('conv') + 1:
            return [('conv', module.norm_name)]
        return []
    declared = getattr(module, 'conv_norm_pairs', None)
    return list(declared()) if callable(declared) else []


def _foldable(conv, norm) -> bool:
    return (type(conv) is nn.Conv2d and isinstance(norm, _BatchNorm)
            and norm.track_running_stats and norm.running_mean is not None
            and norm.num_features == conv.out_channels)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold batch norms into the conv that provably feeds them (see :func:`_adjacent_pairs`);
    each folded norm becomes ``nn.Identity``. In place; the norms' running statistics are
    used, so the module must be for evaluation. Returns ``module``."""
    for name, child in list(module.named_children()):
        fold_batch_norms(child)
    for conv_name, norm_name in _adjacent_pairs(module):
        conv, norm = module._modules.get(conv_name), module._modules.get(norm_name)
        if _foldable(conv, norm):
            _fold(conv, norm)
            module._modules[norm_name] = nn.Identity()
    return module


# --- mixing streams before resizing ------------------------------------------------------------

def _movable_pointwise(module: nn.Module) -> Optional[nn.Conv2d]:
    """The conv an mmcv ``ConvModule`` runs first on its input, if it is a 1x1 conv (stride 1,
    no padding, one group) that can run elsewhere: nothing before it, no fused conv-bn path."""
    if type(module) is not ConvModule or list(module.order)[0] != 'conv':
        return None
    if module.with_explicit_padding or getattr(module, 'efficient_conv_bn_eval_forward', None):
        return None
    return module.conv if is_pointwise(module.conv) else None


def _first_conv_of_fcn_head(head: nn.Module) -> Optional[nn.Module]:
    """The ``ConvModule`` an mmseg ``FCNHead`` applies first to its one input, if its conv can
    be moved into the neck that feeds it."""
    try:
        from mmseg.models.decode_heads import FCNHead
    except ImportError:
        return None
    if (type(head) is not FCNHead or head.num_convs < 1 or head.concat_input
            or head.input_transform is not None or head.in_index != 0):
        return None
    first = head.convs[0]
    return first if _movable_pointwise(first) is not None else None


#: :func:`mix_streams_before_resize` moves a conv where it saves at least this many
#: multiply-adds per element it adds to the resizing. Measured (``tools/benchmark.py
#: --unmixed``, 512x1024): FCN-HRNetV2-W48 (305) runs faster moved, compiled in PyTorch and in
#: OpenVINO; W18 (114) and W18-Small (102) run no faster compiled and slower in OpenVINO.
MIX_MIN_SAVING = 200.0


def mix_streams_before_resize(model: nn.Module,
                              min_saving: float = MIX_MIN_SAVING) -> nn.Module:
    """Where a 1x1 conv mixes hrnet_mm's concatenated streams, mix each stream at its own
    resolution before resizing instead (:meth:`HRNetConcatNeck.mix_before_resize`): the same
    function, with fewer multiply-adds but wider maps to resize, so only where it saves at least
    ``min_saving`` multiply-adds per element added to the resizing (``mix_saving``; W48's FCN
    head: 305, W18's: 114). Done where it is provable from the modules' types:

    * an ``HRNetConcatNeck`` with its own 1x1 mixing conv, an ``HRNetPyramidNeck``'s 1x1
      ``reduction_conv``;
    * an mmseg segmentor whose ``HRNetConcatNeck`` (no conv of its own) feeds an ``FCNHead``
      whose first conv is 1x1 (the configs' FCN-HRNetV2): the head's conv moves into the neck.

    The moved conv becomes ``nn.Identity`` where it was (its norm and activation stay). In
    place, for evaluation: the neck's output is no longer the concatenation. Returns ``model``.
    """
    def move(neck, owner) -> bool:
        if neck.mix_saving(owner.conv.out_channels) < min_saving:
            return False
        neck.mix_before_resize(owner.conv)
        owner.conv = nn.Identity()
        return True

    for m in list(model.modules()):  # moving adds modules
        if type(m) is HRNetConcatNeck and m.premix is None and _movable_pointwise(m.mix):
            move(m, m.mix)
        elif (type(m) is HRNetPyramidNeck and m.premix is None
              and _movable_pointwise(m.reduction_conv)):
            move(m, m.reduction_conv)
    neck, head = getattr(model, 'neck', None), getattr(model, 'decode_head', None)
    if (type(neck) is HRNetConcatNeck and neck.premix is None
            and isinstance(neck.mix, nn.Identity) and isinstance(head, nn.Module)):
        first = _first_conv_of_fcn_head(head)
        if first is not None and first.conv.in_channels == neck.concat_channels:
            out_channels = first.conv.out_channels
            if move(neck, first):
                neck.out_channels = (out_channels,)
    return model


def streams_mixed(model: nn.Module) -> bool:
    """Whether :func:`mix_streams_before_resize` moved a conv in ``model`` (a neck of it mixes
    its streams before resizing them)."""
    return any(getattr(m, 'premix', None) is not None for m in model.modules())


# --- precision ---------------------------------------------------------------------------------

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
            :func:`hrnet_mm.precision.resolve_precision`). The chosen one is
            ``prepared.inference_precision``, and why ``prepared.inference_precision_reason``.
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
    prepared = copy.deepcopy(model.module if is_model_wrapper(model) else model)
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
            (decided from the model's device); per run with
            ``mim test ... --cfg-options custom_hooks.0.precision=bf16``.
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
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
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
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if 'test_step' in vars(model):
            del model.test_step
        self._prepared = None

