"""Replica-batched layers with Keras semantics.

Every layer holds S independent replicas of itself: weights carry a leading replica dimension and
inputs have shape ``[S, batch, features]``, so one batched matmul computes all replicas at once.
Randomness in training (dropout masks, noise) is drawn per replica from that replica's own
generator, so replica ``r`` computes exactly what a lone model with replica ``r``'s weights and
random stream would.

Hyperparameters that do not change shapes (dropout rates, noise stddevs, max-norm, BN momentum; see
``replica_options`` in :mod:`reglab.layerkinds`) may differ between replicas: they are given as one
number for all replicas or a sequence of one per replica (:class:`PerReplica`). A replica whose rate
or stddev is 0 draws nothing, as a lone model with that value would not, so its random stream
stays the same alone or among others.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {
    "linear": None,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, dim=-1),
}
# In-place forms, for outputs nothing else holds when no gradient is recorded (evaluation): the
# test-set pass of a 160-replica grid writes [160, 70, 500] activations, and relu_ is 3x faster there.
INPLACE_ACTIVATIONS = {"relu": torch.relu_, "sigmoid": torch.sigmoid_, "tanh": torch.tanh_}


def keras_init_(tensor: torch.Tensor, name: str, fan_in: int, fan_out: int, generator: torch.Generator) -> None:
    """Fill ``tensor`` in place with the Keras initializer ``name`` (``glorot_*`` or ``he_*``)."""
    fan = {"glorot": (fan_in + fan_out) / 2.0, "he": fan_in / 2.0}[name.split("_")[0]]
    if name.endswith("_uniform"):
        limit = math.sqrt(3.0 / fan)
        nn.init.uniform_(tensor, -limit, limit, generator=generator)
    else:  # Keras' *_normal draw from a normal truncated at two stddevs, rescaled to keep the variance
        std = math.sqrt(1.0 / fan) / 0.87962566103423978
        nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std, generator=generator)


def broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-replica ``values`` (``[S]`` or ``[1]``) as ``like``'s dtype on its device, shaped
    ``[S or 1, 1, ...]`` to broadcast over ``like``."""
    return values.to(like.device, like.dtype).reshape((-1,) + (1,) * (like.ndim - 1))


class PerReplica:
    """A hyperparameter with one value for all replicas or one value per replica.

    ``values`` holds them in float64 (``[1]`` or ``[S]``); :meth:`view` gives them as a float32 tensor
    that broadcasts over a ``[S, ...]`` tensor; ``active[r]`` says whether replica r's value is
    non-zero (a rate or stddev of 0 draws nothing).
    """

    def __init__(self, value) -> None:
        self.values = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        self.active = [bool(v != 0) for v in self.values.tolist()]
        self._views: dict = {}

    def any(self) -> bool:
        """Whether any replica's value is non-zero."""
        return any(self.active)

    def is_active(self, r: int) -> bool:
        return self.active[r if len(self.active) > 1 else 0]

    def view(self, like: torch.Tensor, attr: str = "values") -> torch.Tensor:
        """The float64 tensor attribute ``attr`` (default: the values) as ``like``'s dtype, on its
        device, shaped to broadcast over it (made once per attribute, device, dtype and rank)."""
        key = (attr, like.device, like.dtype, like.ndim)
        if key not in self._views:
            self._views[key] = broadcast(getattr(self, attr), like)
        return self._views[key]



class Rate(PerReplica):
    """A drop rate per replica, with its keep probability and inverted-dropout scale 1/(1-rate)
    (computed in float64, then rounded once to float32)."""

    def __init__(self, value) -> None:
        super().__init__(value)
        self.keep = 1.0 - self.values
        self.scale = 1.0 / self.keep

    def mask(self, like: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """An inverted-dropout mask shaped like ``like``: 1/(1-rate) where kept, 0 where dropped; slice r
        drawn from generator r (all ones, and no draws, where replica r's rate is 0). A float mask made
        in place: bool masks take a slow path."""
        u = draw_per_replica(like, generators, "uniform_", self)
        return u.lt_(self.view(like, "keep")).mul_(self.view(like, "scale"))


def draw_per_replica(like: torch.Tensor, generators: list[torch.Generator], fill: str,
                     active: PerReplica | None = None) -> torch.Tensor:
    """A tensor shaped like ``like`` whose slice r is filled (``uniform_``/``normal_``) from generator r,
    in the slice's logical (row-major) order whatever ``like``'s memory layout: a replica's draws
    depend on its seed and the shape alone (torch fills a strided tensor in memory order).

    With ``active``, replicas whose value is 0 draw nothing and get zeros."""
    every = active is None or all(active.active)
    out = like.new_empty(like.shape) if every else like.new_zeros(like.shape)
    for r, gen in enumerate(generators):
        if every or active.is_active(r):
            getattr(out[r], fill)(generator=gen)
    return out


class RandomDraws(nn.Module):
    """Base for layers that draw fresh per-replica random numbers in training only.

    ``generators`` holds one generator per replica (set by the network; shared by all its layers).
    """

    def __init__(self) -> None:
        super().__init__()
        self.generators: list[torch.Generator] = []

    def _draw(self, like: torch.Tensor, fill: str, active: PerReplica | None = None) -> torch.Tensor:
        return draw_per_replica(like, self.generators, fill, active)


#: Dense layers with at most this many input features compute ``x @ kernel + bias`` as a sum of
#: broadcast products (:class:`SmallFanInLinear`): a batched matmul with an inner dimension of 2 runs
#: at a quarter of memory speed on CPU (the 2-feature circles' 500-unit layer: 2.4 ms against 0.9 ms
#: for the test pass of 100 replicas).
SMALL_FAN_IN = 2


class SmallFanInLinear(torch.autograd.Function):
    """``x @ kernel + bias`` (``[S, B, in]``, ``[S, in, units]``, ``[S, 1, units]`` or None) as
    ``bias + sum_i x[..., i] * kernel[:, i]``; the gradients by batched matmul and sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        first_x, first_k = x[..., 0:1], kernel[:, 0:1, :]
        out = torch.mul(first_x, first_k) if bias is None else torch.addcmul(bias, first_x, first_k)
        for i in range(1, kernel.shape[1]):
            out.addcmul_(x[..., i : i + 1], kernel[:, i : i + 1, :])
        ctx.save_for_backward(x, kernel)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, kernel = ctx.saved_tensors
        need_x, need_k, need_b = ctx.needs_input_grad
        grad_x = torch.bmm(grad, kernel.transpose(1, 2)) if need_x else None
        grad_k = torch.bmm(x.transpose(1, 2), grad) if need_k else None
        grad_b = grad.sum(dim=1, keepdim=True) if ctx.has_bias and need_b else None
        return grad_x, grad_k, grad_b


#: a batched matrix product whose result has at most 1/NARROW_RATIO as many columns as rows is
#: computed transposed (:func:`batched_matmul`)
NARROW_RATIO = 4


def batched_matmul(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """``add + a @ b`` for batches of matrices (``add`` None: no sum), as ``(b^T @ a^T)^T`` when the
    result is narrow (``NARROW_RATIO * columns <= rows``); then the result is a transposed view.

    MKL's batched products with few result columns and a long inner dimension run at a quarter of
    their speed: the CNN head's 32 x 72 @ 72 x 10 per replica (10 replicas) took 52 us, transposed
    15 us; its gradient 72 x 32 @ 32 x 10, 55 us against 14 us.
    """
    if NARROW_RATIO * b.shape[2] > a.shape[1]:
        return torch.bmm(a, b) if add is None else torch.baddbmm(add, a, b)
    a_t, b_t = a.transpose(1, 2), b.transpose(1, 2)
    product = torch.bmm(b_t, a_t) if add is None else torch.baddbmm(add.transpose(1, 2), b_t, a_t)
    return product.transpose(1, 2)


class NarrowLinear(torch.autograd.Function):
    """``x @ kernel + bias`` (``[S, B, in]``, ``[S, in, units]``, ``[S, 1, units]`` or None) for few
    units: forward and both gradients by :func:`batched_matmul`, each product in its faster orientation
    (autograd's own backward of the transposed product took the slow one for the kernel's gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, kernel)
        ctx.has_bias = bias is not None
        return batched_matmul(x, kernel, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, kernel = ctx.saved_tensors
        need_x, need_k, need_b = ctx.needs_input_grad
        grad_x = batched_matmul(grad, kernel.transpose(1, 2)) if need_x else None
        grad_k = batched_matmul(x.transpose(1, 2), grad) if need_k else None
        grad_b = grad.sum(dim=1, keepdim=True) if ctx.has_bias and need_b else None
        return grad_x, grad_k, grad_b


class Dense(RandomDraws):
    """Keras ``Dense``: ``activation(x @ kernel + bias)`` with kernel ``[S, in, units]``.

    Options beyond Keras' defaults: ``max_norm`` / ``unit_norm`` kernel constraints (applied by
    :meth:`constrain_` after every update, as Keras does) and ``weight_noise``, the stddev of fresh
    Gaussian noise added to the kernel at every training forward pass. ``max_norm`` and
    ``weight_noise`` may differ between replicas (``max_norm`` None for some: no constraint there).
    """

    def __init__(
        self,
        replicas: int,
        in_features: int,
        units: int,
        activation: str = "linear",
        kernel_initializer: str = "glorot_uniform",
        use_bias: bool = True,
        max_norm=None,
        unit_norm: bool = False,
        weight_noise=0.0,
    ) -> None:
        super().__init__()
        norms = max_norm if isinstance(max_norm, (list, tuple)) else [max_norm]
        self.max_norm = None if all(c is None for c in norms) else PerReplica(
            [math.inf if c is None else c for c in norms])
        self.unit_norm = unit_norm
        self.weight_noise = PerReplica(weight_noise)
        self.kernel = nn.Parameter(torch.empty(replicas, in_features, units))
        self.bias = nn.Parameter(torch.zeros(replicas, 1, units)) if use_bias else None
        self.activation = activation
        self.kernel_initializer = kernel_initializer
        self._act = ACTIVATIONS[activation]

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """Initialise each replica's kernel from its own generator; biases start at zero."""
        _, fan_in, fan_out = self.kernel.shape
        with torch.no_grad():
            for r, gen in enumerate(generators):
                keras_init_(self.kernel[r], self.kernel_initializer, fan_in, fan_out, gen)
            if self.bias is not None:
                self.bias.zero_()

    @property
    def constrained(self) -> bool:
        return self.max_norm is not None or self.unit_norm

    @torch.no_grad()
    def constrain_(self) -> None:
        """Keras' MaxNorm / UnitNorm on each unit's incoming weights: ``w * clip(n, 0, c) / (1e-7 + n)``."""
        # each unit's L2 norm; as a sum of squares: torch's vector_norm over a short axis is ~70x slower
        norms = self.kernel.square().sum(dim=1, keepdim=True).sqrt()
        if self.unit_norm:
            self.kernel.div_(norms + 1e-7)
            return
        c = self.max_norm.view(norms)
        factor = torch.minimum(norms, c) / (norms + 1e-7)
        if not all(math.isfinite(v) for v in self.max_norm.values.tolist()):  # replicas without a constraint
            factor = torch.where(torch.isinf(c), 1.0, factor)
        self.kernel.mul_(factor)

    def linear(self, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """The pre-activation ``x @ kernel + bias`` (with fresh weight noise in training); with
        ``overwrite`` (no autograd, ``x`` a temporary of the caller's) a one-unit layer may compute in ``x``."""
        kernel = self.kernel
        if self.training and self.weight_noise.any():
            noise = self._draw(kernel, "normal_", self.weight_noise)
            kernel = kernel + noise * self.weight_noise.view(kernel)
        if kernel.shape[2] == 1:
            # A one-unit output as multiply-and-sum: CPU batched matmul kernels are slow for
            # matrix-vector shapes, forward and backward (measured 6x slower).
            # In place where allowed: the evaluation pass of 100 replicas of a 500-unit layer on 70
            # samples multiplies 14 MB 3x faster when it does not also write a second 14 MB.
            weighted = x.mul_(kernel.transpose(1, 2)) if overwrite else x * kernel.transpose(1, 2)
            y = weighted.sum(dim=2, keepdim=True)
            return y if self.bias is None else y + self.bias
        if kernel.shape[1] <= SMALL_FAN_IN:
            return SmallFanInLinear.apply(x, kernel, self.bias)
        units = kernel.shape[2]
        if NARROW_RATIO * units <= x.shape[1] or NARROW_RATIO * units <= kernel.shape[1]:
            return NarrowLinear.apply(x, kernel, self.bias)  # forward or kernel gradient is narrow
        if self.bias is None:
            return torch.bmm(x, kernel)
        return torch.baddbmm(self.bias, x, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)  # a new tensor: in-place activation is safe without autograd
        if self._act is None:
            return y
        if not torch.is_grad_enabled() and self.activation in INPLACE_ACTIVATIONS:
            return INPLACE_ACTIVATIONS[self.activation](y)
        return self._act(y)


class Activation(nn.Module):
    """Keras ``Activation(name)``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._act = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._act is None else self._act(x)


class BatchNormTraining(torch.autograd.Function):
    """Training-mode batch normalisation over ``dims``: ``(x - mean) / sqrt(var + epsilon) * gamma + beta``
    with the batch mean and biased batch variance; returns ``(y, mean, var)`` (the statistics, keepdim,
    carry no gradient). ``gamma``/``beta`` (or None) broadcast over ``x`` as the statistics do.

    The statistics are two reductions (a mean, then the mean of the squared deviations): torch's
    ``var_mean`` (Welford) over the non-contiguous axes of a replica conv output took 540 us for the
    CNN's [10, 32, 8, 6, 6] maps, these two 47 us. The output is one multiply-add of the deviations
    ``d = x - mean``; the backward pass is the closed form
    ``dx = a * (dy - mean(dy) - d * inv^2 * mean(dy * d))`` with ``inv = 1 / sqrt(var + epsilon)``,
    ``a = gamma * inv``: three passes over the maps and one autograd node, instead of autograd
    through every op of the forward pass.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, dims, epsilon):
        count = math.prod(x.shape[d] for d in dims)
        mean = x.sum(dim=dims, keepdim=True).div_(count)
        centered = x - mean  # x's memory layout
        var = centered.square().sum(dim=dims, keepdim=True).div_(count)
        inv = (var + epsilon).rsqrt_()
        scale = inv if gamma is None else inv * gamma
        y = centered * scale if beta is None else torch.addcmul(beta, centered, scale)
        ctx.save_for_backward(centered, inv, scale)
        ctx.dims, ctx.count = dims, count
        ctx.has_gamma, ctx.has_beta = gamma is not None, beta is not None
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)  # no zero gradients made for the statistics
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _mean, _var):
        if dy is None:
            return None, None, None, None, None
        centered, inv, scale = ctx.saved_tensors
        need_x, need_gamma, need_beta = ctx.needs_input_grad[:3]
        dbeta = dy.sum(dim=ctx.dims, keepdim=True)
        dgamma = (dy * centered).sum(dim=ctx.dims, keepdim=True).mul_(inv)  # sum(dy * xhat)
        dx = None
        if need_x:  # laid out as x (centered) is
            dx = torch.addcmul(dbeta.mul(-scale / ctx.count), dy, scale)
            dx.addcmul_(centered, dgamma.mul(-scale * inv / ctx.count))
        return (dx, dgamma if ctx.has_gamma and need_gamma else None,
                dbeta if ctx.has_beta and need_beta else None, None, None)


class BatchNorm(nn.Module):
    """Keras ``BatchNormalization`` over a feature/channel axis, per replica.

    Statistics are taken over every axis except the replica axis (0) and ``axis``, the feature or
    channel axis of the input (counted with the replica axis; default the last): ``axis=-1`` for
    Dense outputs ``[S, B, F]`` and LSTM sequences ``[S, B, T, F]``, ``axis=2`` for channels-first
    feature maps ``[S, B, C, H, W]``. Parameters and moving statistics are stored as ``[S, 1, F]``
    whatever the input's rank.

    Training normalises with the batch mean and biased batch variance (:class:`BatchNormTraining`)
    and updates ``moving = moving * momentum + batch * (1 - momentum)``; inference uses the moving
    statistics, as one multiply-add ``x * a + b`` per element (``a = gamma / sqrt(moving_var + eps)``,
    ``b = beta - moving_mean * a``). ``momentum`` may differ between replicas.
    """

    def __init__(
        self,
        replicas: int,
        features: int,
        momentum=0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        axis: int = -1,
    ) -> None:
        super().__init__()
        self.momentum = PerReplica(momentum)
        self.update_weight = PerReplica(1.0 - self.momentum.values)  # how far the moving statistics move
        self.epsilon = epsilon
        self.axis = axis
        self.gamma = nn.Parameter(torch.ones(replicas, 1, features)) if scale else None
        self.beta = nn.Parameter(torch.zeros(replicas, 1, features)) if center else None
        self.register_buffer("moving_mean", torch.zeros(replicas, 1, features))
        self.register_buffer("moving_variance", torch.ones(replicas, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.ndim
        if axis == 0:
            raise ValueError("BatchNorm's feature axis cannot be the replica axis")
        if x.ndim == 3 and axis == 2:
            shape = None  # [S, B, F]: the stored [S, 1, F] shape broadcasts as it is
        else:
            shape = [x.shape[0]] + [1] * (x.ndim - 1)
            shape[axis] = x.shape[axis]
        gamma = None if self.gamma is None else self._view(self.gamma, shape)
        beta = None if self.beta is None else self._view(self.beta, shape)
        if self.training:
            dims = tuple(d for d in range(1, x.ndim) if d != axis)
            y, mean, var = BatchNormTraining.apply(x, gamma, beta, dims, self.epsilon)
            with torch.no_grad():
                weight = self.update_weight.view(self.moving_mean)
                self.moving_mean.lerp_(mean.reshape(self.moving_mean.shape), weight)
                self.moving_variance.lerp_(var.reshape(self.moving_variance.shape), weight)
            return y
        a = torch.rsqrt(self._view(self.moving_variance, shape) + self.epsilon)
        if gamma is not None:
            a = a * gamma
        b = -self._view(self.moving_mean, shape) * a
        if beta is not None:
            b = b + beta
        return torch.addcmul(b, x, a)

    @staticmethod
    def _view(t: torch.Tensor, shape: list[int] | None) -> torch.Tensor:
        return t if shape is None else t.view(shape)


class Dropout(RandomDraws):
    """Keras ``Dropout(rate)``: inverted dropout (kept units scaled by 1/(1-rate)), identity in inference.
    ``rate`` is one number, or one per replica."""

    def __init__(self, rate) -> None:
        super().__init__()
        self.rate = Rate(rate)

    def mask_like(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like the mask: one draw per element (subclasses share draws across axes)."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.rate.any():
            return x
        return x * self.rate.mask(self.mask_like(x), self.generators)


class GaussianNoise(RandomDraws):
    """Keras ``GaussianNoise(stddev)``: adds N(0, stddev^2) in training, identity in inference.
    ``stddev`` is one number, or one per replica."""

    def __init__(self, stddev) -> None:
        super().__init__()
        self.stddev = PerReplica(stddev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.stddev.any():
            return x
        return torch.addcmul(x, self._draw(x, "normal_", self.stddev), self.stddev.view(x))
