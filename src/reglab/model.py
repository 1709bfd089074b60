"""A replica-batched network built from a variant's Keras-like list of layers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reglab import layers as L
from reglab.layerkinds import LAYER_KINDS
from reglab.replicas import seed_label, stream_seed
from reglab.shapes import output_shape

# Independent random streams derived from each seed.
STREAM_INIT, STREAM_SHUFFLE, STREAM_NOISE = 0, 1, 2
#: the source of randomness (reglab.replicas.SOURCES) each stream is
STREAM_SOURCES = {STREAM_INIT: "init", STREAM_SHUFFLE: "order", STREAM_NOISE: "draws"}


def seed_generator(seed: int | Mapping, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator for one replica's random stream (init, shuffle or noise).

    ``seed`` is a replica's seed: an int seeds every stream, a mapping of seeds per source
    (:func:`reglab.replicas.replica_seed`) gives this stream its own."""
    seed = stream_seed(seed, STREAM_SOURCES[stream])
    state = np.random.SeedSequence([int(seed), stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def build_layer(spec: dict, replicas: int, shape: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
    """One layer from its ``{kind: params}`` spec and its input's per-sample shape (see
    :mod:`reglab.shapes`), by the layer registry's builder (:mod:`reglab.layerkinds`); returns the
    layer and its output's per-sample shape."""
    (kind, params), = spec.items()
    out = output_shape(kind, params, shape)
    return LAYER_KINDS[kind].build(replicas, tuple(shape), params), out


class ReplicaNet(nn.Module):
    """S replicas of a sequential classifier; ``forward`` maps ``[S, B, *input]`` to logits.

    The head is ``Dense(1, sigmoid)`` (binary: logits ``[S, B]``) or ``Dense(K, softmax)``
    (K classes: logits ``[S, B, K]``). It returns its pre-activation; the sigmoid/softmax is applied
    by the loss (cross-entropy from logits, as Keras computes it) and by :meth:`predict_proba`.
    """

    def __init__(self, layer_specs: list[dict], input_shape: int | tuple[int, ...], seeds: list[int | Mapping]) -> None:
        super().__init__()
        self.replica_seeds = list(seeds)  # ints, or seeds per source (reglab.replicas.replica_seed)
        self.seeds = [seed_label(s) for s in seeds]
        built, shape = [], (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        for spec in layer_specs:
            layer, shape = build_layer(spec, len(self.seeds), shape)
            built.append(layer)
        *body, head = built
        binary = isinstance(head, L.Dense) and head.activation == "sigmoid" and shape == (1,)
        multiclass = isinstance(head, L.Dense) and head.activation == "softmax" and shape[0] >= 2
        if not (binary or multiclass):
            raise ValueError("the last layer must be dense with 1 unit and sigmoid activation, "
                             "or K >= 2 units and softmax activation")
        self.binary = binary
        self.n_classes = 2 if binary else shape[0]
        self.body = nn.Sequential(*body)
        self.head = head
        self.constrained = [m for m in self.modules() if isinstance(m, L.Dense) and m.constrained]
        self._all_modules = tuple(self.modules())  # for set_training
        self.reset_parameters()
        self.reset_noise()

    def set_training(self, mode: bool) -> None:
        """``train(mode)`` without its recursion: the flag set directly on every submodule (twice an
        epoch, for a handful of modules, ``nn.Module.train`` costs more than some layers' work)."""
        if self.training == mode:
            return
        for module in self._all_modules:
            object.__setattr__(module, "training", mode)

    @property
    def replicas(self) -> int:
        return len(self.seeds)

    def reset_parameters(self) -> None:
        """Initialise every replica's weights from its seed alone (layer by layer, in order)."""
        gens = [seed_generator(s, STREAM_INIT) for s in self.replica_seeds]
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters(gens)

    def reset_noise(self, device: str | torch.device = "cpu") -> None:
        """Give every stochastic layer the replicas' noise generators (shared, drawn in layer order)."""
        gens = [seed_generator(s, STREAM_NOISE, device) for s in self.replica_seeds]
        self.noise_generators = gens
        for module in self.modules():
            if isinstance(module, L.RandomDraws):
                module.generators = gens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.body(x)
        # without autograd, a hidden representation that is not (a view of) the input is the head's to overwrite
        temporary = not torch.is_grad_enabled() and hidden.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        logits = self.head.linear(hidden, overwrite=temporary)
        return logits.squeeze(-1) if self.binary else logits

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each replica's mean cross-entropy ``[S]``; ``y`` holds labels (class indices) ``[S, B]``."""
        if self.binary:
            per_sample = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        else:
            per_sample = F.cross_entropy(logits.flatten(0, 1), y.flatten().long(), reduction="none").view_as(y)
        return per_sample.mean(dim=1)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each replica's count of correct predictions ``[S]`` (Keras: probability > 0.5, or argmax)."""
        predicted = (logits > 0).float() if self.binary else logits.argmax(dim=-1).float()
        return (predicted == y).sum(dim=1).float()

    def constrain_(self) -> None:
        """Apply every Dense layer's kernel constraint (after each weight update)."""
        for module in self.constrained:
            module.constrain_()

    @torch.no_grad()
    def add_gradient_noise_(self, stddev: torch.Tensor, active: L.PerReplica) -> None:
        """Add fresh N(0, stddev^2) noise to every gradient, each replica from its own stream;
        ``stddev`` is float64 ``[S]`` or ``[1]``; replicas ``active`` marks as off draw nothing."""
        for p in self.parameters():
            if p.grad is not None:
                noise = L.draw_per_replica(p.grad, self.noise_generators, "normal_", active)
                p.grad.add_(noise.mul_(L.broadcast(stddev, p.grad)))

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
