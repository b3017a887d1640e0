"""mmpose and mmdet end to end as users run them: mim train, then mim test on the checkpoint
it wrote, with mmpose's and mmdet's CocoMetric on generated COCO-format data."""
import os.path as osp
import re

import pytest

from .coco_data import make_coco
from .conftest import REPO, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return make_coco(str(tmp_path_factory.mktemp('coco')))


def _options(root):
    ann = osp.join(root, 'annotations', 'val.json')
    return ['--cfg-options'] + [f'{s}_dataloader.dataset.data_root={root}/'
                                for s in ('train', 'val', 'test')] + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def _train_then_test(package, cfg, root, tmp_path):
    cfg = osp.join(REPO, 'tests', 'configs', cfg)
    work = str(tmp_path / 'train')
    run_cli(['mim', 'train', package, cfg, '--work-dir', work] + _options(root))
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    return run_cli(['mim', 'test', package, cfg, '--checkpoint', ckpt,
                    '--work-dir', str(tmp_path / 'test')] + _options(root))


def test_pose_train_and_test_with_coco_metric(coco, tmp_path):
    out = _train_then_test('mmpose', 'pose_tiny.py', coco, tmp_path)
    ap = re.search(r'coco/AP: (-?[0-9.]+)', out)
    assert ap, out[-3000:]
    # COCO's -1 would mean nothing was scored; two epochs from scratch stay far from 1
    assert 0 <= float(ap.group(1)) < 0.9, ap.group(0)


def test_detection_train_and_test_with_coco_metric(coco, tmp_path):
    out = _train_then_test('mmdet', 'det_tiny.py', coco, tmp_path)
    for metric in ('bbox_mAP', 'segm_mAP'):
        value = re.search(rf'coco/{metric}: (-?[0-9.]+)', out)
        assert value, out[-3000:]
        # -1 would mean no detection reached the metric; one epoch from scratch stays low
        assert 0 <= float(value.group(1)) < 0.9, value.group(0)
