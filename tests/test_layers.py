"""Each replica-batched layer, replica by replica, against a reference (torch.nn or Keras' formula)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab import layers as L
from reglab.model import STREAM_NOISE, ReplicaNet, seed_generator

from replicas import S, bn_reference, gens, per_replica_grads  # tests/replicas.py


@pytest.mark.parametrize("units", [1, 7])
@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh"])
def test_dense_matches_torch_linear_forward_and_backward(units, activation):
    torch.manual_seed(0)
    layer = L.Dense(S, 5, units, activation=activation)
    layer.reset_parameters(gens())
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(S, 8, 5)
    out = layer(x)
    act = {"linear": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation]
    ref_params, ref_outs = [], []
    for r in range(S):
        w = layer.kernel[r].detach().T.clone().requires_grad_()
        b = layer.bias[r, 0].detach().clone().requires_grad_()
        ref_outs.append(act(F.linear(x[r], w, b)))
        ref_params.append((w, b))
        torch.testing.assert_close(out[r], ref_outs[r])
    (gk, gb), ref = per_replica_grads(out, ref_outs, [layer.kernel, layer.bias], ref_params)
    for r, (gw, gbr) in enumerate(ref):
        torch.testing.assert_close(gk[r], gw.T)
        torch.testing.assert_close(gb[r, 0], gbr)


def assert_dense_matches_torch_linear(in_features, units, batch, use_bias):
    """A ReLU Dense layer of S replicas, replica by replica against F.linear: the output and the
    gradients w.r.t. kernel, bias and input."""
    torch.manual_seed(0)
    layer = L.Dense(S, in_features, units, activation="relu", use_bias=use_bias)
    layer.reset_parameters(gens())
    if use_bias:
        with torch.no_grad():
            layer.bias.normal_()
    x = torch.randn(S, batch, in_features, requires_grad=True)
    out = layer(x)
    cot = torch.randn_like(out)
    params = [layer.kernel] + ([layer.bias] if use_bias else [])
    grads = torch.autograd.grad(out, params + [x], cot)
    for r in range(S):
        w = layer.kernel[r].detach().T.clone().requires_grad_()
        b = layer.bias[r, 0].detach().clone().requires_grad_() if use_bias else None
        xr = x[r].detach().clone().requires_grad_()
        ref = torch.relu(F.linear(xr, w, b))
        torch.testing.assert_close(out[r], ref)
        ref_grads = torch.autograd.grad(ref, [w] + ([b] if use_bias else []) + [xr], cot[r])
        torch.testing.assert_close(grads[0][r], ref_grads[0].T)
        if use_bias:
            torch.testing.assert_close(grads[1][r, 0], ref_grads[1])
        torch.testing.assert_close(grads[-1][r], ref_grads[-1])


@pytest.mark.parametrize("in_features", [1, 2])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_with_few_inputs_matches_torch_linear_forward_and_backward(in_features, use_bias):
    """Dense layers of at most SMALL_FAN_IN inputs take their own path (a sum of broadcast products,
    gradients by bmm): replica by replica against F.linear, including the gradient w.r.t. the input."""
    assert in_features <= L.SMALL_FAN_IN
    assert_dense_matches_torch_linear(in_features, 9, 11, use_bias)


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_with_few_units_matches_torch_linear_forward_and_backward(use_bias):
    """Dense layers whose output (or kernel gradient) is narrow compute their products transposed
    (NarrowLinear): replica by replica against F.linear, including the gradient w.r.t. the input."""
    units, in_features, batch = 3, 40, 20
    assert L.NARROW_RATIO * units <= batch
    assert_dense_matches_torch_linear(in_features, units, batch, use_bias)


def test_inference_leaves_the_input_untouched_and_matches_training_mode_arithmetic():
    """Without autograd the one-unit head may compute in place in the hidden activations it is
    given: never in the network's input (a head alone) and with the same result as with autograd."""
    head_only = ReplicaNet([{"dense": {"units": 1, "activation": "sigmoid"}}], 4, [0, 1])
    net = ReplicaNet([{"dense": {"units": 6, "activation": "relu"}}, {"dense": {"units": 1, "activation": "sigmoid"}}],
                     4, [0, 1])
    x = torch.randn(2, 5, 4)
    before = x.clone()
    for model in (head_only, net):
        model.eval()
        with torch.no_grad():
            fast = model(x)
        assert torch.equal(x, before)
        torch.testing.assert_close(fast, model(x).detach(), rtol=0, atol=0)


def test_set_training_switches_every_submodule_as_train_and_eval_do():
    net = ReplicaNet([{"dense": {"units": 6, "activation": "relu"}}, {"dropout": {"rate": 0.5}},
                      {"batch_norm": {}}, {"dense": {"units": 1, "activation": "sigmoid"}}], 4, [0, 1])
    for mode in (False, True, False):
        net.set_training(mode)
        assert {m.training for m in net.modules()} == {mode}
    net.train()  # nn.Module's own switch afterwards still reaches every module
    assert {m.training for m in net.modules()} == {True}


@pytest.mark.parametrize(
    "name,limit",
    [("glorot_uniform", math.sqrt(6 / (40 + 60))), ("he_uniform", math.sqrt(6 / 40))],
)
def test_uniform_initializers_follow_keras_limits(name, limit):
    w = torch.empty(40, 60)
    L.keras_init_(w, name, 40, 60, torch.Generator().manual_seed(0))
    assert w.abs().max() <= limit
    assert w.abs().max() > 0.95 * limit
    assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.05)


@pytest.mark.parametrize("name,var", [("glorot_normal", 2 / (40 + 60)), ("he_normal", 2 / 40)])
def test_normal_initializers_follow_keras_variance_and_truncation(name, var):
    w = torch.empty(200, 60) if name == "he_normal" else torch.empty(40, 60)
    fan_in, fan_out = (40, 60)
    L.keras_init_(w, name, fan_in, fan_out, torch.Generator().manual_seed(0))
    std = math.sqrt(var)
    assert w.var().item() == pytest.approx(var, rel=0.08)
    assert w.abs().max() <= 2 * std / 0.87962566103423978 + 1e-6


def test_dense_bias_starts_at_zero_and_replicas_differ():
    layer = L.Dense(S, 4, 6)
    layer.reset_parameters(gens(stream=0))
    assert torch.count_nonzero(layer.bias) == 0
    assert not torch.equal(layer.kernel[0], layer.kernel[1])


@pytest.mark.parametrize("momentum", [0.99, 0.0])
def test_batchnorm_training_matches_keras_formula_and_updates_moving_stats(momentum):
    torch.manual_seed(1)
    bn = L.BatchNorm(S, 4, momentum=momentum, epsilon=1e-3)
    x = torch.randn(S, 16, 4) * 3 + 2
    for _ in range(3):  # a few updates so the moving statistics move away from (0, 1)
        before_m, before_v = bn.moving_mean.clone(), bn.moving_variance.clone()
        y = bn(x)
        for r in range(S):
            ref, m, v = bn_reference(
                x[r].double().numpy(), momentum, 1e-3, before_m[r, 0].double().numpy(), before_v[r, 0].double().numpy()
            )
            np.testing.assert_allclose(y[r].detach().numpy(), ref, atol=1e-5)
            np.testing.assert_allclose(bn.moving_mean[r, 0].numpy(), m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bn.moving_variance[r, 0].numpy(), v, rtol=1e-5, atol=1e-6)


def test_batchnorm_matches_torch_batch_norm_gradients_and_uses_moving_stats_in_inference():
    torch.manual_seed(2)
    bn = L.BatchNorm(S, 4)
    with torch.no_grad():
        bn.gamma.uniform_(0.5, 2)
        bn.beta.normal_()
    x = torch.randn(S, 10, 4)
    y = bn(x)
    ref_outs, ref_params = [], []
    for r in range(S):
        g = bn.gamma[r, 0].detach().clone().requires_grad_()
        b = bn.beta[r, 0].detach().clone().requires_grad_()
        ref_outs.append(F.batch_norm(x[r], None, None, g, b, training=True, eps=1e-3))
        ref_params.append((g, b))
        torch.testing.assert_close(y[r], ref_outs[r], atol=1e-5, rtol=1e-5)
    (gg, gb), ref = per_replica_grads(y, ref_outs, [bn.gamma, bn.beta], ref_params)
    for r, (rg, rb) in enumerate(ref):
        torch.testing.assert_close(gg[r, 0], rg, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gb[r, 0], rb, atol=1e-5, rtol=1e-5)
    bn.eval()
    moving_before = bn.moving_mean.clone()
    y_eval = bn(x)
    assert torch.equal(bn.moving_mean, moving_before)
    expected = (x - bn.moving_mean) / torch.sqrt(bn.moving_variance + 1e-3) * bn.gamma + bn.beta
    torch.testing.assert_close(y_eval, expected)


def test_batchnorm_without_center_and_scale_has_no_parameters():
    bn = L.BatchNorm(S, 4, center=False, scale=False)
    assert list(bn.parameters()) == []
    x = torch.randn(S, 12, 4)
    y = bn(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(S, 4), atol=1e-5, rtol=0)


def test_dropout_is_inverted_per_replica_and_identity_in_inference():
    layer = L.Dropout(0.4)
    layer.generators = gens()
    x = torch.randn(S, 200, 50)
    y = layer(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.6)
    assert 1 - kept.float().mean().item() == pytest.approx(0.4, abs=0.01)
    # replica r's mask is what a lone replica with the same generator draws
    lone = L.Dropout(0.4)
    lone.generators = gens([1])
    torch.testing.assert_close(lone(x[1:2]), y[1:2])
    layer.eval()
    assert torch.equal(layer(x), x)


def test_gaussian_noise_adds_replica_noise_in_training_only():
    layer = L.GaussianNoise(0.1)
    layer.generators = gens()
    x = torch.randn(S, 300, 40)
    noise = layer(x) - x
    assert noise.std().item() == pytest.approx(0.1, rel=0.03)
    assert abs(noise.mean().item()) < 0.005
    expected = torch.empty(300, 40).normal_(generator=seed_generator(2, STREAM_NOISE)) * 0.1
    torch.testing.assert_close(noise[2], expected, atol=1e-6, rtol=1e-5)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_activation_layer_matches_torch():
    x = torch.randn(S, 5, 4)
    torch.testing.assert_close(L.Activation("relu")(x), torch.relu(x))
    torch.testing.assert_close(L.Activation("tanh")(x), torch.tanh(x))


def test_net_initial_weights_depend_only_on_the_seed():
    layers = [{"dense": {"units": 6, "activation": "relu", "kernel_initializer": "he_uniform", "use_bias": True}},
              {"batch_norm": {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}},
              {"dense": {"units": 1, "activation": "sigmoid", "kernel_initializer": "glorot_uniform", "use_bias": True}}]
    chunk = ReplicaNet(layers, 2, [4, 7, 9])
    alone = ReplicaNet(layers, 2, [7])
    for p_chunk, p_alone in zip(chunk.parameters(), alone.parameters()):
        assert torch.equal(p_chunk[1], p_alone[0])


@pytest.mark.parametrize("max_norm", [0.5, 3.0])
def test_max_norm_rescales_each_units_incoming_weights_as_keras(max_norm):
    layer = L.Dense(S, 6, 4, max_norm=max_norm)
    with torch.no_grad():
        layer.kernel.normal_(0, 2.0)
    before = layer.kernel.detach().double().numpy().copy()
    layer.constrain_()
    for r in range(S):
        w = before[r]  # Keras kernel [in, out]; the norm runs over axis 0 (each unit's inputs)
        n = np.sqrt((w**2).sum(axis=0, keepdims=True))
        expected = w * np.clip(n, 0, max_norm) / (1e-7 + n)
        np.testing.assert_allclose(layer.kernel[r].detach().numpy(), expected, rtol=1e-5)
    norms = torch.linalg.vector_norm(layer.kernel, dim=1)
    assert torch.all(norms <= max_norm + 1e-5)


def test_unit_norm_makes_each_units_weights_unit_length():
    layer = L.Dense(S, 6, 4, unit_norm=True)
    with torch.no_grad():
        layer.kernel.normal_(0, 2.0)
    layer.constrain_()
    torch.testing.assert_close(torch.linalg.vector_norm(layer.kernel, dim=1), torch.ones(S, 4))


def test_weight_noise_perturbs_the_kernel_in_training_only():
    layer = L.Dense(S, 5, 7, weight_noise=0.1)
    layer.reset_parameters(gens(stream=0))
    layer.generators = gens()
    x = torch.randn(S, 9, 5)
    y = layer(x)
    noise = torch.empty(5, 7).normal_(generator=seed_generator(0, STREAM_NOISE)) * 0.1
    torch.testing.assert_close(y[0], x[0] @ (layer.kernel[0] + noise) + layer.bias[0], atol=1e-5, rtol=1e-5)
    assert not torch.equal(layer(x), layer(x))  # fresh noise at every training pass
    (y.sum()).backward()  # the gradient flows to the clean kernel
    assert layer.kernel.grad is not None
    layer.eval()
    torch.testing.assert_close(layer(x), torch.baddbmm(layer.bias, x, layer.kernel))
