"""Input gradients of one-channel 2-D convolutions by one matrix product and a col2im.

On CPU, PyTorch computes a convolution's input gradient with oneDNN's backward-data kernel,
which is about 3x slower than a product with the transposed filters followed by ``F.fold``
when the convolution reads one channel (a grayscale model's first layer): 21.6 ms against
7.2 ms for 256 pictures of 28 x 28 through 16 filters of 5 x 5 at one thread, 12.7 against
8.8 at two. With three channels or more oneDNN is as fast or faster. Maximization spends
most of its time in that gradient, so while :class:`OneChannelConvolutions` is active
(featvis's own forward passes only, as deconvnet's rules are) such convolutions of an input
that needs a gradient take this backward; the forward pass and every other call are
PyTorch's own, and the model is never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

__all__ = ["OneChannelConvolutions"]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class _OneChannelConv(torch.autograd.Function):
    """``F.conv2d`` (groups 1) whose input gradient is ``fold(W^T @ grad)``; the weight and
    the bias get none."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int]) -> torch.Tensor:
        ctx.geometry = stride, padding, dilation
        ctx.size, ctx.dtype = tuple(x.shape[-2:]), x.dtype
        ctx.save_for_backward(weight)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        n, k = grad.shape[:2]          # (autocast may have run the forward in another dtype)
        columns = torch.matmul(weight.reshape(k, -1).t().to(grad.dtype), grad.reshape(n, k, -1))
        grad_x = F.fold(columns, ctx.size, weight.shape[-2:], dilation, padding, stride)
        return grad_x.to(ctx.dtype), None, None, None, None, None


def _one_channel_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``conv2d``'s arguments if this module's backward applies to them, else None."""
    if (groups != 1 or isinstance(padding, str) or input.dim() != 4 or input.shape[1] != 1
            or input.device.type != "cpu" or not input.requires_grad
            or not input.is_floating_point() or weight.grad_fn is not None
            or (bias is not None and bias.grad_fn is not None)):
        return None                  # (a kernel computed from the input needs its gradient)
    return (input, weight.detach(), None if bias is None else bias.detach(), _pair(stride),
            _pair(padding), _pair(dilation))


class OneChannelConvolutions(TorchFunctionMode):
    """While active, ``conv2d`` calls on a one-channel CPU input that needs a gradient use
    :class:`_OneChannelConv` (same forward, faster input gradient; no gradient for the
    parameters, which featvis's methods never take); all else runs as is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            bound = _one_channel_args(*args, **kwargs)
            if bound is not None:
                return _OneChannelConv.apply(*bound)
        return func(*args, **kwargs)
