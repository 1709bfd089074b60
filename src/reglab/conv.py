"""Replica-batched convolutional layers with Keras semantics.

Layout: feature maps are **channels-first** with the replica axis in front, ``[S, B, C, H, W]``
(Keras' ``data_format="channels_first"`` with a leading replica axis). A convolution runs all S
replicas as ONE grouped convolution: the maps are viewed as ``[B, S*C, H, W]`` and the kernels as
``[S*filters, C, kh, kw]`` with ``groups=S``, so group ``r`` sees only replica ``r``'s maps and
kernel. Pooling works on the same ``[B, S*C, H, W]`` view (it is per map).

Memory: the grouped convolution runs in torch's ``channels_last`` format (oneDNN's grouped
convolution is up to ~2x faster in it on CPU), so a layer's output ``[S, B, F, H, W]`` is a view of
memory ordered ``[B, H, W, S, F]``; the next convolution or pooling regroups it without a copy.
Elementwise layers (activations, BatchNorm, SpatialDropout2D) accept any strides.

Speed (the CNN benchmark, one core): in training, a convolution (with its ReLU) and the max
pooling are one autograd node each (:class:`GroupedConv2DFunction`, :class:`MaxPool2DFunction`)
whose backward passes call torch's kernels on gradients already in the layout they need. In
inference, an input shared by all replicas (a stride-0 replica axis: the shared test set) is
convolved once with all replicas' kernels (one input channel: as a matrix product,
:func:`_single_channel_conv`), and activations run in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reglab.layers import ACTIVATIONS, INPLACE_ACTIVATIONS, Dropout, keras_init_


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _as_batch_major(x: torch.Tensor) -> torch.Tensor:
    """``[S, B, C, H, W]`` -> ``[B, S*C, H, W]`` (a free view when x is a transposed [B, S, ...])."""
    s, b = x.shape[:2]
    return x.transpose(0, 1).reshape(b, s * x.shape[2], *x.shape[3:])


def _from_batch_major(y: torch.Tensor, replicas: int) -> torch.Tensor:
    """``[B, S*C, H, W]`` (any memory format) -> the ``[S, B, C, H, W]`` view."""
    return y.unflatten(1, (replicas, -1)).transpose(0, 1)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` in ``channels_last`` memory, with strides that say so even for one channel:
    torch reads a contiguous one-channel tensor as channels-first and returns a convolution's output
    in that format, which the next convolution must then convert (measured 1.5x slower)."""
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[1] == 1 and x.stride(1) != 1:
        x = x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3)))
    return x


def _single_channel_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         kernel_size: tuple[int, int], padding: str) -> torch.Tensor:
    """A stride-1 convolution of one-channel maps ``x`` ``[B, 1, H, W]`` with ``weight``
    ``[F, 1, kh, kw]`` as one matrix product: the ``kh*kw`` shifted windows of every output pixel
    ``[B*H'*W', kh*kw]`` times the kernels ``[kh*kw, F]``. The result ``[B, F, H', W']`` is in
    ``channels_last`` memory (the product's rows are pixels, its columns filters).

    oneDNN's convolution of one input channel into the 80 maps of the CNN's 10 replicas ran at a
    third of this speed (3.4 ms against 1.8 ms for the 700 test digits, in chunks of 175).
    """
    kh, kw = kernel_size
    maps = x[:, 0]
    if padding == "same":  # as torch and Keras: the odd row/column of an even kernel at the bottom/right
        top, left = (kh - 1) // 2, (kw - 1) // 2
        maps = F.pad(maps, (left, kw - 1 - left, top, kh - 1 - top))
    b, h, w = maps.shape[0], maps.shape[1] - kh + 1, maps.shape[2] - kw + 1
    taps = torch.stack([maps[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)], dim=-1)
    kernels = weight.reshape(weight.shape[0], kh * kw).t()
    flat = taps.view(b * h * w, kh * kw)
    y = flat @ kernels if bias is None else torch.addmm(bias, flat, kernels)
    return y.view(b, h, w, -1).permute(0, 3, 1, 2)


class GroupedConv2DFunction(torch.autograd.Function):
    """All replicas' stride-1 convolutions ``[S, B, C, H, W]`` -> ``[S, B, F, H', W']`` as one grouped
    convolution (``kernel`` ``[S, F, C, kh, kw]``, ``bias`` ``[S, F]`` or None, numeric ``padding``),
    optionally followed by ReLU in place, with one autograd node and a backward pass that calls
    torch's convolution backward directly.

    Through autograd the layout views, kernel reshapes and the activation around ``F.conv2d`` were
    about nine nodes per layer; here one. The arithmetic is torch's: the same convolution kernels forward
    and backward, ReLU's backward as ``threshold_backward``.
    """

    @staticmethod
    def forward(ctx, x, kernel, bias, padding, relu):
        s, f, c, kh, kw = kernel.shape
        weight = kernel.reshape(s * f, c, kh, kw).contiguous(memory_format=torch.channels_last)
        xb = _channels_last(_as_batch_major(x))
        y = F.conv2d(xb, weight, None if bias is None else bias.reshape(-1), padding=padding, groups=s)
        if relu:
            y.relu_()
        ctx.save_for_backward(xb, weight, y if relu else None)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return _from_batch_major(y, s)

    @staticmethod
    def backward(ctx, grad):
        xb, weight, y = ctx.saved_tensors
        s = grad.shape[0]
        grad_b = _channels_last(_as_batch_major(grad))
        if y is not None:
            grad_b = torch.ops.aten.threshold_backward(grad_b, y, 0)
        need_x, need_k, need_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_bias = torch.ops.aten.convolution_backward(
            grad_b, xb, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], list(ctx.padding),
            [1, 1], False, [0, 0], s, [need_x, need_k, need_b and ctx.has_bias])
        return (None if grad_x is None else _from_batch_major(grad_x, s),
                None if grad_w is None else grad_w.unflatten(0, (s, -1)),
                None if grad_bias is None else grad_bias.view(s, -1), None, None)


class Conv2D(nn.Module):
    """Keras ``Conv2D(filters, kernel_size, padding, activation)``, stride 1, channels-first.

    Input ``[S, B, in_channels, H, W]``; output ``[S, B, filters, H', W']`` with ``H' = H - kh + 1``
    for ``"valid"`` and ``H' = H`` for ``"same"`` (Keras pads the extra row/column at the bottom/right,
    as torch does). ``kernel`` is ``[S, filters, in_channels, kh, kw]`` (torch's per-replica layout);
    it is initialised with Keras' fans ``fan_in = kh*kw*in_channels``, ``fan_out = kh*kw*filters``;
    ``bias`` ``[S, filters]`` starts at zero.
    """

    def __init__(
        self,
        replicas: int,
        in_channels: int,
        filters: int,
        kernel_size: int | tuple[int, int],
        padding: str = "valid",
        activation: str = "linear",
        kernel_initializer: str = "glorot_uniform",
        use_bias: bool = True,
    ) -> None:
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
        kh, kw = _pair(kernel_size)
        self.replicas, self.in_channels, self.filters = replicas, in_channels, filters
        self.kernel_size, self.padding = (kh, kw), padding
        self.kernel = nn.Parameter(torch.empty(replicas, filters, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(replicas, filters)) if use_bias else None
        self.activation = activation
        self.kernel_initializer = kernel_initializer
        self._act = ACTIVATIONS[activation]
        # rows and columns of padding on each side; None for "same" with an even kernel side, which
        # pads unevenly (F.conv2d pads such inputs itself)
        self._pads = (0, 0) if padding == "valid" else ((kh - 1) // 2, (kw - 1) // 2) if kh % 2 and kw % 2 else None

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """Initialise each replica's kernel from its own generator (Keras conv fans); biases start at zero."""
        kh, kw = self.kernel_size
        fan_in, fan_out = kh * kw * self.in_channels, kh * kw * self.filters
        with torch.no_grad():
            for r, gen in enumerate(generators):
                keras_init_(self.kernel[r], self.kernel_initializer, fan_in, fan_out, gen)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[0]
        shared = s > 1 and x.stride(0) == 0
        if torch.is_grad_enabled() and not shared and self._pads is not None:
            relu = self.activation == "relu"
            y = GroupedConv2DFunction.apply(x, self.kernel, self.bias, self._pads, relu)
            return y if relu or self._act is None else self._act(y)
        cl = torch.channels_last
        weight = self.kernel.reshape(s * self.filters, self.in_channels, *self.kernel_size).contiguous(memory_format=cl)
        bias = None if self.bias is None else self.bias.reshape(-1)
        if shared:
            # one input for every replica (an expanded view, as the shared test set is): one plain
            # convolution with all replicas' kernels, on S times less input
            if self.in_channels == 1:
                y = _single_channel_conv(x[0], weight, bias, self.kernel_size, self.padding)
            else:
                y = F.conv2d(_channels_last(x[0]), weight, bias, padding=self.padding)
        else:
            y = F.conv2d(_channels_last(_as_batch_major(x)), weight, bias, padding=self.padding, groups=s)
        y = _from_batch_major(y, s)
        if self._act is None:
            return y
        if not torch.is_grad_enabled() and self.activation in INPLACE_ACTIVATIONS:
            return INPLACE_ACTIVATIONS[self.activation](y)  # a new tensor, nothing else holds it
        return self._act(y)


class MaxPool2DFunction(torch.autograd.Function):
    """Max pooling of ``[S, B, C, H, W]`` maps (``F.max_pool2d`` on the ``[B, S*C, H, W]`` view) whose
    backward pass hands torch's max-pool backward the gradient in the layout of the pooled maps.

    The gradient reaches the pooling from Flatten's backward as a contiguous ``[S, B, C, h, w]``
    tensor; given that, torch's ``channels_last`` max-pool backward converted the pooled grad, the
    input maps and its own result (three copies, two of them of the unpooled maps); here one copy of
    the pooled grad into the indices' layout replaces them.
    """

    @staticmethod
    def forward(ctx, x, pool_size, strides):
        xb = _as_batch_major(x)
        y, indices = F.max_pool2d(xb, pool_size, strides, return_indices=True)
        ctx.save_for_backward(xb, indices)
        ctx.pool_size, ctx.strides = pool_size, strides
        return _from_batch_major(y, x.shape[0])

    @staticmethod
    def backward(ctx, grad):
        xb, indices = ctx.saved_tensors
        s = grad.shape[0]
        grad_b = torch.empty_like(indices, dtype=grad.dtype)  # the pooled maps' layout
        _from_batch_major(grad_b, s).copy_(grad)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_b, xb, ctx.pool_size, ctx.strides, (0, 0), (1, 1), False, indices)
        return _from_batch_major(grad_x, s), None, None


class MaxPooling2D(nn.Module):
    """Keras ``MaxPooling2D(pool_size)``: strides default to ``pool_size``, ``"valid"`` padding
    (a trailing row/column that does not fill a window is dropped). ``[S, B, C, H, W]`` in and out."""

    def __init__(self, pool_size: int | tuple[int, int] = 2, strides: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.pool_size = _pair(pool_size)
        self.strides = self.pool_size if strides is None else _pair(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return MaxPool2DFunction.apply(x, self.pool_size, self.strides)
        return _from_batch_major(F.max_pool2d(_as_batch_major(x), self.pool_size, self.strides), x.shape[0])


class Flatten(nn.Module):
    """``[S, B, C, H, W]`` -> ``[S, B, C*H*W]`` in channels-first (C, H, W) order.

    Keras (channels-last) flattens in (H, W, C) order; the order only permutes the next Dense
    layer's input rows, whose weights are ours and initialised i.i.d., so it changes nothing.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


class SpatialDropout2D(Dropout):
    """Keras ``SpatialDropout2D(rate)``: drops whole feature maps (one Bernoulli draw per replica,
    sample and channel), scales kept maps by 1/(1-rate); identity in inference."""

    def mask_like(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_empty(*x.shape[:3], 1, 1)
