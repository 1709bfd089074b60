"""Helpers shared by the layer tests: per-replica generators and per-replica gradient references."""

import numpy as np
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


def bn_reference(x, momentum, eps, moving_mean, moving_var, axis=-1):
    """Keras' BatchNormalization training step in numpy over every axis of ``x`` but ``axis``:
    the output and the updated moving statistics (biased variance, as Keras computes it)."""
    reduce = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    mean = x.mean(axis=reduce, keepdims=True)
    var = (x**2).mean(axis=reduce, keepdims=True) - mean**2
    y = (x - mean) / np.sqrt(var + eps)
    mean, var = mean.squeeze(reduce), var.squeeze(reduce)
    return y, moving_mean * momentum + mean * (1 - momentum), moving_var * momentum + var * (1 - momentum)
