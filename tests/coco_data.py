"""Small generated COCO-format person data: images with stick-figure people, their 17 COCO
keypoints (with visibility), boxes and polygon masks, for mmpose's and mmdet's CocoDataset and
CocoMetric."""
import json
import os
import os.path as osp

import cv2
import numpy as np

# COCO keypoint order: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
_OFFSETS = np.array([
    (0, -0.42), (-0.03, -0.45), (0.03, -0.45), (-0.06, -0.43), (0.06, -0.43),
    (-0.12, -0.30), (0.12, -0.30), (-0.17, -0.12), (0.17, -0.12), (-0.19, 0.05), (0.19, 0.05),
    (-0.08, 0.05), (0.08, 0.05), (-0.09, 0.27), (0.09, 0.27), (-0.10, 0.48), (0.10, 0.48)])
_LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (5, 6), (11, 12), (5, 11), (6, 12), (11, 13),
          (13, 15), (12, 14), (14, 16), (0, 5), (0, 6)]


def _person(rng, img, cx, cy, height):
    kpts = np.stack([cx + _OFFSETS[:, 0] * height * rng.uniform(0.9, 1.1),
                     cy + _OFFSETS[:, 1] * height], axis=1)
    kpts += rng.normal(0, height * 0.01, kpts.shape)
    color = tuple(int(c) for c in rng.integers(40, 220, 3))
    thick = max(int(height * 0.06), 2)
    for a, b in _LIMBS:
        cv2.line(img, tuple(np.int32(kpts[a])), tuple(np.int32(kpts[b])), color, thick)
    cv2.circle(img, tuple(np.int32(kpts[0])), max(int(height * 0.07), 2), (200, 170, 140), -1)
    for k in kpts[5:]:
        cv2.circle(img, tuple(np.int32(k)), max(thick // 2, 1), (255, 255, 255), -1)
    x0, y0 = kpts.min(0) - thick
    x1, y1 = kpts.max(0) + thick
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    vis = np.where((kpts[:, 0] >= 0) & (kpts[:, 0] < w) & (kpts[:, 1] >= 0)
                   & (kpts[:, 1] < h), 2, 0)
    keypoints = np.concatenate([kpts, vis[:, None]], 1)
    keypoints[vis == 0, :2] = 0
    poly = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
    return dict(keypoints=[float(v) for v in keypoints.reshape(-1)],
                num_keypoints=int((vis > 0).sum()),
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float((x1 - x0) * (y1 - y0)), segmentation=[poly], iscrowd=0,
                category_id=1)


def make_coco(root, *, num_train=8, num_val=4, size=(192, 256), seed=0):
    """Writes ``root/{train,val}/*.png`` and ``root/annotations/{train,val}.json``."""
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_id = 1
    for split, n in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            rng = np.random.default_rng([seed, int(split == 'val'), i])
            h, w = size
            img = np.full((h, w, 3), rng.integers(60, 200, 3), np.uint8)
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            img_id = i + 1
            for _ in range(int(rng.integers(1, 3))):
                height = rng.uniform(0.45, 0.8) * h
                a = _person(rng, img, rng.uniform(0.25, 0.75) * w, rng.uniform(0.45, 0.55) * h,
                            height)
                anns.append(dict(a, id=ann_id, image_id=img_id))
                ann_id += 1
            name = f'{split}_{i:04d}.png'
            cv2.imwrite(osp.join(root, split, name), img)
            images.append(dict(id=img_id, file_name=name, height=h, width=w))
        categories = [dict(id=1, name='person', supercategory='person',
                           keypoints=['nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
                                      'left_shoulder', 'right_shoulder', 'left_elbow',
                                      'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
                                      'right_hip', 'left_knee', 'right_knee', 'left_ankle',
                                      'right_ankle'],
                           skeleton=[[a + 1, b + 1] for a, b in _LIMBS])]
        with open(osp.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=categories), f)
    return root
