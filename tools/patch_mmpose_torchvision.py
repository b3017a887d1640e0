"""Make mmpose's one module-level torchvision import optional (idempotent).

mmpose 1.3.2 ``mmpose/visualization/simcc_vis.py`` does ``from torchvision.transforms import
ToPILImage`` at import time, and every mmpose run imports it through the visualizer. The
registry's torchvision is a CUDA build that crashes next to CPU torch, and nothing else in
mmpose's pose pipelines needs it, so the import becomes optional; only SimCC heatmap drawing
(unused by heatmap models) would then need torchvision.
"""
import importlib.util
import os.path as osp
import sys

ORIGINAL = 'from torchvision.transforms import ToPILImage\n'
PATCHED = ('try:  # optional: only SimCC heatmap drawing uses it (patched by hrnet_mm bootstrap)\n'
           '    from torchvision.transforms import ToPILImage\n'
           'except ImportError:\n'
           '    ToPILImage = None\n')

spec = importlib.util.find_spec('mmpose')
path = osp.join(osp.dirname(spec.origin), 'visualization', 'simcc_vis.py')
with open(path, encoding='utf-8') as f:
    text = f.read()
if PATCHED in text:
    sys.exit(0)
if text.count(ORIGINAL) != 1:
    sys.exit(f'{path} is not the mmpose 1.3.2 file this patch expects; not changed')
with open(path, 'w', encoding='utf-8') as f:
    f.write(text.replace(ORIGINAL, PATCHED))
print(f'made the torchvision import optional in {path}')
