"""FLOPs and parameters of a config's model, counted by mmengine's analysis.

    python tools/get_flops.py configs/hrnet_w48_cityscapes.py --shape 512 1024

mmseg 1.2.2's ``analysis_tools/get_flops.py`` passes both ``input_shape`` and ``inputs`` to
mmengine 0.10's ``get_model_complexity_info``, which refuses that for every config; this is the
same count, done with ``inputs`` only. Works for mmseg and mmpose configs (the whole network's
tensor path) and mmdet configs (backbone + neck, the part hrnet_mm provides).
"""
import argparse

import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info

from hrnet_mm.builder import build_model


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


def complexity(model, scope, shape):
    """mmengine's count (FLOPs, activations, parameters) over the tensor path."""
    with torch.no_grad():
        return get_model_complexity_info(tensor_path(model, scope),
                                         inputs=(torch.rand(1, 3, *shape),),
                                         show_table=False, show_arch=False)


def flop_count(model, scope, shape):
    """The FLOPs of :func:`complexity` alone (its ``FlopAnalyzer``; half the tracing)."""
    with torch.no_grad():
        return FlopAnalyzer(tensor_path(model, scope), (torch.rand(1, 3, *shape),)).total()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 1024], metavar=('H', 'W'))
    args = parser.parse_args()
    _, scope, model = build_model(args.config)
    info = complexity(model, scope, args.shape)
    part = 'backbone + neck' if scope == 'mmdet' else 'whole model'
    print(f'Config: {args.config}\nInput shape: {(1, 3, *args.shape)} ({part})\n'
          f"Flops: {info['flops'] / 1e9:.2f} G\nParams: {info['params'] / 1e6:.3f} M")


if __name__ == '__main__':
    main()
