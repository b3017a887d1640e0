"""Where hrnet_mm's inference time goes: each conv shape's time and FLOP/s in the fast path.

    python tools/profile_convs.py --arch w48 --size 512 1024

Times every conv of one forward of the fast path (norms folded, channels-last, eager) in place,
groups them by shape and by kind (3x3 stride 1, 3x3 stride 2, 1x1), and prints the rest of the
forward (sums, ReLUs, upsampling) as one line.
"""
import argparse
import collections
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='w48')
    parser.add_argument('--size', type=int, nargs=2, default=[512, 1024], metavar=('H', 'W'))
    parser.add_argument('--repeats', type=int, default=3, help='timed forwards (best kept)')
    args = parser.parse_args()
    from hrnet_mm import HRNet, prepare_for_inference
    torch.manual_seed(0)
    model = prepare_for_inference(HRNet(args.arch, compat=None).eval(), keep_memory=False)
    x = torch.randn(1, 3, *args.size).contiguous(memory_format=torch.channels_last)

    stats, started = {}, {}

    def pre(m, inputs):
        started[m] = time.perf_counter()

    def post(m, inputs, out):
        dt = time.perf_counter() - started[m]
        key = (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0],
               *inputs[0].shape[2:])
        macs = out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        calls, secs, total = stats.get(key, (0, 0.0, 0))
        stats[key] = (calls + 1, secs + dt, total + macs)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)

    best = None
    with torch.no_grad():
        model(x)
        for _ in range(args.repeats):
            stats.clear()
            t = time.perf_counter()
            model(x)
            total = time.perf_counter() - t
            if best is None or total < best[0]:
                best = (total, dict(stats))
    total, stats = best
    kinds = collections.defaultdict(lambda: [0.0, 0])
    print(f'HRNet-{args.arch} {args.size[0]}x{args.size[1]}, fast path, '
          f'{torch.get_num_threads()} threads: forward {total:.3f} s')
    print(f"{'cin':>5}{'cout':>6}{'k':>3}{'s':>3}{'H x W':>11}{'calls':>7}{'ms':>9}{'GFLOP/s':>9}")
    for (cin, cout, k, s, h, w), (calls, secs, macs) in sorted(stats.items(),
                                                                key=lambda kv: -kv[1][1]):
        kind = '1x1' if k == 1 else f'{k}x{k} stride {s}'
        kinds[kind][0] += secs
        kinds[kind][1] += macs
        print(f'{cin:5}{cout:6}{k:3}{s:3}{h:6} x{w:4}{calls:7}{secs * 1e3:9.1f}'
              f'{2 * macs / secs / 1e9:9.0f}')
    conv = sum(v[0] for v in kinds.values())
    for kind, (secs, macs) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        print(f'{kind:>14}: {secs:.3f} s, {2 * macs / 1e9:.1f} GFLOP, '
              f'{2 * macs / secs / 1e9:.0f} GFLOP/s')
    print(f'{"not convs":>14}: {total - conv:.3f} s (sums, ReLUs, upsampling, hooks)')


if __name__ == '__main__':
    main()
