"""A replica-batched network built from a variant's Keras-like list of layers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reglab import layers as L

# Independent random streams derived from each seed.
STREAM_INIT, STREAM_SHUFFLE, STREAM_NOISE = 0, 1, 2


def seed_generator(seed: int, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator for one seed's random stream (init, shuffle or noise)."""
    state = np.random.SeedSequence([int(seed), stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def build_layer(spec: dict, replicas: int, in_features: int) -> tuple[nn.Module, int]:
    """One layer from its ``{kind: params}`` spec; returns it and its output width."""
    (kind, params), = spec.items()
    if kind == "dense":
        layer = L.Dense(replicas, in_features, **params)
        return layer, params["units"]
    if kind == "batch_norm":
        return L.BatchNorm(replicas, in_features, **params), in_features
    if kind == "dropout":
        return L.Dropout(**params), in_features
    if kind == "gaussian_noise":
        return L.GaussianNoise(**params), in_features
    if kind == "activation":
        return L.Activation(**params), in_features
    raise ValueError(f"unknown layer {kind!r}")


class ReplicaNet(nn.Module):
    """S replicas of a sequential network; ``forward`` maps ``[S, B, in]`` to logits ``[S, B]``.

    The final ``Dense(1, sigmoid)`` returns its pre-activation (the logit); the sigmoid is applied
    by the loss (binary cross-entropy with logits) and by :meth:`predict_proba`.
    """

    def __init__(self, layer_specs: list[dict], in_features: int, seeds: list[int]) -> None:
        super().__init__()
        self.seeds = [int(s) for s in seeds]
        built, width = [], in_features
        for spec in layer_specs:
            layer, width = build_layer(spec, len(self.seeds), width)
            built.append(layer)
        *body, head = built
        if not isinstance(head, L.Dense) or head.activation != "sigmoid" or width != 1:
            raise ValueError("the last layer must be dense with 1 unit and sigmoid activation")
        self.body = nn.Sequential(*body)
        self.head = head
        self.constrained = [m for m in self.modules() if isinstance(m, L.Dense) and m.constrained]
        self.reset_parameters()
        self.reset_noise()

    @property
    def replicas(self) -> int:
        return len(self.seeds)

    def reset_parameters(self) -> None:
        """Initialise every replica's weights from its seed alone (layer by layer, in order)."""
        gens = [seed_generator(s, STREAM_INIT) for s in self.seeds]
        for module in self.modules():
            if isinstance(module, L.Dense):
                module.reset_parameters(gens)

    def reset_noise(self, device: str | torch.device = "cpu") -> None:
        """Give every stochastic layer the replicas' noise generators (shared, drawn in layer order)."""
        gens = [seed_generator(s, STREAM_NOISE, device) for s in self.seeds]
        self.noise_generators = gens
        for module in self.modules():
            if isinstance(module, L.RandomDraws):
                module.generators = gens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.linear(self.body(x)).squeeze(-1)

    def constrain_(self) -> None:
        """Apply every Dense layer's kernel constraint (after each weight update)."""
        for module in self.constrained:
            module.constrain_()

    @torch.no_grad()
    def add_gradient_noise_(self, stddev: float) -> None:
        """Add fresh N(0, stddev^2) noise to every gradient, each replica from its own stream."""
        for p in self.parameters():
            if p.grad is not None:
                p.grad.add_(L.draw_per_replica(p.grad, self.noise_generators, "normal_"), alpha=stddev)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Inference-mode probabilities ``[S, N]`` for shared inputs ``x`` of shape ``[N, in]``."""
        was_training = self.training
        self.eval()
        out = [
            torch.sigmoid(self(part.unsqueeze(0).expand(self.replicas, -1, -1)))
            for part in torch.split(x, chunk)
        ]
        self.train(was_training)
        return torch.cat(out, dim=1)
