"""mmpose and mmdet end to end as users run them: mim train, then mim test on the checkpoint
it wrote, with mmpose's and mmdet's CocoMetric on generated COCO-format data (the training
and testing are the session fixtures ``trained_pose`` and ``trained_det``).

Two epochs from scratch score an AP of 0 on any data, so the scores only show that the metric
ran; what can fail is checked against the annotations and the training log."""
import glob
import json
import os.path as osp
import re

import numpy as np
import pytest

# one worker trains the pose and det models that these tests and test_deploy's share
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('trained_coco')]


def annotations(coco):
    with open(osp.join(coco, 'annotations', 'val.json')) as f:
        return json.load(f)


def losses(checkpoint):
    """The ``loss`` of every logged training iteration, from the run's scalars.json."""
    found = glob.glob(osp.join(osp.dirname(checkpoint), '*', 'vis_data', 'scalars.json'))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return [r['loss'] for r in map(json.loads, f) if 'loss' in r]


def test_pose_train_and_test_with_coco_metric(trained_pose, coco):
    import mmengine
    _, checkpoint, out, dump = trained_pose
    ap = re.search(r'coco/AP: (-?[0-9.]+)', out)
    assert ap, out[-3000:]
    assert 0 <= float(ap.group(1)) <= 1, ap.group(0)  # COCO's -1: nothing was scored
    # both epochs trained: every batch of 4 people logged a loss
    with open(osp.join(coco, 'annotations', 'train.json')) as f:
        people = len(json.load(f)['annotations'])
    assert len(losses(checkpoint)) == 2 * -(-people // 4)
    # One prediction per annotated person (GT boxes, bbox_file=None), 17 keypoints each, in
    # the image's coordinates: inside the region the top-down pipeline cropped, the box widened
    # to the input's 3:4 aspect and padded 1.25x (mmpose's GetBBoxCenterScale, TopdownAffine),
    # give or take a heatmap pixel. Would catch a lost sample or a wrong inverse transform.
    # (Keypoints whose heatmap peaks at or below 0 have no location: mmpose puts them at -1.)
    anns = {a['id']: a for a in annotations(coco)['annotations']}
    predictions = mmengine.load(dump)
    assert sorted(p['id'] for p in predictions) == sorted(anns)
    located = 0
    for p in predictions:
        x, y, w, h = anns[p['id']]['bbox']
        keypoints = np.asarray(p['pred_instances']['keypoints'])
        assert keypoints.shape == (1, 17, 2)
        keypoints = keypoints[0][np.asarray(p['pred_instances']['keypoint_scores'])[0] > 0]
        located += len(keypoints)
        center = np.array([x + w / 2, y + h / 2])
        w, h = max(w, h * 192 / 256), max(h, w * 256 / 192)
        half = np.array([w, h]) * 1.25 / 2
        margin = 2 * half / np.array([48, 64])
        assert (np.abs(keypoints - center) <= half + margin).all(), (p['id'], keypoints)
    assert located >= 17 * len(predictions) / 2


def test_detection_train_and_test_with_coco_metric(trained_det, coco):
    import mmengine
    _, checkpoint, out, dump = trained_det
    for metric in ('bbox_mAP', 'segm_mAP'):
        value = re.search(rf'coco/{metric}: (-?[0-9.]+)', out)
        assert value, out[-3000:]
        assert 0 <= float(value.group(1)) <= 1, value.group(0)  # -1: no detection scored
    # The detector learns: four iterations (seeded) take its loss below 3/4 of where it
    # started (16.8 -> 6.1 measured). Would catch a frozen model or optimizer.
    loss = losses(checkpoint)
    assert len(loss) == 4 and loss[-1] < 0.75 * loss[0], loss
    # Every validation image has its detections: boxes inside the image (mmdet clips them),
    # masks of its size. Would catch a lost image or predictions in the network's frame.
    images = {i['id']: i for i in annotations(coco)['images']}
    predictions = mmengine.load(dump)
    assert sorted(p['img_id'] for p in predictions) == sorted(images)
    for p in predictions:
        image = images[p['img_id']]
        boxes = np.asarray(p['pred_instances']['bboxes'])
        assert len(boxes) > 0
        assert (boxes >= -1e-3).all() and (boxes[:, [0, 2]] <= image['width'] + 1e-3).all() \
            and (boxes[:, [1, 3]] <= image['height'] + 1e-3).all(), boxes
        assert tuple(p['pred_instances']['masks'][0]['size']) == (image['height'], image['width'])
