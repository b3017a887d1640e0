"""mmpose and mmdet end to end as users run them: mim train, then mim test on the checkpoint
it wrote, with mmpose's and mmdet's CocoMetric on generated COCO-format data (the training
and testing are the session fixtures ``trained_pose`` and ``trained_det``)."""
import re

import pytest

pytestmark = pytest.mark.slow


def test_pose_train_and_test_with_coco_metric(trained_pose):
    out = trained_pose[2]
    ap = re.search(r'coco/AP: (-?[0-9.]+)', out)
    assert ap, out[-3000:]
    # COCO's -1 would mean nothing was scored; two epochs from scratch stay far from 1
    assert 0 <= float(ap.group(1)) < 0.9, ap.group(0)


def test_detection_train_and_test_with_coco_metric(trained_det):
    out = trained_det[2]
    for metric in ('bbox_mAP', 'segm_mAP'):
        value = re.search(rf'coco/{metric}: (-?[0-9.]+)', out)
        assert value, out[-3000:]
        # -1 would mean no detection reached the metric; one epoch from scratch stays low
        assert 0 <= float(value.group(1)) < 0.9, value.group(0)
