"""Training-mode batch norm for channels-last CPU tensors whose channel count is not a
multiple of 16.

PyTorch's CPU batch-norm kernels for channels-last tensors vectorise over channels, 16 at a time,
and handle the rest one channel at a time; HRNet-W18's 18- and 36-channel streams (also W30's,
W40's, W44's) fall almost entirely in that remainder and train 2-5x slower than on contiguous
tensors (measured by ``tools/benchmark.py --norms``). Reading the same memory as a
``k``-times wider tensor (``k * C`` a multiple of 16: ``k`` consecutive pixels side by side)
gives the kernels full vectors; per-channel statistics are then combined from the ``k``
groups, exactly as the pooled mean and variance of the whole batch.

:func:`forward_with_wide_norms` is how HRNet calls its norms: ``module(x)``, except for a
batch norm in training on a channels-last CPU tensor of such a width, for which it does what
``_BatchNorm.forward`` does (same running-statistics update, ``num_batches_tracked``, momentum
``None``, output and gradients equal up to float rounding) with the wide view. Anything else — eval mode, GPU,
contiguous tensors, 16-multiples, a module with hooks, a custom norm, a distributed SyncBN,
graphs being traced or compiled — runs the module as it is.
"""
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module
from torch.nn.modules.batchnorm import _BatchNorm

# Where the wide view was measured faster on CPU (training forward + backward, float32 and
# bfloat16): below about 8192 pixels a channel its fixed cost (a dozen small ops) dominates, and
# from about 128 channels the kernels' one-at-a-time remainder no longer does.
MAX_CHANNELS = 127
MIN_PIXELS = 8192
LANES = 16


def _group(channels: int) -> int:
    """Smallest ``k`` with ``k * channels`` a multiple of 16."""
    k = 1
    while (k * channels) % LANES:
        k *= 2
    return k


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks
                or _module._global_forward_hooks or _module._global_forward_pre_hooks)


def _plain_batch_norm(module: nn.Module) -> bool:
    """A batch norm whose forward is ``_BatchNorm.forward`` (mmengine's ``_BatchNormXd`` and
    torch's ``BatchNorm2d`` are; a SyncBN is when it does not synchronise)."""
    if type(module).forward is _BatchNorm.forward:
        return True
    return (type(module) is nn.SyncBatchNorm
            and not (dist.is_available() and dist.is_initialized()))


def applies(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`forward_with_wide_norms` takes the wide-view batch norm for ``module(x)``."""
    if not (isinstance(module, _BatchNorm) and module.training and x.dim() == 4
            and x.device.type == 'cpu' and x.dtype in (torch.float32, torch.bfloat16)):
        return False
    c = x.shape[1]
    pixels = x.numel() // max(c, 1)
    if c % LANES == 0 or c > MAX_CHANNELS or pixels < MIN_PIXELS or pixels % _group(c):
        return False
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return _plain_batch_norm(module) and not _hooked(module)


def forward_with_wide_norms(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; ``nn.Sequential`` containers are walked so that their batch norms
    qualify too (unless the container itself has hooks)."""
    if isinstance(module, nn.Sequential) and not _hooked(module):
        for m in module:
            x = forward_with_wide_norms(m, x)
        return x
    if applies(module, x):
        return batch_norm_forward(module, x)
    return module(x)


def batch_norm_forward(module: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``_BatchNorm.forward`` in training mode, through :class:`_WideBatchNorm`."""
    module._check_input_dim(x)  # the module's own error for a wrong rank (BatchNorm1d, ...)
    factor = 0.0 if module.momentum is None else module.momentum
    if module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        if module.momentum is None:
            factor = 1.0 / float(module.num_batches_tracked)
    track = module.track_running_stats
    return _WideBatchNorm.apply(x, module.weight, module.bias,
                                module.running_mean if track else None,
                                module.running_var if track else None, factor, module.eps)


def _wide(t: torch.Tensor, k: int) -> torch.Tensor:
    """A channels-last ``(N, C, H, W)`` tensor as the channels-last ``(1, k*C, 1, NHW/k)``
    view of the same memory."""
    c = t.shape[1]
    return t.permute(0, 2, 3, 1).reshape(1, 1, -1, k * c).permute(0, 3, 1, 2)


def _narrow(t: torch.Tensor, shape) -> torch.Tensor:
    n, c, h, w = shape
    return t.permute(0, 2, 3, 1).reshape(n, h, w, c).permute(0, 3, 1, 2)


def _statistics_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for bfloat16 inputs (the kernels' accumulation type), else the input's."""
    return torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype


class _WideBatchNorm(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, factor, eps):
        c = x.shape[1]
        k = _group(c)
        count = x.numel() // c
        xw = _wide(x, k)
        # Per-column statistics (float32, the kernels' own accumulation), then pooled over the
        # k columns of each channel: mean of means, and mean of variances plus the variance of
        # the means.
        stats = dict(dtype=_statistics_dtype(x), device=x.device)
        means, variances = torch.batch_norm_update_stats(
            xw, torch.zeros(k * c, **stats), torch.ones(k * c, **stats), 0.0)
        means, variances = means.view(k, c), variances.view(k, c)
        mean = means.mean(0)
        var = variances.mean(0) + (means - mean).square().mean(0)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * (count / max(count - 1, 1))
                running_mean.copy_(factor * mean + (1 - factor) * running_mean)
                running_var.copy_(factor * unbiased + (1 - factor) * running_var)
        invstd = torch.rsqrt(var + eps)
        w = weight.to(stats['dtype']) if weight is not None else torch.ones(c, **stats)
        b = bias.to(stats['dtype']) if bias is not None else torch.zeros(c, **stats)
        # Normalising is an eval-mode batch norm with the pooled statistics, on the wide view,
        # written into a tensor of x's shape (returning a view would forbid in-place ReLUs).
        out = torch.empty_like(x, memory_format=torch.channels_last)
        unused = torch.empty(0, **stats), torch.empty(0, **stats)
        torch.ops.aten.native_batch_norm.out(
            xw, w.repeat(k), b.repeat(k), mean.repeat(k), var.repeat(k), False, 0.0, eps,
            out=_wide(out, k), save_mean=unused[0], save_invstd=unused[1])
        ctx.save_for_backward(x, w, mean, var, invstd)
        ctx.eps = eps
        ctx.affine = weight is not None, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w, mean, var, invstd = ctx.saved_tensors
        c = x.shape[1]
        k = _group(c)
        count = x.numel() // c
        xw = _wide(x, k)
        gw = _wide(grad_out.contiguous(memory_format=torch.channels_last), k)
        # One pass for both sums, sum(dy) and sum(dy * x_hat): the eval-mode batch-norm
        # backward's weight and bias gradients, per column, with the pooled statistics.
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            gw, xw, None, mean.repeat(k), var.repeat(k), None, None, False, ctx.eps,
            [False, True, True])
        sum_dy_xhat = sum_dy_xhat.view(k, c).sum(0)
        sum_dy = sum_dy.view(k, c).sum(0)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dx = a * dy + d + b * x per channel, with a = w * invstd; b * x is the smaller
            # (correction) term, so only its coefficient is rounded to a bfloat16 input's dtype.
            a = w * invstd
            b = -a * invstd * sum_dy_xhat / count
            d = -a * sum_dy / count - b * mean
            # a * dy + d as an eval-mode batch norm (mean 0, var 1 - eps: scale exactly 1).
            stats = dict(dtype=_statistics_dtype(x), device=x.device)
            grad_x = torch.batch_norm(gw, a.repeat(k), d.repeat(k), torch.zeros(k * c, **stats),
                                      torch.full((k * c,), 1.0 - ctx.eps, **stats), False, 0.0,
                                      ctx.eps, False)
            grad_x = grad_x.addcmul_(xw, b.repeat(k).view(1, -1, 1, 1).to(xw.dtype))
            grad_x = _narrow(grad_x, x.shape)
        has_weight, has_bias = ctx.affine
        grad_w = sum_dy_xhat if has_weight and ctx.needs_input_grad[1] else None
        grad_b = sum_dy if has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None
