"""Every preset's stage table, checked against sources that are not ours.

* the installed toolboxes' stock configs (read as a user's config is read, through mmengine);
* mmpretrain's ``HRNet.arch_zoo`` (mmpretrain/models/backbones/hrnet.py, open-mmlab/mmpretrain
  at 9fe593e), transcribed below row for row (mmpretrain is not installed here);
* the official HRNet-Image-Classification configs (experiments/cls_hrnet_*.yaml), transcribed
  below: the only source for the small v1 layout.

A row is (num_modules, num_branches, block, num_blocks, num_channels), stage 1 to 4.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from hrnet_mm import ARCH_ZOO, HRNet


# mmpretrain's HRNet.arch_zoo (open-mmlab/mmpretrain 9fe593e, mmpretrain/models/backbones/
# hrnet.py), row for row as it is written there.
MMPRETRAIN_ARCH_ZOO = {
    'w18': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (18, 36)),
            (4, 3, 'BASIC', (4, 4, 4), (18, 36, 72)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (18, 36, 72, 144))],
    'w30': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (30, 60)),
            (4, 3, 'BASIC', (4, 4, 4), (30, 60, 120)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (30, 60, 120, 240))],
    'w32': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (32, 64)),
            (4, 3, 'BASIC', (4, 4, 4), (32, 64, 128)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (32, 64, 128, 256))],
    'w40': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (40, 80)),
            (4, 3, 'BASIC', (4, 4, 4), (40, 80, 160)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (40, 80, 160, 320))],
    'w44': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (44, 88)),
            (4, 3, 'BASIC', (4, 4, 4), (44, 88, 176)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (44, 88, 176, 352))],
    'w48': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (48, 96)),
            (4, 3, 'BASIC', (4, 4, 4), (48, 96, 192)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (48, 96, 192, 384))],
    'w64': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (64, 128)),
            (4, 3, 'BASIC', (4, 4, 4), (64, 128, 256)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (64, 128, 256, 512))],
}

# HRNet-Image-Classification, experiments/cls_hrnet_<name>_sgd_lr5e-2_wd1e-4_bs32_x100.yaml.
OFFICIAL_CLS = {
    'w18_small': [(1, 1, 'BOTTLENECK', (1,), (32,)),          # cls_hrnet_w18_small_v1
                  (1, 2, 'BASIC', (2, 2), (16, 32)),
                  (1, 3, 'BASIC', (2, 2, 2), (16, 32, 64)),
                  (1, 4, 'BASIC', (2, 2, 2, 2), (16, 32, 64, 128))],
    'w18_small_v2': [(1, 1, 'BOTTLENECK', (2,), (64,)),       # cls_hrnet_w18_small_v2
                     (1, 2, 'BASIC', (2, 2), (18, 36)),
                     (3, 3, 'BASIC', (2, 2, 2), (18, 36, 72)),
                     (2, 4, 'BASIC', (2, 2, 2, 2), (18, 36, 72, 144))],
    'w30': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (30, 60)),
            (4, 3, 'BASIC', (4, 4, 4), (30, 60, 120)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (30, 60, 120, 240))],
    'w44': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (44, 88)),
            (4, 3, 'BASIC', (4, 4, 4), (44, 88, 176)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (44, 88, 176, 352))],
    'w64': [(1, 1, 'BOTTLENECK', (4,), (64,)),
            (1, 2, 'BASIC', (4, 4), (64, 128)),
            (4, 3, 'BASIC', (4, 4, 4), (64, 128, 256)),
            (3, 4, 'BASIC', (4, 4, 4, 4), (64, 128, 256, 512))],
}

# The toolboxes' stock configs, as installed: (package, config path, preset it must equal).
STOCK_CONFIGS = [
    ('mmseg', 'hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py', 'w18_small_v2'),
    ('mmseg', 'hrnet/fcn_hr18_4xb2-40k_cityscapes-512x1024.py', 'w18'),
    ('mmseg', 'hrnet/fcn_hr48_4xb2-40k_cityscapes-512x1024.py', 'w48'),
    ('mmdet', 'hrnet/faster-rcnn_hrnetv2p-w18-1x_coco.py', 'w18'),
    ('mmdet', 'hrnet/faster-rcnn_hrnetv2p-w32-1x_coco.py', 'w32'),
    ('mmdet', 'hrnet/faster-rcnn_hrnetv2p-w40-1x_coco.py', 'w40'),
    ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py',
     'w32'),
    ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w48_8xb32-210e_coco-256x192.py',
     'w48'),
]


def as_rows(stages):
    """A stage dict as rows of plain tuples, so lists and tuples compare alike."""
    return [(stages[f'stage{i}']['num_modules'], stages[f'stage{i}']['num_branches'],
             stages[f'stage{i}']['block'], tuple(stages[f'stage{i}']['num_blocks']),
             tuple(stages[f'stage{i}']['num_channels'])) for i in range(1, 5)]


def stock_extra(package, path):
    root = osp.dirname(__import__(package).__file__)
    cfg = Config.fromfile(osp.join(root, '.mim', 'configs', path))
    return cfg.model.backbone.extra


@pytest.mark.parametrize('package, path, preset', STOCK_CONFIGS,
                         ids=[f'{p}:{osp.basename(c)}' for p, c, _ in STOCK_CONFIGS])
def test_preset_equals_toolbox_stock_config(package, path, preset):
    extra = stock_extra(package, path)
    assert as_rows(ARCH_ZOO[preset]) == as_rows(extra)


@pytest.mark.parametrize('preset', sorted(MMPRETRAIN_ARCH_ZOO))
def test_preset_equals_mmpretrain_arch_zoo(preset):
    assert as_rows(ARCH_ZOO[preset]) == MMPRETRAIN_ARCH_ZOO[preset]


@pytest.mark.parametrize('preset', sorted(OFFICIAL_CLS))
def test_preset_equals_official_classification_config(preset):
    assert as_rows(ARCH_ZOO[preset]) == OFFICIAL_CLS[preset]


def test_every_preset_has_an_independent_source():
    sourced = ({p for _, _, p in STOCK_CONFIGS} | set(MMPRETRAIN_ARCH_ZOO) | set(OFFICIAL_CLS))
    assert set(ARCH_ZOO) <= sourced, set(ARCH_ZOO) - sourced


@pytest.mark.parametrize('package, path, preset', STOCK_CONFIGS[:3],
                         ids=[osp.basename(c) for _, c, _ in STOCK_CONFIGS[:3]])
def test_preset_builds_the_toolbox_network(package, path, preset):
    """Built from the preset and built by the toolbox from its own config: the same tensors."""
    from mmseg.models.backbones import HRNet as SegHRNet
    theirs = SegHRNet(extra=stock_extra(package, path)).state_dict()
    ours = HRNet(preset, compat='mmseg').state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert sum(v.numel() for v in ours.values() if v.dtype == torch.float32) == \
        sum(v.numel() for v in theirs.values() if v.dtype == torch.float32)
