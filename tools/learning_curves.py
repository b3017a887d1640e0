"""The demo's recipe trained in float32 and in bf16 mixed precision, side by side.

    python tools/learning_curves.py --iters 200 --png docs/learning_curves.png \\
        --json docs/learning_curves.json

Three runs of ``configs/demo_street_hrnet_w18_small.py`` on the same data with ``mim train``:
float32 with seed 0, float32 with seed 1 (the run-to-run noise), bf16 with seed 0. It prints
and writes each run's loss curve, its seconds per iteration and its final val mIoU, and how far
the bf16 curve is from the float32 one next to how far the two float32 seeds are apart.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RUNS = [('fp32 seed 0', 'float32', 0), ('fp32 seed 1', 'float32', 1),
        ('bf16 seed 0', 'bfloat16', 0)]


def train(name, dtype, seed, args):
    work = osp.join(args.work_dir, name.replace(' ', '_'))
    opts = [f'train_cfg.max_iters={args.iters}', f'train_cfg.val_interval={args.iters}',
            f'randomness.seed={seed}', f'optim_wrapper.dtype={dtype}',
            'default_hooks.logger.interval=5', f'default_hooks.checkpoint.interval={args.iters}']
    opts += [f'{s}_dataloader.dataset.data_root={args.data_root}'
             for s in ('train', 'val', 'test')]
    env = dict(os.environ, PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    subprocess.run(['mim', 'train', 'mmsegmentation', args.config, '--work-dir', work,
                    '--cfg-options', *opts], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    scalars = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))[-1]
    steps, losses, times, miou = [], [], [], None
    with open(scalars) as f:
        for line in f:
            rec = json.loads(line)
            if 'loss' in rec:
                steps.append(rec['step'])
                losses.append(rec['loss'])
                times.append(rec['time'])
            if 'mIoU' in rec:
                miou = rec['mIoU']
    return dict(name=name, dtype=dtype, seed=seed, steps=steps, loss=losses,
                s_per_iter=float(np.median(times)), val_miou=miou)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=osp.join(REPO, 'configs',
                                                     'demo_street_hrnet_w18_small.py'))
    parser.add_argument('--data-root', default='data/demo_cityscapes')
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--work-dir', default='work_dirs/learning_curves')
    parser.add_argument('--png')
    parser.add_argument('--json')
    args = parser.parse_args()
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from street_scenes import make_dataset
    make_dataset(osp.join(REPO, args.data_root))
    runs = [train(name, dtype, seed, args) for name, dtype, seed in RUNS]

    def gap(a, b):  # mean |difference| of the loss curves, smoothed over 5 points
        k = np.ones(5) / 5
        return float(np.mean(np.abs(np.convolve(a['loss'], k, 'valid')
                                    - np.convolve(b['loss'], k, 'valid'))))
    noise, bf16_gap = gap(runs[0], runs[1]), gap(runs[0], runs[2])
    for r in runs:
        print(f"{r['name']:12} final loss {np.mean(r['loss'][-5:]):.4f}  val mIoU "
              f"{r['val_miou']:.2f}  {r['s_per_iter']:.3f} s/iter")
    print(f'mean |loss difference|: bf16 vs fp32 {bf16_gap:.4f}; fp32 seed 0 vs seed 1 '
          f'(run-to-run noise) {noise:.4f}')
    print(f"val mIoU: bf16 - fp32 = {runs[2]['val_miou'] - runs[0]['val_miou']:+.2f}")
    result = dict(iters=args.iters, config=osp.relpath(args.config, REPO), runs=runs,
                  loss_gap_bf16_vs_fp32=bf16_gap, loss_gap_fp32_seeds=noise)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    if args.png:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            ax.plot(r['steps'], r['loss'], label=f"{r['name']} (val mIoU {r['val_miou']:.1f})")
        ax.set_xlabel('iteration')
        ax.set_ylabel('training loss')
        ax.set_yscale('log')
        ax.set_title(f'demo recipe, {args.iters} iterations: float32 vs bf16 mixed precision')
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)


if __name__ == '__main__':
    main()
