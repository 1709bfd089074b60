"""Optimizers with Keras semantics."""

from __future__ import annotations

import math

import torch

from reglab.layers import broadcast


def replica_views(params: list[torch.Tensor], values: torch.Tensor) -> list[torch.Tensor]:
    """Per-replica ``values`` ``[S]`` (float64) shaped to broadcast over each ``[S, ...]`` parameter."""
    return [broadcast(values, p) for p in params]


def learning_rate(lr) -> float | torch.Tensor:
    """A learning rate: one number, or a float64 tensor ``[S]`` of one per replica."""
    return torch.as_tensor(lr, dtype=torch.float64) if isinstance(lr, (list, tuple)) else float(lr)


class ReplicaOptimizer(torch.optim.Optimizer):
    """Base of the Keras optimizers: ``step`` updates, group by group, the parameters that have a
    gradient (:meth:`update`)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self.update(group, params)
        return loss

    def update(self, group: dict, params: list[torch.Tensor]) -> None:
        raise NotImplementedError


class KerasAdam(ReplicaOptimizer):
    """Keras' Adam: ``w -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)`` with eps 1e-7.

    torch's Adam adds eps after the bias correction of ``v`` (and defaults to 1e-8); Keras adds it
    to the raw ``sqrt(v)``. Moments update as Keras writes them: ``m += (g - m) * (1 - b1)``.
    ``lr`` is one number, or one per replica (parameters carry the replica axis first).
    """

    def __init__(self, params, lr=1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(params, dict(lr=learning_rate(lr), beta_1=beta_1, beta_2=beta_2, epsilon=epsilon))

    def update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One Adam step of ``params``."""
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        for p, st in zip(params, states):
            if not st:
                st["step"] = 0
                st["m"] = torch.zeros_like(p)
                st["v"] = torch.zeros_like(p)
            st["step"] += 1
        t = states[0]["step"]
        b1, b2 = group["beta_1"], group["beta_2"]
        ms = [st["m"] for st in states]
        vs = [st["v"] for st in states]
        torch._foreach_lerp_(ms, grads, 1.0 - b1)
        torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - b2)
        alpha = group["lr"] * (math.sqrt(1.0 - b2**t) / (1.0 - b1**t))
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, group["epsilon"])
        if isinstance(alpha, torch.Tensor):  # one learning rate per replica
            steps = torch._foreach_div(ms, denom)
            torch._foreach_mul_(steps, replica_views(params, alpha))
            torch._foreach_sub_(params, steps)
        else:
            torch._foreach_addcdiv_(params, ms, denom, value=-alpha)


class KerasSGD(ReplicaOptimizer):
    """Keras' SGD: ``v = momentum * v - lr * g; w += v`` (Nesterov: ``w += momentum * v - lr * g``;
    without momentum ``w -= lr * g``). ``lr`` is one number, or one per replica."""

    def __init__(self, params, lr=0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=learning_rate(lr), momentum=momentum, nesterov=nesterov))

    def update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One SGD step of ``params``."""
        lr, mu = group["lr"], group["momentum"]
        scaled = torch._foreach_mul([p.grad for p in params],
                                    replica_views(params, lr) if isinstance(lr, torch.Tensor) else lr)
        if mu == 0:
            torch._foreach_sub_(params, scaled)
            return
        vs = [self.state[p].setdefault("v", torch.zeros_like(p)) for p in params]
        torch._foreach_mul_(vs, mu)
        torch._foreach_sub_(vs, scaled)
        if group["nesterov"]:
            torch._foreach_add_(params, torch._foreach_sub(torch._foreach_mul(vs, mu), scaled))
        else:
            torch._foreach_add_(params, vs)


def make_optimizer(params, spec: dict) -> torch.optim.Optimizer:
    """The optimizer a study's ``training.optimizer`` entry names, with Keras semantics."""
    spec = dict(spec)
    name = spec.pop("name")
    if name == "adam":
        return KerasAdam(params, **spec)
    if name == "sgd":
        return KerasSGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.0), nesterov=spec.get("nesterov", False))
    raise ValueError(f"unknown optimizer {name!r}")
