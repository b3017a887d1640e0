"""Write configs/metafile.yml (read by mim through model-index.yml) from the configs.

    python tools/metafile.py            # rewrite configs/metafile.yml
    python tools/metafile.py --check    # fail if it is out of date
    python tools/metafile.py --check configs/hrnet_w48_cityscapes.py   # one entry

Every config gets an entry in OpenMMLab's metafile format: its collection, config, metadata
(codebase, task, training data, parameters and FLOPs, counted here by mmengine at the input size
given below; for detectors the backbone and neck), and, where a reference exists, the
reference's results with their source: the toolbox's own metafile entry for the same network
and recipe (these are the toolbox's runs, not runs of ours; this machine has no GPU and none of
these datasets), or for the demo our own measurement (docs/results.md). No weights are
published, so no entry has ``Weights``.
"""
import argparse
import glob
import importlib
import json
import os.path as osp
import sys

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# our config -> (toolbox package, its metafile, its model name)
REFERENCES = {
    'hrnet_w18_small_cityscapes': ('mmseg', 'hrnet/metafile.yaml',
                                   'fcn_hr18s_4xb2-80k_cityscapes-512x1024'),
    'hrnet_w18_cityscapes': ('mmseg', 'hrnet/metafile.yaml',
                             'fcn_hr18_4xb2-80k_cityscapes-512x1024'),
    'hrnet_w48_cityscapes': ('mmseg', 'hrnet/metafile.yaml',
                             'fcn_hr48_4xb2-80k_cityscapes-512x1024'),
    'ocrnet_hrnet_w48_cityscapes': ('mmseg', 'ocrnet/metafile.yaml',
                                    'ocrnet_hr48_4xb2-80k_cityscapes-512x1024'),
    'hrnet_w32_coco_256x192': ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml',
                               'td-hm_hrnet-w32_8xb64-210e_coco-256x192'),
    'hrnet_w32_coco_384x288': ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml',
                               'td-hm_hrnet-w32_8xb64-210e_coco-384x288'),
    'hrnet_w48_coco_256x192': ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml',
                               'td-hm_hrnet-w48_8xb32-210e_coco-256x192'),
    'hrnet_w48_coco_384x288': ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml',
                               'td-hm_hrnet-w48_8xb32-210e_coco-384x288'),
    'faster_rcnn_hrnetv2p_w18_1x_coco': ('mmdet', 'hrnet/metafile.yml',
                                         'faster-rcnn_hrnetv2p-w18-1x_coco'),
    'faster_rcnn_hrnetv2p_w32_1x_coco': ('mmdet', 'hrnet/metafile.yml',
                                         'faster-rcnn_hrnetv2p-w32-1x_coco'),
    'faster_rcnn_hrnetv2p_w40_1x_coco': ('mmdet', 'hrnet/metafile.yml',
                                         'faster-rcnn_hrnetv2p-w40-1x_coco'),
    'mask_rcnn_hrnetv2p_w32_1x_coco': ('mmdet', 'hrnet/metafile.yml',
                                       'mask-rcnn_hrnetv2p-w32-1x_coco'),
    'cascade_rcnn_hrnetv2p_w32_20e_coco': ('mmdet', 'hrnet/metafile.yml',
                                           'cascade-rcnn_hrnetv2p-w32-20e_coco'),
}
# Results stated by others for a network and recipe of ours that no toolbox ships.
STATED_RESULTS = {
    'hrnet_w48_cityscapes_scratch': dict(
        Task='Semantic Segmentation', Dataset='Cityscapes', Metrics={'mIoU': 65.22},
        Source='a from-scratch HRNet implementation on Cityscapes, its README: "Achieved mIOU '
               '65.22% (without pre-trained backbone)" (a reference, not a run of ours)'),
}
# Our own measurement (docs/results.md): the demo is trained here, on generated data.
OWN_RESULTS = {
    'demo_street_hrnet_w18_small': dict(
        Task='Semantic Segmentation', Dataset='procedural street scenes (tools/street_scenes.py)',
        Metrics={'mIoU': 80.41},
        Source='docs/results.md (tools/demo.sh in bf16 on an AVX512-BF16 CPU; 77.4 in float32)'),
}
TASKS = {'mmseg': 'Semantic Segmentation', 'mmpose': 'Body 2D Keypoint',
         'mmdet': 'Object Detection'}
DATA = {'mmseg': 'Cityscapes', 'mmpose': 'COCO', 'mmdet': 'COCO'}


def reference_results(name):
    """The reference's results, as its toolbox's installed metafile states them."""
    package, metafile, model = REFERENCES[name]
    root = osp.dirname(importlib.import_module(package).__file__)
    with open(osp.join(root, '.mim', 'configs', metafile)) as f:
        entry = next(m for m in yaml.safe_load(f)['Models'] if m['Name'] == model)
    results = entry['Results'] if isinstance(entry['Results'], list) else [entry['Results']]
    source = f'{package} {metafile} {model} (the toolbox\'s run, not ours)'
    return [dict(Task=r.get('Task', TASKS[package]),
                 Dataset=DATA[package] if r.get('Dataset', '').startswith('#') else r['Dataset'],
                 Metrics=dict(r['Metrics']), Source=source) for r in results]


def input_shape(cfg, scope):
    if scope == 'mmpose':
        w, h = cfg.codec['input_size']
        return h, w
    if scope == 'mmdet':
        return 800, 1344  # COCO's 1333x800 resize, padded to a multiple of 32
    return tuple(cfg.get('crop_size', (512, 1024)))


def counted_network(cfg, scope):
    """What the FLOPs are counted over, as the config states it: the backbone and neck of a
    detector, the whole model otherwise (get_flops drops a segmentor's auxiliary head)."""
    model = cfg.model.to_dict()
    if scope == 'mmdet':
        model = dict(backbone=model['backbone'], neck=model.get('neck'))
    else:
        model.pop('auxiliary_head', None)
    return json.dumps(model, sort_keys=True, default=repr)


# FLOPs counted in this process, by (scope, input shape, counted network): configs that differ
# only outside it (a detector's heads, a recipe) share the count
_FLOPS = {}


def count(path):
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from get_flops import flop_count
    from hrnet_mm.builder import build_model_shapes  # shapes are what is counted
    cfg, scope, model = build_model_shapes(path)
    params = sum(p.numel() for p in model.parameters())  # the auxiliary head included
    shape = input_shape(cfg, scope)
    key = (scope, shape, counted_network(cfg, scope))
    if key not in _FLOPS:
        _FLOPS[key] = int(flop_count(model, scope, shape))
    return cfg, scope, params, _FLOPS[key], shape


def entry(path):
    """The metafile entry of one config (its FLOPs counted: seconds to a minute)."""
    name = osp.splitext(osp.basename(path))[0]
    cfg, scope, params, flops, shape = count(path)
    meta = {'Codebase': scope, 'Task': TASKS[scope],
            'Training Data': 'procedural street scenes' if name in OWN_RESULTS
            else DATA[scope],
            'Parameters': params, 'FLOPs': flops,
            'FLOPs counted on': f"1x3x{shape[0]}x{shape[1]}, "
            + ('backbone + neck' if scope == 'mmdet' else 'whole model')}
    out = {'Name': name, 'In Collection': 'hrnet_mm',
           'Config': osp.relpath(path, REPO), 'Metadata': meta}
    if name in REFERENCES:
        out['Results'] = reference_results(name)
    elif name in STATED_RESULTS:
        out['Results'] = [STATED_RESULTS[name]]
    elif name in OWN_RESULTS:
        out['Results'] = [OWN_RESULTS[name]]
    return out


def entries():
    return [entry(path) for path in sorted(glob.glob(osp.join(REPO, 'configs', '*.py')))]


def render():
    doc = {'Collections': [{
        'Name': 'hrnet_mm',
        'Metadata': {'Architecture': ['HRNet', 'HRNetV2', 'HRNetV2p']},
        'Paper': {'Title': 'Deep High-Resolution Representation Learning for Visual '
                           'Recognition', 'URL': 'https://arxiv.org/abs/1908.07919'},
        'README': 'README.md'}], 'Models': entries()}
    return ('# Written by tools/metafile.py; do not edit by hand.\n'
            + yaml.safe_dump(doc, sort_keys=False, width=100))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true')
    parser.add_argument('configs', nargs='*',
                        help='with --check: check only these configs\' entries')
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    from mmengine.logging import MMLogger
    import logging
    MMLogger.get_instance('mmengine').setLevel(logging.ERROR)
    path = osp.join(REPO, 'configs', 'metafile.yml')
    if args.configs:
        if not args.check:
            parser.error('configs are named with --check only (writing recounts them all)')
        with open(path) as f:
            listed = {m['Config']: m for m in yaml.safe_load(f)['Models']}
        for config in args.configs:
            config = osp.relpath(osp.abspath(config), REPO)
            if listed.get(config) != entry(osp.join(REPO, config)):
                raise SystemExit(f'configs/metafile.yml: the entry of {config} is out of date: '
                                 'python tools/metafile.py')
        print(f'configs/metafile.yml is up to date for {len(args.configs)} config(s)')
        return
    text = render()
    if args.check:
        with open(path) as f:
            if f.read() != text:
                raise SystemExit('configs/metafile.yml is out of date: python tools/metafile.py')
        print('configs/metafile.yml is up to date')
        return
    with open(path, 'w') as f:
        f.write(text)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
