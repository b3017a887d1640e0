"""The main job on the embedded default: street scenes -> mim train -> mim test -> pictures.

    python tools/run_demo.py [--config configs/demo_street_hrnet_w18_small.py]
                             [--work-dir work_dirs/demo] [--data-root data/demo_cityscapes]

1. writes the procedural Cityscapes-layout dataset (tools/street_scenes.py) if it is not there;
2. trains with ``mim train mmsegmentation <config>`` (mmengine's Runner, progress every 25 iters);
3. evaluates the last checkpoint with ``mim test mmsegmentation <config> --checkpoint ...``;
4. saves ``predictions/*.png`` (input | prediction | ground truth, Cityscapes colours) and
   ``curves.png`` (training loss and val mIoU over iterations) in the work dir.

It exits non-zero if any step fails. `bash tools/demo.sh` sets up the environment first.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run(cmd, log_path):
    """Run ``cmd``, echoing its output live and keeping a copy in ``log_path``."""
    print('$ ' + ' '.join(cmd), flush=True)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED='1'))
        for line in proc.stdout:
            log.write(line)
            # mmengine prints every initialised parameter at start-up; keep the console readable.
            if 'before and after calling `init_weights`' in line or 'Init:' in line:
                continue
            sys.stdout.write(line)
        if proc.wait() != 0:
            sys.exit(f'failed ({proc.returncode}): {" ".join(cmd)} - see {log_path}')


def save_predictions(config, checkpoint, data_root, out_dir, limit=8):
    import cv2
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from mmseg.datasets import CityscapesDataset

    os.makedirs(out_dir, exist_ok=True)
    model = init_model(config, checkpoint, device='cpu',
                       cfg_options={'model.pretrained': None})
    palette = np.zeros((256, 3), np.uint8)
    palette[:19] = CityscapesDataset.METAINFO['palette']
    images = sorted(glob.glob(osp.join(data_root, 'leftImg8bit', 'val', '*', '*.png')))[:limit]
    for path in images:
        gt_path = path.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelTrainIds.png')
        pred = inference_model(model, path).pred_sem_seg.data[0].numpy().astype(np.uint8)
        img = cv2.imread(path)
        gt = cv2.imread(gt_path, cv2.IMREAD_GRAYSCALE)
        row = np.concatenate([img, palette[pred][:, :, ::-1], palette[gt][:, :, ::-1]], axis=1)
        cv2.imwrite(osp.join(out_dir, osp.basename(path).replace('_leftImg8bit', '')), row)
    return len(images)


def plot_curves(train_dir, out_path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    # the latest run's log only (a work dir keeps the logs of earlier runs beside it)
    runs = sorted(glob.glob(osp.join(train_dir, '*', 'vis_data', 'scalars.json')))
    records = []
    if runs:
        with open(runs[-1]) as f:
            records = [json.loads(line) for line in f if line.strip()]
    loss = [(r['step'], r['loss']) for r in records if 'loss' in r]
    miou = [(r['step'], r['mIoU']) for r in records if 'mIoU' in r]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(*zip(*loss), color='tab:blue', label='training loss')
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss', color='tab:blue')
    ax2 = ax.twinx()
    if miou:
        ax2.plot(*zip(*miou), 'o-', color='tab:red', label='val mIoU')
    ax2.set_ylabel('val mIoU (%)', color='tab:red')
    ax2.set_ylim(0, 100)
    ax.set_title('HRNet-W18-Small on the procedural street scenes')
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return miou


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/demo_street_hrnet_w18_small.py')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo_cityscapes')
    parser.add_argument('--cfg-options', nargs='*', default=[],
                        help='extra key=value overrides passed to mim train and mim test')
    args = parser.parse_args()
    os.chdir(REPO)
    start = time.time()

    from street_scenes import make_dataset
    print(f'[demo] dataset in {args.data_root}: {make_dataset(args.data_root)} images', flush=True)

    os.makedirs(args.work_dir, exist_ok=True)
    data_opt = [f'train_dataloader.dataset.data_root={args.data_root}',
                f'val_dataloader.dataset.data_root={args.data_root}',
                f'test_dataloader.dataset.data_root={args.data_root}'] + args.cfg_options
    run(['mim', 'train', 'mmsegmentation', args.config, '--work-dir', args.work_dir,
         '--cfg-options'] + data_opt, osp.join(args.work_dir, 'train.log'))
    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()

    test_log = osp.join(args.work_dir, 'test.log')
    run(['mim', 'test', 'mmsegmentation', args.config, '--checkpoint', checkpoint,
         '--work-dir', osp.join(args.work_dir, 'test'), '--cfg-options'] + data_opt, test_log)
    with open(test_log) as f:
        found = re.findall(r'mIoU: ([0-9.]+)', f.read())
    if not found:
        sys.exit(f'mim test printed no mIoU - see {test_log}')
    test_miou = float(found[-1])

    n = save_predictions(args.config, checkpoint, args.data_root,
                         osp.join(args.work_dir, 'predictions'))
    curve = plot_curves(args.work_dir, osp.join(args.work_dir, 'curves.png'))
    print(f'[demo] val mIoU over iterations: {curve}')
    print(f'[demo] mim test on {osp.basename(checkpoint)}: val mIoU {test_miou:.2f} '
          '(mean over the classes present)')
    print(f'[demo] {n} predictions (input | prediction | ground truth) in '
          f'{osp.join(args.work_dir, "predictions")}; curves in '
          f'{osp.join(args.work_dir, "curves.png")}')
    print(f'[demo] done in {(time.time() - start) / 60:.1f} min')


if __name__ == '__main__':
    main()
