"""Deployment: export a seg, pose or det model to ONNX, check it, compile it for OpenVINO, and
evaluate the exported model inside the toolbox with its own metric.

What is exported is the network, tensor in, tensor(s) out, with dynamic height and width:

* seg: the normalised image -> logits at 1/4 (``EncoderDecoder._forward``); resizing to the
  image and the argmax stay in mmseg's post-processing;
* pose: the normalised crop -> heatmaps (``TopdownPoseEstimator._forward``);
* det: the normalised image -> the neck's feature pyramid (``extract_feat``); the detection
  heads (anchors, NMS, RoI ops) stay in PyTorch.

:class:`Runtime` runs an exported model with ONNX Runtime or OpenVINO at a precision.
So that each toolbox's own test loop, datasets and metrics evaluate an exported model:

* ``DeployedSegmentor`` (``type='hrnet_mm.DeployedSegmentor'``) is an mmseg segmentor whose
  network is such a runtime;
* :class:`ExportedNetwork` (``type='hrnet_mm.ExportedNetwork'``) stands where the exported
  part stood in an mmpose or mmdet model: the backbone of a ``TopdownPoseEstimator`` whose
  heatmap head keeps only its decoding (mmpose's flip test and codec run as configured), or
  the backbone of a detector without its neck, whose heads (in PyTorch) load their weights
  from the checkpoint ``tools/deploy.py export`` writes beside the model.

:func:`quantize_openvino` makes an int8 model of an OpenVINO one (NNCF's post-training
quantization, calibrated on the images it is given; with ``max_drop``, NNCF's accuracy-controlled
mode, which keeps the layers that cost accuracy in floating point).

``tools/deploy.py`` is the command line: ``export`` writes such a config for every runtime,
``test`` runs it. onnxruntime, openvino and nncf are optional (``pip install .[deploy]``).

Precisions: an exported model runs in fp32 (either runtime), bf16 (OpenVINO, on a CPU with
native bf16) or int8 (OpenVINO, a model made by :func:`quantize_openvino`); the PyTorch paths
(``prepare_for_inference``, ``FastInferenceHook``) have fp32 and bf16. Nothing picks int8 by
itself: its accuracy is for a person to check (``tools/deploy.py test``).
"""
import copy
import logging
import os.path as osp
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from .precision import device_of
from .registry import MODELS

TASKS = {'mmseg': 'seg', 'mmpose': 'pose', 'mmdet': 'det'}
BACKENDS = ('onnxruntime', 'openvino')
# the precisions each runtime has for an exported model
PRECISIONS = {'onnxruntime': ('fp32',), 'openvino': ('fp32', 'bf16', 'int8')}


class _Network(nn.Module):
    """The exported part of a toolbox model, as a plain tensor-to-tensor module."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor):
        if self.task == 'det':
            return tuple(self.model.extract_feat(x))
        out = self.model._forward(x)
        return out if isinstance(out, torch.Tensor) else out[0]


def network(model: nn.Module, task: str) -> nn.Module:
    if task not in TASKS.values():
        raise ValueError(f"task must be one of {sorted(TASKS.values())}, got {task!r}")
    return _Network(model, task).eval()


def _smallest_side(model: nn.Module, task: str) -> int:
    """The smallest height and width an export is declared for, and taken from. From 33: at
    32 the 1/32 stream is one pixel, a size torch.export specializes. A detector's pyramid
    pools its coarsest level (stride S) from the 1/4 map, which is empty below S - 3 (61 for
    5 levels). (Declared smaller, torch.export fails, refines the range itself and captures
    again: seconds lost.)"""
    strides = getattr(getattr(model, 'neck', None), 'out_strides', None) if task == 'det' \
        else None
    return max([33] + [s - 3 for s in strides or ()])


# How the network becomes an ONNX graph: traced with torch.jit (torch.onnx.export's
# ``dynamo=False``) or captured with torch.export (``dynamo=True``).
EXPORTERS = ('torchscript', 'dynamo')


def export_onnx(model: nn.Module, task: str, path: str, example: torch.Tensor, *,
                opset: int = 18, fold: bool = True, exporter: str = 'torchscript') -> str:
    """Export ``model``'s network (see the module docstring) to ``path`` with dynamic batch,
    height and width; ``example`` is an input batch of the right channel count, at least as
    high and wide as :func:`_smallest_side` (33 px; a detector with a 5-level pyramid 61).

    ``fold`` (default True): export a copy with batch norms folded into convs and the streams
    mixed before resizing (``hrnet_mm.rewrites``), the same function in fewer operations;
    ``model`` is not changed. False exports the model's own graph. A model on a GPU is
    exported from a copy on the CPU (the exported model runs on CPU runtimes).

    ``exporter``: ``'torchscript'`` (default) traces the network once; ``'dynamo'`` captures
    it with torch.export under symbolic shapes. Both give graphs that compute PyTorch's output
    at every size and batch (HRNet's sizes are read from the tensors in either; the tests
    check both at sizes and batches the export did not see, and ONNX Runtime and OpenVINO run
    them at the same speed), but the trace takes a tenth of the time or less
    (docs/deployment.md: FCN-HRNetV2-W48 6-7 s against 45-47 s on 2 cores). PyTorch has
    deprecated its TorchScript exporter since 2.9 and still ships it; ``'dynamo'`` is the way
    on a torch without it. A trace records Python decisions at the example's size, so
    ``tools/deploy.py export`` checks every export at a second size."""
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    side = _smallest_side(model, task)
    if min(example.shape[-2:]) < side:
        raise ValueError(
            f'the example batch is {tuple(example.shape[-2:])}: an export of this {task} '
            f'network needs an example at least {side} px high and wide; give a larger one')
    example = example.cpu()
    if device_of(model).type != 'cpu':
        model = copy.deepcopy(model).cpu()
    if fold:
        from .rewrites import fold_batch_norms, mix_streams_before_resize
        model = mix_streams_before_resize(fold_batch_norms(copy.deepcopy(model).eval()))
    net = network(model, task)
    if exporter == 'dynamo':
        if example.shape[0] == 1:  # a dynamic batch needs an example of two or more
            example = torch.cat([example, example])
        batch = torch.export.Dim('batch', min=1, max=1024)
        height = torch.export.Dim('height', min=side, max=8192)
        width = torch.export.Dim('width', min=side, max=8192)
        options = dict(dynamo=True, dynamic_shapes=({0: batch, 2: height, 3: width},))
    else:
        options = dict(dynamo=False,
                       dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'}})
    with torch.no_grad(), warnings.catch_warnings():
        # chosen, not stumbled on (see above)
        warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based ONNX',
                                DeprecationWarning)
        warnings.filterwarnings('ignore', 'The feature will be removed', DeprecationWarning)
        # hrnet_mm's input checks compare sizes in Python (the trace keeps their outcome at
        # the example, which passed them); its graphs read sizes from the tensors
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning,
                                module=r'hrnet_mm\.')
        torch.onnx.export(net, (example,), path, opset_version=opset, input_names=['input'],
                          verbose=False, **options)
    return path


def to_openvino(onnx_path: str, xml_path: Optional[str] = None) -> str:
    """Convert an exported model to OpenVINO IR (``.xml`` + ``.bin``), its weights in float32
    as exported. (``ov.save_model`` stores them in float16 by default: FCN-HRNetV2-W48's
    argmax then disagrees with mmseg's on 3.7% of pixels, on random weights; see
    docs/benchmarks.md.)"""
    import openvino as ov
    xml_path = xml_path or osp.splitext(onnx_path)[0] + '.xml'
    ov.save_model(ov.convert_model(onnx_path), xml_path, compress_to_fp16=False)
    return xml_path


class Runtime:
    """An exported model on ONNX Runtime or OpenVINO, called like the network: NCHW float32
    tensor in, list of float32 tensors out.

    Args:
        backend (str): ``'onnxruntime'`` or ``'openvino'``.
        path (str): ``.onnx`` (either backend) or OpenVINO ``.xml``.
        precision (str): ``'fp32'``, ``'bf16'`` (OpenVINO's ``INFERENCE_PRECISION_HINT``) or
            ``'int8'`` (OpenVINO, a model quantized by :func:`quantize_openvino`; the layers
            it left in floating point run at OpenVINO's default precision). ONNX Runtime's
            CPU provider computes in float32 only.
        threads (int, optional): intra-op threads; default the runtime's own choice.
    """

    def __init__(self, backend: str, path: str, precision: str = 'fp32',
                 threads: Optional[int] = None):
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        if precision not in PRECISIONS['openvino']:
            raise ValueError(f"precision must be one of {PRECISIONS['openvino']}, "
                             f'got {precision!r}')
        if not osp.isfile(path):
            raise FileNotFoundError(f'no exported model at {path!r}; run tools/deploy.py export'
                                    + (' --int8' if precision == 'int8' else ''))
        self.backend, self.path, self.precision = backend, path, precision
        try:
            if backend == 'onnxruntime':
                import onnxruntime as ort
                if precision != 'fp32':
                    raise ValueError(f"ONNX Runtime's CPU provider has no {precision} path; "
                                     "use precision='fp32' or backend='openvino'")
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                if threads:
                    options.intra_op_num_threads = threads
                self._session = ort.InferenceSession(path, options,
                                                     providers=['CPUExecutionProvider'])
                self._input = self._session.get_inputs()[0].name
            else:
                import openvino as ov
                core = ov.Core()
                model = core.read_model(path)
                if (precision == 'int8') != is_quantized(model):
                    raise ValueError(
                        f'{path} is a quantized (int8) model: use precision=\'int8\''
                        if precision != 'int8' else
                        f'{path} is not quantized: make an int8 model with tools/deploy.py '
                        'export --openvino --int8 (hrnet_mm.deploy.quantize_openvino)')
                config = {}
                if precision != 'int8':
                    config['INFERENCE_PRECISION_HINT'] = 'f32' if precision == 'fp32' else 'bf16'
                if threads:
                    config['INFERENCE_NUM_THREADS'] = threads
                self._config = config
                self.use_compiled(core.compile_model(model, 'CPU', config))
        except ImportError as err:
            raise ImportError(f'{backend} is not installed: pip install .[deploy] '
                              f'(or pip install {backend})') from err

    def use_compiled(self, compiled) -> 'Runtime':
        """Run an OpenVINO ``CompiledModel`` from now on (NNCF's accuracy control hands one
        to its validation function)."""
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        return self

    def op_counters(self, x: torch.Tensor, top: int = 8) -> dict:
        """Where one call's time goes (OpenVINO): its per-op counters (``PERF_COUNT``), summed
        by layer type and kernel (e.g. ``Convolution jit_avx2_I8``: which ops run int8 kernels
        and which stay in floating point), ``top`` of them by time, as shares of the total.
        The model is compiled again with the counters on, as this runtime compiled it, and
        called twice (the first call warms up); this runtime is not changed.

        Returns:
            dict: ``total_ms`` and ``ops``, a list of ``op``, ``self_ms``, ``share``,
            ``calls`` (the layers of that type and kernel).
        """
        if self.backend != 'openvino':
            raise ValueError('per-op counters are read from OpenVINO only; ONNX Runtime has '
                             'its own profiler (SessionOptions.enable_profiling)')
        import openvino as ov
        compiled = ov.Core().compile_model(self.path, 'CPU',
                                           dict(self._config, PERF_COUNT=True))
        request = compiled.create_infer_request()
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        for _ in range(2):
            request.infer({0: array})
        times, calls = {}, {}
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            key = f'{info.node_type} {info.exec_type}'
            times[key] = times.get(key, 0.0) + info.real_time.total_seconds() * 1e3
            calls[key] = calls.get(key, 0) + 1
        total = sum(times.values())
        ranked = sorted(times, key=lambda k: -times[k])[:top]
        return dict(total_ms=total, ops=[dict(op=k, self_ms=times[k], share=times[k] / total,
                                              calls=calls[k]) for k in ranked])

    def __call__(self, x: torch.Tensor) -> List[torch.Tensor]:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        if self.backend == 'onnxruntime':
            outs = self._session.run(None, {self._input: array})
        else:
            result = self._request.infer({0: array})
            outs = [result[o] for o in self._compiled.outputs]
        return [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outs]


@MODELS.register_module()
class ExportedNetwork(BaseModule):
    """An exported network as a toolbox module: the image batch in, the runtime's outputs as a
    tuple (pose: the heatmaps; det: the feature pyramid) out.

    Args:
        backend (str): ``'onnxruntime'`` or ``'openvino'``.
        model_file (str): the exported model.
        precision (str): ``'fp32'``, ``'bf16'`` or ``'int8'`` (OpenVINO).
        threads (int, optional): the runtime's intra-op threads.
    """

    def __init__(self, backend: str, model_file: str, precision: str = 'fp32',
                 threads: Optional[int] = None, init_cfg=None):
        super().__init__(init_cfg)
        self.runtime = Runtime(backend, model_file, precision, threads)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(t.to(x.device) for t in self.runtime(x))


def is_quantized(model) -> bool:
    """Whether an OpenVINO model (``ov.Model``) has int8 layers (NNCF's FakeQuantize)."""
    return any(op.get_type_name() == 'FakeQuantize' for op in model.get_ops())


def float_convolutions(model) -> List[str]:
    """The convolutions of an OpenVINO model whose weights are not int8 (quantized weights are
    int8 constants or pass a FakeQuantize): all of them in a floating-point model, those that
    an accuracy-controlled quantization kept in floating point in an int8 one."""
    def quantized_weights(node, depth=0):
        kind = node.get_type_name()
        if kind == 'FakeQuantize':
            return True
        if kind == 'Constant':
            return node.get_output_element_type(0).get_type_name() in ('i8', 'u8', 'i4', 'u4')
        return depth < 4 and any(quantized_weights(v.get_node(), depth + 1)
                                 for v in node.input_values())
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ('Convolution', 'GroupConvolution')
            and not quantized_weights(op.input_value(1).get_node())]


def float_resizes_and_sums(model) -> List[str]:
    """The ops of an OpenVINO model (``ov.Model``) that int8 leaves in floating point: its
    resizes other than nearest, and the sums that take one of them.

    OpenVINO passes a dequantization through a nearest resize only (its low-precision
    ``InterpolateTransformation``), so a bilinear resize computes in floating point whatever
    its input. Quantized at their inputs, such a resize and the sum it feeds (an exchange
    unit's, the neck's) only gain conversions to and from int8 around them, and the sum is
    rounded to int8 once more; left out of quantization, they run in the model's floating-point
    precision (bf16 where the CPU has it) between int8 convs."""
    resizes = {op.get_friendly_name() for op in model.get_ordered_ops()
               if op.get_type_name() == 'Interpolate'
               and op.get_attributes().get('mode') != 'nearest'}
    sums = [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == 'Add'
            and any(v.get_node().get_friendly_name() in resizes for v in op.input_values())]
    return sorted(resizes) + sums


def _not_each_op_left_out(record: logging.LogRecord) -> bool:
    """NNCF logs a line for each op of an ignored scope; its other lines (the accuracy
    control's metrics among them) pass."""
    return not record.getMessage().startswith('Not adding activation input quantizer')


def quantize_openvino(xml_path: str, calibration: Sequence[np.ndarray], out_path: str, *,
                      max_drop: Optional[float] = None, validation: Optional[Sequence] = None,
                      validate=None) -> List[str]:
    """Quantize an OpenVINO model to int8 with NNCF and save it to ``out_path``.

    Post-training quantization (NNCF's defaults: per-channel symmetric int8 weights, int8
    activations with ranges from ``calibration``, fast bias correction), with the bilinear
    resizes and the sums they feed left in floating point (:func:`float_resizes_and_sums`;
    FCN-HRNetV2-W48 at 512x1024 runs 3-6% faster so: docs/deployment.md). With ``max_drop``,
    NNCF's accuracy-controlled mode instead: ``validate(compiled_model, validation)`` returns
    the metric (higher is better) and layers are returned to floating point, the most costly
    first, until the int8 model is within ``max_drop`` (absolute, in the metric's units) of the
    floating-point one.

    Args:
        xml_path (str): the floating-point OpenVINO model (:func:`to_openvino`).
        calibration: input batches (NCHW float32 arrays, normalised as the model's input).
        out_path (str): where the int8 ``.xml`` (+ ``.bin``) goes.
        max_drop (float, optional): the largest metric drop accepted.
        validation, validate: the validation items and the metric function (with
            ``max_drop``).

    Returns:
        The names of the convolutions left in floating point (none without ``max_drop``).
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as err:
        raise ImportError('int8 quantization needs NNCF and OpenVINO: pip install .[deploy] '
                          '(or pip install nncf openvino)') from err
    if not len(calibration):
        raise ValueError('no calibration images: quantization needs at least one')
    model = ov.Core().read_model(xml_path)
    data = nncf.Dataset(calibration)
    options = dict(subset_size=len(calibration))
    floating = float_resizes_and_sums(model)
    if floating:
        options['ignored_scope'] = nncf.IgnoredScope(names=floating)
    nncf_log = logging.getLogger('nncf')
    nncf_log.addFilter(_not_each_op_left_out)
    try:
        if max_drop is None:
            quantized = nncf.quantize(model, data, **options)
        else:
            if validate is None or not validation:
                raise ValueError('max_drop needs validation items and a validate function')
            quantized = nncf.quantize_with_accuracy_control(
                model, data, nncf.Dataset(validation), validation_fn=validate,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **options)
    finally:
        nncf_log.removeFilter(_not_each_op_left_out)
    # float32 for what is not int8: the quantizers' ranges, biases, layers kept in floating point
    ov.save_model(quantized, out_path, compress_to_fp16=False)
    return float_convolutions(quantized)


def agreement(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor],
              task: str) -> Tuple[float, float, Optional[float]]:
    """``(max |diff|, largest |reference|, argmax agreement)``: for seg the fraction of pixels
    whose class agrees, for pose of keypoints whose heatmap peak agrees, for det None."""
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(reference, other))
    scale = max(a.abs().max().item() for a in reference)
    if task == 'det':
        return diff, scale, None
    a, b = reference[0], other[0]
    if task == 'seg':
        agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    else:
        agree = (a.flatten(2).argmax(2) == b.flatten(2).argmax(2)).float().mean().item()
    return diff, scale, agree


def relative_rms(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """The largest over the outputs of ``RMS(other - reference) / RMS(reference)``: how far
    a quantized network's outputs are from the reference's as a whole (0.1 is 10% of their
    spread; outputs unrelated to the reference give about 1.4), where one clipped activation
    makes the largest difference large without the output being wrong."""
    return max(((b.float() - a.float()).square().mean() / a.float().square().mean().clamp_min(
        1e-30)).sqrt().item() for a, b in zip(reference, other))


try:
    from mmengine.config import ConfigDict
    from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
    from mmseg.models.utils import resize
except ImportError:  # pragma: no cover - mmseg not installed
    BaseSegmentor = None

if BaseSegmentor is not None:

    @MODELS.register_module()
    class DeployedSegmentor(BaseSegmentor):
        """An mmseg segmentor whose network is an exported model (:class:`Runtime`).

        The data preprocessor, the whole-image or sliding-window inference (``test_cfg``), the
        resize of the logits to the image and mmseg's post-processing are mmseg's own
        (``EncoderDecoder``'s methods), so ``runner.test()`` with the original config's dataset
        and metric evaluates the exported model as mmseg evaluates the original.
        ``tools/deploy.py export`` writes such a config; ``tools/deploy.py test`` runs it.

        Args:
            backend (str): ``'onnxruntime'`` or ``'openvino'``.
            model_file (str): the exported model.
            num_classes (int): classes of the logits.
            precision (str): ``'fp32'``, ``'bf16'`` or ``'int8'`` (OpenVINO).
            align_corners (bool): of the resize to the image, as the decode head's.
            threads (int, optional): the runtime's intra-op threads.
            test_cfg (dict): the original model's (``mode='whole'`` or ``'slide'`` with
                ``crop_size`` and ``stride``). Default whole-image inference.
            data_preprocessor (dict): the original model's.
        """

        def __init__(self, backend: str, model_file: str, num_classes: int,
                     precision: str = 'fp32', align_corners: bool = False,
                     threads: Optional[int] = None, test_cfg=None, data_preprocessor=None,
                     init_cfg=None):
            super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
            self.runtime = Runtime(backend, model_file, precision, threads)
            self.num_classes = self.out_channels = num_classes
            self.align_corners = align_corners
            self.test_cfg = ConfigDict(test_cfg or dict(mode='whole'))
            self.test_cfg.setdefault('mode', 'whole')

        # mmseg's own choice between whole-image and sliding-window inference, over the
        # exported network (each calls encode_decode below).
        inference = EncoderDecoder.inference
        whole_inference = EncoderDecoder.whole_inference
        slide_inference = EncoderDecoder.slide_inference

        def _forward(self, inputs, data_samples=None):
            return self.runtime(inputs)[0]

        def extract_feat(self, inputs):
            raise NotImplementedError('an exported model has no separate feature extractor')

        def encode_decode(self, inputs, batch_img_metas):
            logits = self._forward(inputs)
            return resize(logits, size=batch_img_metas[0]['img_shape'], mode='bilinear',
                          align_corners=self.align_corners)

        def loss(self, inputs, data_samples):
            raise NotImplementedError('an exported model cannot be trained')

        def predict(self, inputs, data_samples=None):
            if data_samples is not None:
                batch_img_metas = [s.metainfo for s in data_samples]
            else:
                batch_img_metas = [dict(ori_shape=inputs.shape[2:], img_shape=inputs.shape[2:],
                                        pad_shape=inputs.shape[2:],
                                        padding_size=[0, 0, 0, 0])] * inputs.shape[0]
            return self.postprocess_result(self.inference(inputs, batch_img_metas),
                                           data_samples)
