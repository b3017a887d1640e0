"""Procedural street scenes in the exact Cityscapes layout.

``make_dataset(root)`` writes::

    root/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
    root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png

so mmseg's ``CityscapesDataset`` (train ids) and ``CityscapesMetric`` (label ids, through
cityscapesscripts) read it unchanged. Each scene is drawn in depth order with perspective:
sky and clouds, buildings with windows, trees, a road with lane marks running to a vanishing
point, sidewalks and terrain, poles with signs and traffic lights, fences, cars and people
scaled by distance (so nearer objects occlude farther ones), then lighting, blur and noise.
Every image comes from its own seed: the same arguments give the same files.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import cv2
import numpy as np

# Cityscapes train ids and the label ids they come from.
TRAIN_IDS = dict(road=0, sidewalk=1, building=2, wall=3, fence=4, pole=5, traffic_light=6,
                 traffic_sign=7, vegetation=8, terrain=9, sky=10, person=11, rider=12, car=13,
                 truck=14, bus=15, train=16, motorcycle=17, bicycle=18)
TRAIN_TO_LABEL_ID = np.full(256, 0, np.uint8)
TRAIN_TO_LABEL_ID[:19] = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32,
                          33]
CITIES = {'train': ('aachen', 'bremen', 'zurich'), 'val': ('frankfurt', 'lindau')}


def _jitter(rng, base, spread):
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


class _Canvas:
    """An RGB image and its train-id map, painted together."""

    def __init__(self, h: int, w: int):
        self.img = np.zeros((h, w, 3), np.uint8)
        self.lbl = np.full((h, w), 255, np.uint8)
        self.inst = np.zeros((h, w), np.int32)  # object index while drawing a person or car
        self.instance = 0
        self.h, self.w = h, w

    def _layers(self, color, cls):
        """(array, value) pairs: one shape is painted into image, labels and instances alike."""
        return ((self.img, color), (self.lbl, int(cls)), (self.inst, self.instance))

    def poly(self, pts, color, cls):
        pts = np.asarray(pts, np.int32).reshape(-1, 1, 2)
        for layer, value in self._layers(color, cls):
            cv2.fillPoly(layer, [pts], value)

    def rect(self, x0, y0, x1, y1, color, cls):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, cls)

    def ellipse(self, cx, cy, ax, ay, color, cls):
        center, axes = (int(cx), int(cy)), (max(int(ax), 1), max(int(ay), 1))
        for layer, value in self._layers(color, cls):
            cv2.ellipse(layer, center, axes, 0, 0, 360, value, -1)

    def texture(self, rng, cls, amp):
        """Add per-pixel noise, scaled by ``amp``, where the label is ``cls``."""
        m = self.lbl == cls
        if m.any():
            noise = rng.normal(0, amp, (int(m.sum()), 1))
            self.img[m] = np.clip(self.img[m].astype(np.float32) + noise, 0, 255).astype(np.uint8)


def draw_scene(rng: np.random.Generator, h: int = 256, w: int = 512
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One street scene: RGB uint8 image (h x w x 3), train-id uint8 map, and the Cityscapes
    instance-id map (uint16: label id, or label id * 1000 + k for the k-th person or car)."""
    c = _Canvas(h, w)
    T = TRAIN_IDS
    horizon = int(h * rng.uniform(0.36, 0.5))
    vx = int(w * rng.uniform(0.35, 0.65))  # vanishing point

    # Sky: vertical gradient and soft clouds.
    top, bottom = np.array(_jitter(rng, (90, 140, 210), 25)), np.array(_jitter(rng, (180, 205, 235), 20))
    t = np.linspace(0, 1, horizon + 1)[:, None, None]
    c.img[:horizon + 1] = (top * (1 - t) + bottom * t).astype(np.uint8)
    c.lbl[:horizon + 1] = T['sky']
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.integers(0, w), rng.integers(0, max(horizon // 2, 1))
        cv2.ellipse(c.img, (int(cx), int(cy)), (int(rng.integers(20, 60)), int(rng.integers(6, 16))),
                    0, 0, 360, _jitter(rng, (235, 238, 242), 10), -1)

    # Ground: terrain everywhere below the horizon, then sidewalks and the road over it.
    c.rect(0, horizon, w, h, _jitter(rng, (110, 140, 70), 20), T['terrain'])
    c.texture(rng, T['terrain'], 14)
    half_bottom = w * rng.uniform(0.28, 0.42)
    walk = w * rng.uniform(0.12, 0.2)
    left_x, right_x = vx - half_bottom, vx + half_bottom
    sidewalk_col = _jitter(rng, (175, 160, 165), 15)
    c.poly([(vx - 3, horizon), (vx + 3, horizon), (right_x + walk, h), (left_x - walk, h)],
           sidewalk_col, T['sidewalk'])
    for k in range(1, 12):  # paving joints, drawn in the image only
        y = int(horizon + (h - horizon) * (k / 12) ** 1.6)
        cv2.line(c.img, (0, y), (w, y), tuple(v - 25 for v in sidewalk_col), 1)
    c.texture(rng, T['sidewalk'], 8)
    c.poly([(vx - 2, horizon), (vx + 2, horizon), (right_x, h), (left_x, h)],
           _jitter(rng, (80, 80, 85), 12), T['road'])
    c.texture(rng, T['road'], 9)
    for k in range(8):  # dashed centre line, part of the road
        f0, f1 = (k / 8) ** 1.5, ((k + 0.5) / 8) ** 1.5
        y0, y1 = horizon + (h - horizon) * f0, horizon + (h - horizon) * f1
        x0 = vx + (rng.uniform(-0.02, 0.02)) * w * f0
        wd0, wd1 = 1 + 5 * f0, 1 + 5 * f1
        pts = [(x0 - wd0, y0), (x0 + wd0, y0), (x0 + wd1, y1), (x0 - wd1, y1)]
        cv2.fillPoly(c.img, [np.int32(pts).reshape(-1, 1, 2)], (225, 225, 215))

    def ground_x(side, frac, y):
        """x on the sidewalk's middle at row y, left (-1) or right (+1)."""
        d = (y - horizon) / max(h - horizon, 1)
        return vx + side * (half_bottom + frac * walk) * d

    # Buildings along the horizon, some with a wall or fence in front.
    x = -rng.integers(0, 30)
    while x < w:
        bw = int(rng.integers(40, 120))
        top_y = int(horizon - rng.uniform(0.15, 0.34) * h)
        base = horizon + int(rng.integers(0, 6))
        col = _jitter(rng, [(150, 130, 110), (170, 165, 150), (120, 110, 115), (185, 150, 120)][
            rng.integers(0, 4)], 15)
        c.rect(x, top_y, x + bw, base, col, T['building'])
        dark = tuple(int(v * 0.45) for v in col)
        for wy in range(top_y + 6, base - 8, 14):
            for wx in range(x + 5, x + bw - 8, 12):
                if rng.random() < 0.8:
                    cv2.rectangle(c.img, (wx, wy), (wx + 6, wy + 8), dark, -1)
        x += bw + int(rng.integers(0, 10))
    c.texture(rng, T['building'], 6)
    if rng.random() < 0.5:
        x0 = int(rng.integers(0, w // 2))
        c.rect(x0, horizon - int(h * 0.05), x0 + int(rng.integers(60, 160)), horizon + 3,
               _jitter(rng, (160, 150, 140), 10), T['wall'])
    if rng.random() < 0.6:
        x0 = int(rng.integers(w // 3, w))
        y0, y1 = horizon - int(h * 0.06), horizon + 3
        x1 = x0 + int(rng.integers(60, 150))
        col = _jitter(rng, (120, 110, 90), 10)
        for fx in range(x0, x1, 6):
            c.rect(fx, y0, fx + 2, y1, col, T['fence'])
        c.rect(x0, y0, x1, y0 + 2, col, T['fence'])
        c.rect(x0, (y0 + y1) // 2, x1, (y0 + y1) // 2 + 2, col, T['fence'])

    # Depth-sorted street furniture, trees, cars and people (far first, near ones occlude).
    items = []
    for _ in range(rng.integers(2, 5)):
        items.append(('tree', rng.uniform(0.05, 1.0), rng.choice([-1, 1])))
    for _ in range(rng.integers(1, 4)):
        items.append(('pole', rng.uniform(0.1, 1.0), rng.choice([-1, 1])))
    for _ in range(rng.integers(1, 5)):
        items.append(('car', rng.uniform(0.15, 1.0), rng.choice([-1, 1])))
    for _ in range(rng.integers(1, 5)):
        items.append(('person', rng.uniform(0.15, 1.0), rng.choice([-1, 1])))
    items.sort(key=lambda it: it[1])
    for n, (kind, depth, side) in enumerate(items):
        c.instance = n + 1 if kind in ('car', 'person') else 0
        y = horizon + depth * (h - horizon)  # ground contact row
        s = max(depth, 0.08)  # perspective scale
        if kind == 'tree':
            gx = ground_x(side, rng.uniform(0.6, 1.6), y)
            trunk_h = 60 * s
            c.rect(gx - 3 * s, y - trunk_h, gx + 3 * s, y, _jitter(rng, (90, 70, 50), 10),
                   T['vegetation'])
            for _ in range(4):
                c.ellipse(gx + rng.uniform(-20, 20) * s, y - trunk_h - rng.uniform(0, 25) * s,
                          rng.uniform(18, 32) * s, rng.uniform(16, 28) * s,
                          _jitter(rng, (60, 120, 50), 20), T['vegetation'])
        elif kind == 'pole':
            gx = ground_x(side, rng.uniform(0.2, 0.6), y)
            ph = 150 * s
            c.rect(gx - 2.5 * s - 0.5, y - ph, gx + 2.5 * s + 0.5, y,
                   _jitter(rng, (110, 110, 115), 10), T['pole'])
            if rng.random() < 0.5:
                r = 9 * s + 1
                c.ellipse(gx, y - ph + r, r, r,
                          [(200, 30, 30), (30, 70, 200), (230, 200, 40)][rng.integers(0, 3)],
                          T['traffic_sign'])
            else:
                bx0, by0 = gx - 6 * s - 1, y - ph
                c.rect(bx0, by0, bx0 + 12 * s + 2, by0 + 30 * s + 2, (35, 35, 35),
                       T['traffic_light'])
                lamp = [(230, 40, 30), (240, 190, 40), (40, 200, 80)][rng.integers(0, 3)]
                cv2.circle(c.img, (int(gx), int(by0 + 8 * s + 1)), max(int(4 * s), 1), lamp, -1)
        elif kind == 'car':
            lane = rng.uniform(0.15, 0.75) * side
            d = (y - horizon) / max(h - horizon, 1)
            gx = vx + lane * half_bottom * d
            cw, ch = 110 * s, 50 * s
            col = _jitter(rng, [(180, 20, 20), (30, 60, 160), (220, 220, 220), (30, 30, 30),
                                (140, 140, 150)][rng.integers(0, 5)], 20)
            c.rect(gx - cw / 2, y - ch * 0.65, gx + cw / 2, y - ch * 0.1, col, T['car'])
            c.poly([(gx - cw * 0.32, y - ch * 0.65), (gx - cw * 0.2, y - ch),
                    (gx + cw * 0.2, y - ch), (gx + cw * 0.32, y - ch * 0.65)], col, T['car'])
            cv2.rectangle(c.img, (int(gx - cw * 0.18), int(y - ch * 0.92)),
                          (int(gx + cw * 0.18), int(y - ch * 0.68)), (60, 80, 100), -1)
            for wx in (gx - cw * 0.3, gx + cw * 0.3):
                c.ellipse(wx, y - ch * 0.12, 11 * s, 11 * s, (20, 20, 20), T['car'])
        elif kind == 'person':
            gx = ground_x(side, rng.uniform(0.1, 0.9), y)
            ph = 75 * s
            skin = _jitter(rng, (200, 160, 130), 30)
            shirt = tuple(int(v) for v in rng.integers(30, 230, 3))
            c.rect(gx - 5 * s, y - ph * 0.45, gx - 1 * s, y, (40, 40, 70), T['person'])
            c.rect(gx + 1 * s, y - ph * 0.45, gx + 5 * s, y, (40, 40, 70), T['person'])
            c.rect(gx - 8 * s, y - ph * 0.85, gx + 8 * s, y - ph * 0.43, shirt, T['person'])
            c.ellipse(gx, y - ph * 0.92, 6 * s + 0.5, 7 * s + 0.5, skin, T['person'])
    c.instance = 0
    c.texture(rng, T['vegetation'], 18)

    # Camera: lighting, slight blur and sensor noise; labels keep their pixels.
    img = c.img.astype(np.float32) * rng.uniform(0.75, 1.2) + rng.uniform(-15, 15)
    img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 0.9))
    img += rng.normal(0, 4, img.shape)
    label_ids = TRAIN_TO_LABEL_ID[c.lbl].astype(np.int32)
    instances = label_ids.copy()
    for cls in (T['person'], T['car']):
        ids = np.unique(c.inst[(c.lbl == cls) & (c.inst > 0)])
        for k, obj in enumerate(ids):
            instances[(c.lbl == cls) & (c.inst == obj)] = int(TRAIN_TO_LABEL_ID[cls]) * 1000 + k
    return np.clip(img, 0, 255).astype(np.uint8), c.lbl, instances.astype(np.uint16)


def make_dataset(root: str, *, num_train: int = 120, num_val: int = 24, size=(256, 512),
                 seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``root`` (skipping files already there); returns counts."""
    counts = {}
    for split, n in (('train', num_train), ('val', num_val)):
        cities = CITIES[split]
        for i in range(n):
            city = cities[i % len(cities)]
            stem = f'{city}_{i:06d}_000019'
            img_dir = osp.join(root, 'leftImg8bit', split, city)
            gt_dir = osp.join(root, 'gtFine', split, city)
            img_path = osp.join(img_dir, f'{stem}_leftImg8bit.png')
            ids_path = osp.join(gt_dir, f'{stem}_gtFine_labelIds.png')
            inst_path = osp.join(gt_dir, f'{stem}_gtFine_instanceIds.png')
            if all(osp.exists(p) for p in (img_path, ids_path, inst_path)):
                continue
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(gt_dir, exist_ok=True)
            rng = np.random.default_rng([seed, 0 if split == 'train' else 1, i])
            img, lbl, instances = draw_scene(rng, *size)
            cv2.imwrite(img_path, img[:, :, ::-1])
            cv2.imwrite(osp.join(gt_dir, f'{stem}_gtFine_labelTrainIds.png'), lbl)
            cv2.imwrite(ids_path, TRAIN_TO_LABEL_ID[lbl])
            cv2.imwrite(inst_path, instances)
        counts[split] = n
    return counts
