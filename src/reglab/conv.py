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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reglab.layers import ACTIVATIONS, Dropout, keras_init_


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _as_batch_major(x: torch.Tensor) -> torch.Tensor:
    """``[S, B, C, H, W]`` -> ``[B, S*C, H, W]`` (a free view when x is a transposed [B, S, ...])."""
    s, b = x.shape[:2]
    return x.transpose(0, 1).reshape(b, s * x.shape[2], *x.shape[3:])


def _from_batch_major(y: torch.Tensor, replicas: int) -> torch.Tensor:
    """``[B, S*C, H, W]`` (any memory format) -> the ``[S, B, C, H, W]`` view."""
    return y.unflatten(1, (replicas, -1)).transpose(0, 1)


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
        cl = torch.channels_last
        weight = self.kernel.reshape(s * self.filters, self.in_channels, *self.kernel_size).contiguous(memory_format=cl)
        bias = None if self.bias is None else self.bias.reshape(-1)
        xb = _as_batch_major(x).contiguous(memory_format=cl)
        y = _from_batch_major(F.conv2d(xb, weight, bias, padding=self.padding, groups=s), s)
        return y if self._act is None else self._act(y)


class MaxPooling2D(nn.Module):
    """Keras ``MaxPooling2D(pool_size)``: strides default to ``pool_size``, ``"valid"`` padding
    (a trailing row/column that does not fill a window is dropped). ``[S, B, C, H, W]`` in and out."""

    def __init__(self, pool_size: int | tuple[int, int] = 2, strides: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.pool_size = _pair(pool_size)
        self.strides = self.pool_size if strides is None else _pair(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
