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


def _is_view(t: torch.Tensor | None, view: torch.Tensor) -> bool:
    """Whether ``t`` is (the same memory as) ``view``."""
    return t is not None and t.data_ptr() == view.data_ptr() and t.stride() == view.stride() and t.shape == view.shape


class FlatBuffers:
    """A param group's parameters, gradients and per-parameter state tensors (``kinds``) each in one
    flat buffer, every parameter's own tensor a view of its slice, so that an optimizer step updates
    all parameters with one op per formula: torch's ``_foreach`` ops loop over the tensors on the
    CPU, one kernel per tensor. The CNN's Adam step and gradient reset took 56 kernel calls, now 7.

    The parameters' data are moved into the flat buffer (``p.data`` becomes a view of it) and each
    ``p.grad`` becomes a view of the flat gradient when first gathered; autograd then accumulates
    into it in place (as long as gradients are zeroed, not set to None). Whatever moves a parameter
    or gradient elsewhere is noticed (:meth:`params_in_place`, :meth:`grads_in_place`) and handled.
    """

    def __init__(self, params: list[torch.Tensor], kinds: tuple[str, ...]) -> None:
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.param = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.buffers = {kind: torch.zeros_like(self.param) for kind in (*kinds, "grad")}
        for p, view in zip(self.params, self.split(self.param)):
            p.data = view
        self.param_views = [p.data for p in self.params]
        self.views = {kind: self.split(flat) for kind, flat in self.buffers.items()}

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat``'s slices shaped as the parameters."""
        return [part.view_as(p) for part, p in zip(torch.split(flat, self.sizes), self.params)]

    def params_in_place(self) -> bool:
        return all(_is_view(p.data, v) for p, v in zip(self.params, self.param_views))

    def grads_in_place(self) -> bool:
        return all(_is_view(p.grad, v) for p, v in zip(self.params, self.views["grad"]))

    def gather_grads(self) -> torch.Tensor:
        """The flat gradient of all the parameters (each must have one); every ``p.grad`` is then a
        view of it."""
        flat = self.buffers["grad"]
        if not self.grads_in_place():
            torch.cat([p.grad.reshape(-1) for p in self.params], out=flat)
            for p, v in zip(self.params, self.views["grad"]):
                p.grad = v
        return flat


class KerasAdam(ReplicaOptimizer):
    """Keras' Adam: ``w -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)`` with eps 1e-7.

    torch's Adam adds eps after the bias correction of ``v`` (and defaults to 1e-8); Keras adds it
    to the raw ``sqrt(v)``. Moments update as Keras writes them: ``m += (g - m) * (1 - b1)``.
    ``lr`` is one number, or one per replica (parameters carry the replica axis first).

    From its first step, a group's parameters, gradients and moments live in flat buffers
    (:class:`FlatBuffers`); the arithmetic per element is the same as one parameter at a time.
    """

    def __init__(self, params, lr=1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(params, dict(lr=learning_rate(lr), beta_1=beta_1, beta_2=beta_2, epsilon=epsilon))
        self._flat: dict[int, FlatBuffers] = {}  # id of a param group -> its buffers

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``; gradients kept (``set_to_none=False``) that are views of the flat
        buffers are zeroed with one op per group."""
        flats = [self._flat.get(id(group)) for group in self.param_groups]
        if set_to_none or not all(flat is not None and flat.grads_in_place() for flat in flats):
            super().zero_grad(set_to_none)
            return
        for flat in flats:
            flat.buffers["grad"].zero_()

    def update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One Adam step of ``params``."""
        flat = self._flat.get(id(group))
        if flat is None:
            flat = self._flat[id(group)] = FlatBuffers(group["params"], ("m", "v"))
            for p, m, v in zip(flat.params, flat.views["m"], flat.views["v"]):
                self.state[p].update(step=0, m=m, v=v)
        states = [self.state[p] for p in params]
        for st in states:
            st["step"] += 1
        t = states[0]["step"]
        b1, b2 = group["beta_1"], group["beta_2"]
        alpha = group["lr"] * (math.sqrt(1.0 - b2**t) / (1.0 - b1**t))
        if len(params) == len(flat.params):  # every parameter has a gradient: the flat buffers
            g, m, v = flat.gather_grads(), flat.buffers["m"], flat.buffers["v"]
            m.lerp_(g, 1.0 - b1)
            v.lerp_(g * g, 1.0 - b2)
            denom = v.sqrt().add_(group["epsilon"])
            if not isinstance(alpha, torch.Tensor) and flat.params_in_place():
                flat.param.addcdiv_(m, denom, value=-alpha)
                return
            ms, denoms = flat.views["m"], flat.split(denom)
        else:
            grads = [p.grad for p in params]
            ms = [st["m"] for st in states]
            vs = [st["v"] for st in states]
            torch._foreach_lerp_(ms, grads, 1.0 - b1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - b2)
            denoms = torch._foreach_sqrt(vs)
            torch._foreach_add_(denoms, group["epsilon"])
        if isinstance(alpha, torch.Tensor):  # one learning rate per replica
            steps = torch._foreach_div(ms, denoms)
            torch._foreach_mul_(steps, replica_views(params, alpha))
            torch._foreach_sub_(params, steps)
        else:
            torch._foreach_addcdiv_(params, ms, denoms, value=-alpha)


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
