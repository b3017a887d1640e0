"""FLOPs and parameters of a config's model, counted by mmengine's analysis.

    python tools/get_flops.py configs/hrnet_w48_cityscapes.py --shape 512 1024

mmseg 1.2.2's ``analysis_tools/get_flops.py`` passes both ``input_shape`` and ``inputs`` to
mmengine 0.10's ``get_model_complexity_info``, which refuses that for every config; this is the
same count, done with ``inputs`` only. Works for mmseg and mmpose configs (the whole network's
tensor path) and mmdet configs (backbone + neck, the part hrnet_mm provides).

The count reads shapes only (mmengine's handles take each op's input and output shapes from the
trace), so the convolutions, nearly all of a forward's time, are not computed while it traces:
each answers zeros of its output's shape (:func:`shapes_only_convolutions`). The counts are
those of a computed forward (the metafile's entries, counted with computed convolutions, are
checked against this count for every config by the test suite). The count of W48 at 512x1024
takes about half the time it took with the convolutions computed (5.4 against 10.1 s on one
core), the count of a detector at 800x1344 a third.
"""
import argparse
import contextlib
import warnings

import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info

from hrnet_mm.builder import build_model_shapes


class TensorPath(torch.nn.Module):
    def __init__(self, model, scope):
        super().__init__()
        self.model, self.scope = model, scope

    def forward(self, x):
        if self.scope == 'mmdet':
            return self.model.extract_feat(x)
        return self.model._forward(x)


def tensor_path(model, scope):
    """What is counted: the tensor path, without mmseg's training-only auxiliary head."""
    if getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None  # training-only, as mmseg's tool does
    return TensorPath(model, scope)


def _conv_output(x, weight, bias, stride, padding, dilation, transposed, output_padding,
                 groups, *flags):
    """aten::_convolution's CPU kernel while counting: zeros of the output's shape and memory
    format (sizes may be traced tensors: int() reads them)."""
    if transposed:
        raise NotImplementedError('shapes_only_convolutions: transposed convolutions')
    size = [int(x.shape[0]), int(weight.shape[0])] + [
        (int(n) + 2 * p - d * (int(k) - 1) - 1) // s + 1
        for n, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)]
    channels_last = (x.dim() == 4 and not x.is_contiguous()
                     and x.is_contiguous(memory_format=torch.channels_last))
    return x.new_zeros(size).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@contextlib.contextmanager
def shapes_only_convolutions():
    """Within: CPU convolutions return zeros of their output's shape, uncomputed. The jit trace
    still records each as ``aten::_convolution`` with its inputs' and output's shapes, all that
    a FLOP or activation count reads. The kernel is torch's own again on exit."""
    with warnings.catch_warnings():  # torch warns that a registered kernel is overridden
        warnings.simplefilter('ignore')
        library = torch.library.Library('aten', 'IMPL')
        library.impl('_convolution', _conv_output, 'CPU')
    try:
        yield
    finally:
        library._destroy()


def complexity(model, scope, shape):
    """mmengine's count (FLOPs, activations, parameters) over the tensor path."""
    with torch.no_grad(), shapes_only_convolutions():
        return get_model_complexity_info(tensor_path(model, scope),
                                         inputs=(torch.rand(1, 3, *shape),),
                                         show_table=False, show_arch=False)


def flop_count(model, scope, shape):
    """The FLOPs of :func:`complexity` alone (its ``FlopAnalyzer``; half the tracing)."""
    with torch.no_grad(), shapes_only_convolutions():
        return FlopAnalyzer(tensor_path(model, scope), (torch.rand(1, 3, *shape),)).total()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 1024], metavar=('H', 'W'))
    args = parser.parse_args()
    _, scope, model = build_model_shapes(args.config)  # what is counted are shapes
    info = complexity(model, scope, args.shape)
    part = 'backbone + neck' if scope == 'mmdet' else 'whole model'
    print(f'Config: {args.config}\nInput shape: {(1, 3, *args.shape)} ({part})\n'
          f"Flops: {info['flops'] / 1e9:.2f} G\nParams: {info['params'] / 1e6:.3f} M")


if __name__ == '__main__':
    main()
