"""Helpers shared by the layer tests: per-replica generators and per-replica gradient references."""

import torch

from reglab.model import STREAM_NOISE, seed_generator

S = 3  # replicas in the layer tests


def gens(seeds=range(S), stream=STREAM_NOISE):
    """One generator per replica, for the given seeds and random stream."""
    return [seed_generator(s, stream) for s in seeds]


def per_replica_grads(out, ref_outs, params, ref_params):
    """Backprop the same random cotangent through the batched layer and each reference."""
    cot = torch.randn_like(out)
    grads = torch.autograd.grad(out, params, cot)
    ref_grads = [torch.autograd.grad(o, p, cot[r]) for r, (o, p) in enumerate(zip(ref_outs, ref_params))]
    return grads, ref_grads
