"""Replica-batched CNN layers, replica by replica, against torch references (forward and gradients)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reglab import conv as C
from reglab import layers as L
from reglab.model import STREAM_INIT

from replicas import S, bn_reference, gens, per_replica_grads  # tests/replicas.py


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("kernel_size", [3, (2, 3)])
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_conv2d_matches_torch_conv2d_per_replica_forward_and_backward(padding, kernel_size, activation):
    torch.manual_seed(0)
    layer = C.Conv2D(S, 2, 5, kernel_size, padding=padding, activation=activation)
    layer.reset_parameters(gens(stream=STREAM_INIT))
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(S, 4, 2, 7, 8, requires_grad=True)
    out = layer(x)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    expected_hw = (7, 8) if padding == "same" else (7 - kh + 1, 8 - kw + 1)
    assert out.shape == (S, 4, 5, *expected_hw)
    act = torch.relu if activation == "relu" else (lambda t: t)
    ref_outs, ref_params = [], []
    for r in range(S):
        w = layer.kernel[r].detach().clone().requires_grad_()
        b = layer.bias[r].detach().clone().requires_grad_()
        xr = x[r].detach().clone().requires_grad_()
        if padding == "same":  # Keras/TF "same": the odd extra row/column goes at the bottom/right
            (pt, pb), (pl, pr) = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw)]
            ref = F.conv2d(F.pad(xr, (pl, pr, pt, pb)), w, b)
        else:
            ref = F.conv2d(xr, w, b)
        ref_outs.append(act(ref))
        ref_params.append((w, b, xr))
        torch.testing.assert_close(out[r], ref_outs[r], atol=1e-5, rtol=1e-5)
    (gk, gb, gx), ref = per_replica_grads(out, ref_outs, [layer.kernel, layer.bias, x], ref_params)
    for r, (gw, gbr, gxr) in enumerate(ref):
        torch.testing.assert_close(gk[r], gw, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gb[r], gbr, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gx[r], gxr, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("padding, kernel_size", [("same", 3), ("valid", 3), ("same", (2, 3))])
@pytest.mark.parametrize("grad", [False, True])
def test_conv2d_on_inputs_shared_by_all_replicas_matches_torch_conv2d(in_channels, padding, kernel_size, grad):
    """An input expanded over the replica axis (the shared test set) is convolved once with all
    replicas' kernels (one input channel: as a matrix product); per replica as F.conv2d, with or
    without autograd (in place of the activation without), the input untouched."""
    torch.manual_seed(3)
    layer = C.Conv2D(S, in_channels, 4, kernel_size, padding=padding, activation="relu")
    layer.reset_parameters(gens(stream=STREAM_INIT))
    with torch.no_grad():
        layer.bias.normal_()
    maps = torch.randn(5, in_channels, 7, 6)
    before = maps.clone()
    with torch.set_grad_enabled(grad):
        out = layer(maps.expand(S, *maps.shape))
    assert torch.equal(maps, before)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    (pt, pb), (pl, pr) = [((k - 1) // 2, k - 1 - (k - 1) // 2) if padding == "same" else (0, 0) for k in (kh, kw)]
    refs = [torch.relu(F.conv2d(F.pad(maps, (pl, pr, pt, pb)), layer.kernel[r], layer.bias[r])) for r in range(S)]
    for r in range(S):
        torch.testing.assert_close(out[r], refs[r], atol=1e-5, rtol=1e-5)
    if grad:
        cot = torch.randn_like(out)
        grads = torch.autograd.grad(out, [layer.kernel, layer.bias], cot)
        for r in range(S):
            ref = torch.autograd.grad(refs[r], [layer.kernel, layer.bias], cot[r])
            torch.testing.assert_close(grads[0][r], ref[0][r], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(grads[1][r], ref[1][r], atol=1e-5, rtol=1e-5)


def test_conv2d_without_bias_and_stacked_convs_keep_replicas_apart():
    torch.manual_seed(1)
    a = C.Conv2D(S, 1, 4, 3, padding="same", activation="relu", use_bias=False)
    b = C.Conv2D(S, 4, 2, 3)
    a.reset_parameters(gens(stream=STREAM_INIT))
    b.reset_parameters(gens(stream=STREAM_INIT))
    assert a.bias is None
    x = torch.randn(S, 3, 1, 6, 6)
    y = b(a(x))
    for r in range(S):
        ref = F.conv2d(torch.relu(F.conv2d(x[r], a.kernel[r], padding="same")), b.kernel[r], b.bias[r])
        torch.testing.assert_close(y[r], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform"])
def test_conv2d_init_uses_keras_conv_fans_and_depends_only_on_the_seed(name):
    layer = C.Conv2D(S, 6, 16, 3, kernel_initializer=name)
    layer.reset_parameters(gens([4, 7, 9], STREAM_INIT))
    fan_in, fan_out = 3 * 3 * 6, 3 * 3 * 16
    limit = math.sqrt(6 / (fan_in + fan_out)) if name == "glorot_uniform" else math.sqrt(6 / fan_in)
    assert layer.kernel.abs().max() <= limit
    assert layer.kernel.abs().max() > 0.95 * limit
    assert layer.kernel.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert torch.count_nonzero(layer.bias) == 0
    alone = C.Conv2D(1, 6, 16, 3, kernel_initializer=name)
    alone.reset_parameters(gens([7], STREAM_INIT))
    assert torch.equal(alone.kernel[0], layer.kernel[1])
    assert not torch.equal(layer.kernel[0], layer.kernel[1])


@pytest.mark.parametrize("pool_size,hw", [(2, (8, 8)), (2, (7, 9)), ((3, 2), (9, 6))])
def test_max_pooling_matches_torch_max_pool_per_replica(pool_size, hw):
    torch.manual_seed(2)
    x = torch.randn(S, 4, 3, *hw, requires_grad=True)
    out = C.MaxPooling2D(pool_size)(x)
    pool = nn.MaxPool2d(pool_size)  # torch's default stride is the window too; no padding = Keras "valid"
    ref_outs, xs = [], []
    for r in range(S):
        xr = x[r].detach().clone().requires_grad_()
        ref_outs.append(pool(xr))
        xs.append((xr,))
        torch.testing.assert_close(out[r], ref_outs[r])
    ph, pw = (pool_size, pool_size) if isinstance(pool_size, int) else pool_size
    assert out.shape == (S, 4, 3, hw[0] // ph, hw[1] // pw)
    (gx,), ref = per_replica_grads(out, ref_outs, [x], xs)
    for r, (gxr,) in enumerate(ref):
        torch.testing.assert_close(gx[r], gxr)


def test_pooling_and_flatten_after_a_conv_keep_replicas_apart():
    torch.manual_seed(3)
    conv = C.Conv2D(S, 1, 4, 3, padding="same")
    conv.reset_parameters(gens(stream=STREAM_INIT))
    x = torch.randn(S, 5, 1, 8, 8)
    y = C.Flatten()(C.MaxPooling2D()(conv(x)))  # conv output is a [S,B,...] view of [B,S,...] memory
    assert y.shape == (S, 5, 4 * 4 * 4)
    for r in range(S):
        ref = F.max_pool2d(F.conv2d(x[r], conv.kernel[r], conv.bias[r], padding="same"), 2).reshape(5, -1)
        torch.testing.assert_close(y[r], ref, atol=1e-5, rtol=1e-5)


def test_flatten_is_channels_first():
    x = torch.arange(S * 2 * 3 * 4 * 5, dtype=torch.float32).reshape(S, 2, 3, 4, 5)
    y = C.Flatten()(x)
    assert y.shape == (S, 2, 60)
    torch.testing.assert_close(y[1, 0], x[1, 0].reshape(-1))


@pytest.mark.parametrize("momentum", [0.99, 0.0])
def test_batchnorm_over_channels_matches_keras_formula_and_moving_stats(momentum):
    torch.manual_seed(4)
    bn = L.BatchNorm(S, 3, momentum=momentum, axis=2)
    x = torch.randn(S, 6, 3, 5, 4) * 3 + 2
    for _ in range(3):
        before_m, before_v = bn.moving_mean.clone(), bn.moving_variance.clone()
        y = bn(x)
        for r in range(S):
            ref, m, v = bn_reference(  # maps [B, C, H, W]: statistics per channel
                x[r].double().numpy(), momentum, 1e-3, before_m[r, 0].double().numpy(), before_v[r, 0].double().numpy(),
                axis=1,
            )
            np.testing.assert_allclose(y[r].detach().numpy(), ref, atol=1e-5)
            np.testing.assert_allclose(bn.moving_mean[r, 0].numpy(), m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bn.moving_variance[r, 0].numpy(), v, rtol=1e-5, atol=1e-6)


def test_batchnorm_over_channels_matches_torch_batch_norm_gradients_and_inference():
    torch.manual_seed(5)
    bn = L.BatchNorm(S, 3, axis=2)
    with torch.no_grad():
        bn.gamma.uniform_(0.5, 2)
        bn.beta.normal_()
    conv = C.Conv2D(S, 2, 3, 3, padding="same")  # normalise a real conv output (a strided view)
    conv.reset_parameters(gens(stream=STREAM_INIT))
    x = conv(torch.randn(S, 6, 2, 5, 5)).detach().requires_grad_()
    y = bn(x)
    ref_outs, ref_params = [], []
    for r in range(S):
        g = bn.gamma[r, 0].detach().clone().requires_grad_()
        b = bn.beta[r, 0].detach().clone().requires_grad_()
        xr = x[r].detach().clone().requires_grad_()
        ref_outs.append(F.batch_norm(xr, None, None, g, b, training=True, eps=1e-3))
        ref_params.append((g, b, xr))
        torch.testing.assert_close(y[r], ref_outs[r], atol=1e-5, rtol=1e-5)
    (gg, gb, gx), ref = per_replica_grads(y, ref_outs, [bn.gamma, bn.beta, x], ref_params)
    for r, (rg, rb, rx) in enumerate(ref):
        torch.testing.assert_close(gg[r, 0], rg, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(gb[r, 0], rb, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(gx[r], rx, atol=1e-4, rtol=1e-4)
    bn.eval()
    moving = (bn.moving_mean.clone(), bn.moving_variance.clone())
    y_eval = bn(x)
    assert torch.equal(bn.moving_mean, moving[0]) and torch.equal(bn.moving_variance, moving[1])
    for r in range(S):
        ref = F.batch_norm(x[r], moving[0][r, 0], moving[1][r, 0], bn.gamma[r, 0], bn.beta[r, 0],
                           training=False, eps=1e-3)
        torch.testing.assert_close(y_eval[r], ref, atol=1e-5, rtol=1e-5)


def test_batchnorm_on_sequences_normalises_over_samples_and_time():
    torch.manual_seed(6)
    bn = L.BatchNorm(S, 4)  # default axis -1 on [S, B, T, F]
    x = torch.randn(S, 5, 7, 4) * 2 + 1
    y = bn(x)
    for r in range(S):
        ref = F.batch_norm(x[r].reshape(-1, 4), None, None, training=True, eps=1e-3).reshape(5, 7, 4)
        torch.testing.assert_close(y[r], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.moving_mean[r, 0], 0.01 * x[r].mean(dim=(0, 1)))


def test_spatial_dropout_drops_whole_maps_per_replica_and_is_identity_in_inference():
    layer = C.SpatialDropout2D(0.3)
    layer.generators = gens()
    x = torch.randn(S, 100, 40, 3, 4)
    y = layer(x)
    kept = (y != 0).flatten(3)
    assert torch.equal(kept.all(dim=3), kept.any(dim=3))  # each map is either all kept or all dropped
    kept_maps = kept.all(dim=3)
    torch.testing.assert_close(y[kept_maps], x[kept_maps] / 0.7)
    assert 1 - kept_maps.float().mean().item() == pytest.approx(0.3, abs=0.02)
    for r in range(S):  # replicas draw different masks
        assert 1 - kept_maps[r].float().mean().item() == pytest.approx(0.3, abs=0.04)
    assert not torch.equal(kept_maps[0], kept_maps[1])
    lone = C.SpatialDropout2D(0.3)
    lone.generators = gens([2])
    torch.testing.assert_close(lone(x[2:3]), y[2:3])  # replica alone == replica in the batch
    layer.eval()
    assert layer(x) is x
