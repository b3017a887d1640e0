"""Convert an official HRNet (segmentation or classification) or timm HRNet checkpoint into
hrnet_mm keys (which are mmseg's, mmdet's and mmpose's).

    python tools/convert_checkpoint.py official-seg hrnet_w48_cityscapes.pth out.pth --arch w48
    python tools/convert_checkpoint.py official-cls hrnetv2_w32_imagenet.pth out.pth --arch w32
    python tools/convert_checkpoint.py timm hrnet_w18.pth out.pth --arch w18

Prints what it dropped (incre_modules, downsamp_modules, final_layer, classifier, loss
weights); exits 1 with the offending keys when shapes or keys do not fit ``--arch``.

The classification networks (official and timm) were trained with nearest upsampling in their
exchange units, the official segmentation one with bilinear: build the backbone the weights
are used in the same way (the tool says which), e.g.
``backbone=dict(type='hrnet_mm.HRNet', arch='w32', upsample_mode='nearest', init_cfg=...)``.
"""
import argparse
import sys

import torch

from hrnet_mm.convert import FORMATS, ConversionError, convert


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src_format', choices=FORMATS)
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--arch', required=True, help='HRNet preset, e.g. w18, w32, w48')
    args = parser.parse_args(argv)
    try:
        ckpt = torch.load(args.src, map_location='cpu')  # weights_only: tensors only
    except Exception as err:  # truncated, corrupt or not a torch file
        sys.exit(f'cannot read {args.src}: {type(err).__name__}: {err}')
    try:
        state, dropped = convert(ckpt, args.src_format, args.arch)
    except (ConversionError, ValueError) as err:
        sys.exit(f'conversion failed: {err}')
    groups = sorted({k.split('.')[0] for k in dropped})
    print(f'dropped {len(dropped)} tensors' + (f' ({", ".join(groups)})' if groups else ''))
    torch.save({'state_dict': state, 'meta': {'converted_from': args.src_format,
                                               'arch': args.arch}}, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')
    mode = 'bilinear' if args.src_format == 'official-seg' else 'nearest'
    print(f"these weights were trained with {mode} upsampling in the exchange units: build "
          f"the backbone with upsample_mode='{mode}'"
          + (' (the default in mmseg configs)' if mode == 'bilinear' else
             " (mmseg configs default to 'bilinear')"))


if __name__ == '__main__':
    main()
