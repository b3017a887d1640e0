"""hrnet_mm against mmseg's HRNet, same architecture and same weights, in one run.

    python tools/benchmark.py --arch w48 --size 512 1024 --device cpu --json out.json

For each side it measures inference latency (median of --iters after --warmup, batch
--batch; the two sides alternate, so drift in the machine's speed reaches both alike), a
training step (forward, backward, SGD step; batch --train-batch), peak training memory (CUDA:
max_memory_allocated; CPU: the peak resident size of a child process during one cold training
step, minus its size before it), and the outputs' max |diff|, also against the float64 result
of the same weights (how far fp32 itself is off). hrnet_mm infers through its fast path (norms
folded into convs, channels-last; optionally torch.compile, and on CUDA bf16 autocast) and
trains as our configs do (channels-last weights and maps); mmseg runs eager fp32 as shipped.

It also reports the FLOPs of a forward (mmengine's count) and the FLOP/s each side achieves;
on CPU, the kernel (system) time per forward (page faults of freshly mapped memory) and the
fp32 peak of the network's own 3x3 conv shapes timed alone, from which the convolutions'
floor and the largest speedup possible over the measured mmseg time follow; on CUDA, the share
of the card's bf16 peak.

It prints a table with ratios and writes JSON with ``speedup_infer``, ``speedup_train``,
``max_abs_diff`` and the rest. timm's HRNet is compared only where it imports (it needs
torchvision, which this project does not install next to CPU torch).
"""
import argparse
import copy
import ctypes
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def quiet_logs():
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.ERROR)


def build_pair(arch, device, with_cp=False):
    """(mmseg HRNet, hrnet_mm HRNet) with identical random weights and norm statistics."""
    from mmseg.models.backbones import HRNet as SegHRNet

    from hrnet_mm import ARCH_ZOO, HRNet
    torch.manual_seed(0)
    ref = SegHRNet(extra=copy.deepcopy({k: dict(v) for k, v in ARCH_ZOO[arch].items()}),
                   with_cp=with_cp)
    ref.init_weights()
    # Norm statistics of the data, as a trained network has them (cumulative average over a
    # few random batches), so eval-mode outputs are on a realistic scale.
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    with torch.no_grad():
        for _ in range(2):
            ref(torch.randn(2, 3, 128, 256))
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    # Our training path is the one our configs use: channels-last (same values).
    ours = HRNet(arch, compat='mmseg', channels_last=True, with_cp=with_cp)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(device), ours.to(device)


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def paired_median_times(fn_a, fn_b, device, warmup, iters):
    """Medians of ``fn_a`` and ``fn_b`` timed alternately, so drift in the machine's speed
    (frequency, neighbours) reaches both sides alike: ``((wall_a, wall_b), (sys_a, sys_b))``,
    where sys is the process's kernel (system) time per call - page faults, mostly."""
    for _ in range(warmup):
        fn_a(), fn_b()
    times, kernel = ([], []), ([], [])
    for _ in range(iters):
        for i, fn in enumerate((fn_a, fn_b)):
            sync(device)
            s = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            t = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t)
            kernel[i].append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - s)
    return (tuple(map(statistics.median, times)), tuple(map(statistics.median, kernel)))


def keep_freed_memory():
    """glibc: keep freed blocks in the heap instead of returning them to the kernel.

    By default glibc serves blocks over a few MiB with mmap and unmaps them on free, so every
    large activation is page-faulted in (and zeroed by the kernel) again on every forward.
    This changes the allocator for the whole process, that is for both sides alike.
    """
    libc = ctypes.CDLL('libc.so.6')
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, 1 << 30)
            and libc.mallopt(m_trim_threshold, 2 ** 31 - 1)):
        raise SystemExit('--keep-freed-memory: glibc refused mallopt')


def conv_macs(model, x):
    """(all multiply-accumulates, those of convolutions) of one forward, by mmengine's count."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, (x,))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer.total(), analyzer.by_operator().get('conv', 0)


def cpu_conv_peak_gflops(model, x, iters=10):
    """Best fp32 throughput of the network's own 3x3 stride-1 conv shapes, each timed alone
    (channels-last, bias, no neighbours in the cache): what the conv kernels can do here."""
    shapes = set()

    def record(m, inputs):
        if m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1:
            shapes.add((m.in_channels, m.out_channels, *inputs[0].shape[2:]))
    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    best = 0.0
    cl = torch.channels_last
    for cin, cout, h, w in sorted(shapes):
        inp = torch.randn(x.shape[0], cin, h, w).contiguous(memory_format=cl)
        wt = torch.randn(cout, cin, 3, 3).contiguous(memory_format=cl)
        b = torch.randn(cout)
        conv = lambda: torch.nn.functional.conv2d(inp, wt, b, padding=1)  # noqa: E731
        for _ in range(2):
            conv()
        ts = []
        for _ in range(iters):
            t = time.perf_counter()
            conv()
            ts.append(time.perf_counter() - t)
        best = max(best, 2 * 9 * cin * cout * h * w * x.shape[0] / statistics.median(ts) / 1e9)
    return best


# Dense bf16 tensor-core peaks (TFLOP/s, from the vendors' data sheets) for the FLOP/s share;
# --peak-tflops overrides.
BF16_PEAK_TFLOPS = {'H100 PCIe': 756.0, 'H100': 989.4, 'H200': 989.4, 'A100': 312.0}


def train_step_fn(model, x):
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = sum(o.float().mean() for o in model(x))
        loss.backward()
        opt.step()
    return step


def memory_probe(args):
    """Child process: one warm training step, print peak RSS growth (bytes) as JSON."""
    quiet_logs()
    model = build_pair(args.arch, 'cpu', with_cp=args.with_cp)[0 if args.probe == 'mmseg' else 1]
    x = torch.randn(args.train_batch, 3, *args.size)
    step = train_step_fn(model, x)
    page = os.sysconf('SC_PAGE_SIZE')

    def rss():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * page

    # One cold step (the allocator holds no freed blocks yet), sampling the resident size.
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)
    before = rss()
    sampler = threading.Thread(target=sample)
    sampler.start()
    step()
    done.set()
    sampler.join()
    print(json.dumps({'peak_bytes': max(peak[0], rss()) - before}))


def cpu_peak(args, side, with_cp=False):
    cmd = [sys.executable, __file__, '--arch', args.arch, '--size', *map(str, args.size),
           '--train-batch', str(args.train_batch), '--probe', side]
    if with_cp:
        cmd.append('--with-cp')
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])['peak_bytes']


def cuda_peak(model, x):
    step = train_step_fn(model, x)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='w48', choices=['w18_small', 'w18', 'w48'])
    parser.add_argument('--size', type=int, nargs=2, default=[512, 1024], metavar=('H', 'W'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=1, help='inference batch')
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--bf16', action='store_true', help='CUDA: bf16 autocast for ours')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile our fast path (inductor, weights frozen)')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='CPU/glibc: keep freed memory in the heap (no page faults on '
                             'every forward), for both sides')
    parser.add_argument('--peak-tflops', type=float,
                        help='CUDA: the card\'s dense bf16 peak, for the FLOP/s share '
                             '(default: from a table of known cards)')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument('--probe', help=argparse.SUPPRESS)  # internal: memory child process
    parser.add_argument('--with-cp', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return memory_probe(args)

    quiet_logs()
    if args.keep_freed_memory:
        keep_freed_memory()
    from hrnet_mm.fast import optimize_for_inference
    dev = args.device
    ref, ours = build_pair(args.arch, dev)
    ref.eval()
    fast = optimize_for_inference(copy.deepcopy(ours))
    if args.compile:
        # Inference only: freezing lets inductor pre-pack conv weights for oneDNN/cuDNN.
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
        fast = torch.compile(fast)
    x = torch.randn(args.batch, 3, *args.size, device=dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast('cuda', dtype=torch.bfloat16, enabled=args.bf16)

    with torch.no_grad():
        a = ref(x)
        with autocast:
            b = fast(x_cl)
        max_abs_diff = max((u.float() - v.float()).abs().max().item() for u, v in zip(a, b))
        out_scale = max(u.abs().max().item() for u in a)

        def run_ref():
            ref(x)

        def run_fast():
            with autocast:
                fast(x_cl)
        (t_ref, t_fast), sys_s = paired_median_times(run_ref, run_fast, dev, args.warmup,
                                                     args.iters)

    with torch.no_grad():
        # Both against the float64 result of the same weights: how far fp32 itself is off.
        # After the timing: its large buffers would change the allocator's state for it.
        exact = copy.deepcopy(ref).double()(x.double())
        err_fp64 = [max((u.double() - v).abs().max().item() for u, v in zip(o, exact))
                    for o in (a, b)]
        del exact

    total_macs, macs_conv = conv_macs(ours.eval(), x)
    gflop = 2 * total_macs / 1e9
    res = dict(arch=args.arch, size=args.size, device=dev, batch=args.batch,
               machine=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
               torch=torch.__version__, date=time.strftime('%Y-%m-%d'),
               keep_freed_memory=args.keep_freed_memory, compile=args.compile, bf16=args.bf16,
               infer_s_mmseg=t_ref, infer_s_hrnet_mm=t_fast, speedup_infer=t_ref / t_fast,
               max_abs_diff=max_abs_diff, max_abs_output=out_scale,
               err_fp64_mmseg=err_fp64[0], err_fp64_hrnet_mm=err_fp64[1],
               gflop=gflop, gflop_conv=2 * macs_conv / 1e9,
               gflops_mmseg=gflop / t_ref, gflops_hrnet_mm=gflop / t_fast,
               timm='not compared: timm needs torchvision')
    if dev.startswith('cuda'):
        res['gpu'] = torch.cuda.get_device_name()
        bf16_peak = args.peak_tflops or next(
            (v for k, v in BF16_PEAK_TFLOPS.items() if k in res['gpu']), None)
        if bf16_peak:
            res.update(bf16_peak_tflops=bf16_peak,
                       share_of_bf16_peak=res['gflops_hrnet_mm'] / (bf16_peak * 1e3))
    else:
        conv_peak = cpu_conv_peak_gflops(ours.eval(), x)
        floor = 2 * macs_conv / conv_peak / 1e9
        res.update(sys_s_mmseg=sys_s[0], sys_s_hrnet_mm=sys_s[1], conv_peak_gflops=conv_peak,
                   infer_s_conv_floor=floor, speedup_infer_ceiling=t_ref / floor)

    if not args.skip_train:
        xt = torch.randn(args.train_batch, 3, *args.size, device=dev)
        (t_ref_train, t_ours_train), _ = paired_median_times(
            train_step_fn(ref, xt), train_step_fn(ours, xt), dev, 1, max(3, args.iters // 2))
        res.update(train_batch=args.train_batch, train_s_mmseg=t_ref_train,
                   train_s_hrnet_mm=t_ours_train, speedup_train=t_ref_train / t_ours_train)
        if dev.startswith('cuda'):
            peak, peak_ref = cuda_peak(ours, xt), cuda_peak(ref, xt)
            ref_cp, ours_cp = build_pair(args.arch, dev, with_cp=True)
            peak_cp, peak_ref_cp = cuda_peak(ours_cp, xt), cuda_peak(ref_cp, xt)
        else:
            peak_ref, peak = cpu_peak(args, 'mmseg'), cpu_peak(args, 'hrnet_mm')
            peak_ref_cp = cpu_peak(args, 'mmseg', with_cp=True)
            peak_cp = cpu_peak(args, 'hrnet_mm', with_cp=True)
        res.update(train_peak_bytes_mmseg=peak_ref, train_peak_bytes_hrnet_mm=peak,
                   train_peak_bytes_mmseg_with_cp=peak_ref_cp,
                   train_peak_bytes_hrnet_mm_with_cp=peak_cp, with_cp_memory_ratio=peak_cp / peak)

    rows = [('inference latency (s, median)', 'infer_s_mmseg', 'infer_s_hrnet_mm', 'speedup_infer'),
            ('training step (s, median)', 'train_s_mmseg', 'train_s_hrnet_mm', 'speedup_train')]
    print(f"HRNet-{args.arch} {args.size[0]}x{args.size[1]} on {dev} "
          f"({res['threads']} threads, torch {torch.__version__})")
    print(f"{'':34}{'mmseg':>12}{'hrnet_mm':>12}{'ratio':>10}")
    for label, k1, k2, kr in rows:
        if k1 in res:
            print(f'{label:34}{res[k1]:12.4f}{res[k2]:12.4f}{res[kr]:9.2f}x')
    if 'train_peak_bytes_mmseg' in res:
        mb = 2 ** 20
        print(f"{'training peak memory (MiB)':34}{res['train_peak_bytes_mmseg'] / mb:12.1f}"
              f"{res['train_peak_bytes_hrnet_mm'] / mb:12.1f}")
        print(f"{'  with_cp (MiB; ours vs without)':34}"
              f"{res['train_peak_bytes_mmseg_with_cp'] / mb:12.1f}"
              f"{res['train_peak_bytes_hrnet_mm_with_cp'] / mb:12.1f}"
              f"{res['with_cp_memory_ratio']:9.2f}x")
    if 'sys_s_mmseg' in res:
        print(f"{'inference: kernel (system) time (s)':34}{res['sys_s_mmseg']:12.4f}"
              f"{res['sys_s_hrnet_mm']:12.4f}")
    print(f"{'achieved GFLOP/s':34}{res['gflops_mmseg']:12.1f}{res['gflops_hrnet_mm']:12.1f}"
          f"   ({res['gflop']:.1f} GFLOP a forward)")
    if 'conv_peak_gflops' in res:
        print(f"fp32 conv peak here {res['conv_peak_gflops']:.0f} GFLOP/s: convs alone need >= "
              f"{res['infer_s_conv_floor']:.3f} s, "
              f"so at most {res['speedup_infer_ceiling']:.2f}x over this mmseg time")
    if 'share_of_bf16_peak' in res:
        print(f"share of the card's bf16 peak ({res['bf16_peak_tflops']:.0f} TFLOP/s): "
              f"{100 * res['share_of_bf16_peak']:.1f}%")
    print(f'max |diff| of outputs (fast path vs mmseg): {max_abs_diff:.2e} '
          f'(largest |output| {out_scale:.2f}); vs float64: mmseg {err_fp64[0]:.2e}, '
          f'hrnet_mm {err_fp64[1]:.2e}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)


if __name__ == '__main__':
    main()
