"""Replica-batched layers with Keras semantics.

Every layer holds S independent replicas of itself: weights carry a leading replica dimension and
inputs have shape ``[S, batch, features]``, so one batched matmul computes all replicas at once.
Randomness in training (dropout masks, noise) is drawn per replica from that replica's own
generator, so replica ``r`` computes exactly what a lone model with replica ``r``'s weights and
random stream would.
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
}


def keras_init_(tensor: torch.Tensor, name: str, fan_in: int, fan_out: int, generator: torch.Generator) -> None:
    """Fill ``tensor`` in place with the Keras initializer ``name`` (``glorot_*`` or ``he_*``)."""
    fan = {"glorot": (fan_in + fan_out) / 2.0, "he": fan_in / 2.0}[name.split("_")[0]]
    if name.endswith("_uniform"):
        limit = math.sqrt(3.0 / fan)
        nn.init.uniform_(tensor, -limit, limit, generator=generator)
    else:  # Keras' *_normal draw from a normal truncated at two stddevs, rescaled to keep the variance
        std = math.sqrt(1.0 / fan) / 0.87962566103423978
        nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std, generator=generator)


class Dense(nn.Module):
    """Keras ``Dense``: ``activation(x @ kernel + bias)`` with kernel ``[S, in, units]``."""

    def __init__(
        self,
        replicas: int,
        in_features: int,
        units: int,
        activation: str = "linear",
        kernel_initializer: str = "glorot_uniform",
        use_bias: bool = True,
    ) -> None:
        super().__init__()
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

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activation ``x @ kernel + bias``."""
        if self.kernel.shape[2] == 1:
            # A one-unit output as multiply-and-sum: CPU batched matmul kernels are slow for
            # matrix-vector shapes, forward and backward (measured 6x slower).
            y = (x * self.kernel.transpose(1, 2)).sum(dim=2, keepdim=True)
            return y if self.bias is None else y + self.bias
        if self.bias is None:
            return torch.bmm(x, self.kernel)
        return torch.baddbmm(self.bias, x, self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y if self._act is None else self._act(y)


class Activation(nn.Module):
    """Keras ``Activation(name)``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._act = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._act is None else self._act(x)


class BatchNorm(nn.Module):
    """Keras ``BatchNormalization`` over the feature axis, per replica.

    Training normalises with the batch mean and biased batch variance and updates
    ``moving = moving * momentum + batch * (1 - momentum)``; inference uses the moving statistics.
    """

    def __init__(
        self,
        replicas: int,
        features: int,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
    ) -> None:
        super().__init__()
        self.momentum = momentum
        self.epsilon = epsilon
        self.gamma = nn.Parameter(torch.ones(replicas, 1, features)) if scale else None
        self.beta = nn.Parameter(torch.zeros(replicas, 1, features)) if center else None
        self.register_buffer("moving_mean", torch.zeros(replicas, 1, features))
        self.register_buffer("moving_variance", torch.ones(replicas, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)
            with torch.no_grad():
                self.moving_mean.lerp_(mean, 1.0 - self.momentum)
                self.moving_variance.lerp_(var, 1.0 - self.momentum)
        else:
            mean, var = self.moving_mean, self.moving_variance
        inv = torch.rsqrt(var + self.epsilon)
        if self.gamma is not None:
            inv = inv * self.gamma
        y = (x - mean) * inv
        return y if self.beta is None else y + self.beta


class _PerReplicaNoise(nn.Module):
    """Base for layers that draw fresh per-replica random numbers in training only."""

    def __init__(self) -> None:
        super().__init__()
        self.generators: list[torch.Generator] = []

    def _draw(self, like: torch.Tensor, fill: str) -> torch.Tensor:
        """One tensor shaped like ``like``; slice r filled from replica r's generator."""
        out = torch.empty_like(like)
        for r, gen in enumerate(self.generators):
            getattr(out[r], fill)(generator=gen)
        return out


class Dropout(_PerReplicaNoise):
    """Keras ``Dropout(rate)``: inverted dropout (kept units scaled by 1/(1-rate)), identity in inference."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        # Float mask (1/keep where kept, else 0) computed in place: bool masks take a slow path.
        mask = self._draw(x, "uniform_").lt_(keep).mul_(1.0 / keep)
        return x * mask


class GaussianNoise(_PerReplicaNoise):
    """Keras ``GaussianNoise(stddev)``: adds N(0, stddev^2) in training, identity in inference."""

    def __init__(self, stddev: float) -> None:
        super().__init__()
        self.stddev = stddev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.stddev == 0.0:
            return x
        return torch.add(x, self._draw(x, "normal_"), alpha=self.stddev)
