"""Optimizers with Keras semantics."""

from __future__ import annotations

import math

import torch


class KerasAdam(torch.optim.Optimizer):
    """Keras' Adam: ``w -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)`` with eps 1e-7.

    torch's Adam adds eps after the bias correction of ``v`` (and defaults to 1e-8); Keras adds it
    to the raw ``sqrt(v)``. Moments update as Keras writes them: ``m += (g - m) * (1 - b1)``.
    """

    def __init__(self, params, lr: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
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
            alpha = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["epsilon"])
            torch._foreach_addcdiv_(params, ms, denom, value=-alpha)
        return loss


def make_optimizer(params, spec: dict) -> torch.optim.Optimizer:
    """The optimizer a study's ``training.optimizer`` entry names, with Keras semantics."""
    spec = dict(spec)
    name = spec.pop("name")
    if name == "adam":
        return KerasAdam(params, **spec)
    if name == "sgd":
        # Keras' v = mu*v - lr*g; w += v equals torch's SGD while the learning rate is constant.
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.0),
                               nesterov=spec.get("nesterov", False), foreach=True)
    raise ValueError(f"unknown optimizer {name!r}")
