"""The training engine: Keras optimizers, replica independence, determinism, inference mode."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab.data import make_dataset
from reglab.model import ReplicaNet
from reglab.module import shuffle_orders
from reglab.optim import KerasAdam, make_optimizer
from reglab.train import train

DENSE = {"activation": "linear", "kernel_initializer": "glorot_uniform", "use_bias": True}
BN = {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}
HEAD = {"dense": {**DENSE, "units": 1, "activation": "sigmoid"}}
DATA = {"generator": "make_circles", "params": {"n_samples": 120, "noise": 0.1, "random_state": 1}, "n_train": 50}


def spec(layers, optimizer=None, epochs=5, batch_size=16):
    optimizer = optimizer or {"name": "adam", "lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    return {"study": "s", "variant": "v", "dataset": {"name": "d", **DATA},
            "training": {"optimizer": optimizer, "epochs": epochs, "batch_size": batch_size}, "layers": layers}


MLP_BN = [{"dense": {**DENSE, "units": 8, "activation": "relu", "kernel_initializer": "he_uniform"}}, {"batch_norm": BN}, HEAD]
MLP_DROPOUT = [{"gaussian_noise": {"stddev": 0.05}}, {"dense": {**DENSE, "units": 8, "activation": "relu"}},
               {"dropout": {"rate": 0.3}}, HEAD]


@pytest.fixture(scope="module")
def data():
    return make_dataset(DATA)


def keras_adam_reference(w, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
    """Keras 3's Adam update rule in float64 numpy."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - alpha * m / (np.sqrt(v) + eps)
    return w


def test_keras_adam_matches_the_keras_update_rule():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) * 10.0**-k for k in range(6)]  # tiny grads make eps matter
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = KerasAdam([p])
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), keras_adam_reference(w0, grads), rtol=1e-12, atol=1e-12)
    # and it is measurably not torch's Adam (eps placement and default)
    q = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.Adam([q], lr=1e-3)
    for g in grads:
        q.grad = torch.tensor(g)
        topt.step()
    assert not np.allclose(q.detach().numpy(), p.detach().numpy(), rtol=0, atol=1e-9)


def test_sgd_momentum_matches_keras_formula():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(4)]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = make_optimizer([p], {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False})
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    w, vel = w0.copy(), np.zeros(5)
    for g in grads:
        vel = 0.9 * vel - 0.01 * g
        w = w + vel
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12)


@pytest.mark.parametrize("layers", [MLP_BN, MLP_DROPOUT], ids=["batchnorm", "noise+dropout"])
def test_a_seed_trains_the_same_alone_or_in_a_chunk(data, layers):
    s = spec(layers)
    chunk = train(s, data, [3, 5, 8])
    alone = train(s, data, [5])
    for metric, values in chunk.history.items():
        np.testing.assert_allclose(values[:, 1], alone.history[metric][:, 0], rtol=1e-5, atol=1e-6, err_msg=metric)
    np.testing.assert_allclose(chunk.prob[1], alone.prob[0], atol=1e-5)


def reference_training(layer_specs, s, data, seed):
    """One seed trained independently with plain torch ops and the same init and batch order."""
    net = ReplicaNet(layer_specs, 2, [seed])  # for its initial weights only
    w1 = net.body[0].kernel[0].detach().clone().requires_grad_()
    b1 = net.body[0].bias[0, 0].detach().clone().requires_grad_()
    gamma = torch.ones(8, requires_grad=True)
    beta = torch.zeros(8, requires_grad=True)
    w2 = net.head.kernel[0].detach().clone().requires_grad_()
    b2 = net.head.bias[0, 0].detach().clone().requires_grad_()
    params = [w1, b1, gamma, beta, w2, b2]
    rm, rv = torch.zeros(8), torch.ones(8)
    opt = KerasAdam(params, lr=0.01)
    x, y = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    xt, yt = torch.as_tensor(data["x_test"]), torch.as_tensor(data["y_test"])
    orders = shuffle_orders([seed], s["training"]["epochs"], len(x))[:, 0]
    test_acc = []
    for order in orders:
        for idx in order.split(s["training"]["batch_size"]):
            h = torch.relu(x[idx] @ w1 + b1)
            mean, var = h.mean(0), h.var(0, unbiased=False)
            with torch.no_grad():
                rm = rm * 0.99 + mean * 0.01
                rv = rv * 0.99 + var * 0.01
            h = (h - mean) / torch.sqrt(var + 1e-3) * gamma + beta
            loss = F.binary_cross_entropy_with_logits((h @ w2 + b2).squeeze(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            h = torch.relu(xt @ w1 + b1)
            h = (h - rm) / torch.sqrt(rv + 1e-3) * gamma + beta
            test_acc.append((((h @ w2 + b2).squeeze(-1) > 0) == (yt > 0.5)).float().mean().item())
    return np.array(test_acc), w1.detach()


def test_replica_in_batch_equals_its_independent_training(data):
    s = spec(MLP_BN, epochs=8)
    batched = train(s, data, [0, 1, 2])
    ref_acc, _ = reference_training(MLP_BN, s, data, 1)
    np.testing.assert_allclose(batched.history["test_acc"][:, 1], ref_acc, atol=1e-6)


def test_training_is_deterministic(data):
    s = spec(MLP_DROPOUT)
    a, b = train(s, data, [0, 1]), train(s, data, [0, 1])
    for metric in a.history:
        assert np.array_equal(a.history[metric], b.history[metric])
    assert np.array_equal(a.prob, b.prob)
    assert all(np.array_equal(a.final[k], b.final[k]) for k in a.final)


def test_history_and_final_metrics_are_consistent(data):
    wide = [{"dense": {**DENSE, "units": 32, "activation": "relu", "kernel_initializer": "he_uniform"}}, HEAD]
    s = spec(wide, epochs=150)
    res = train(s, data, [0, 1])
    assert res.history["test_acc"].shape == (150, 2)
    assert np.all((res.history["train_acc"] >= 0) & (res.history["train_acc"] <= 1))
    # the last epoch's test metrics and the final evaluation are both inference mode on the test set
    np.testing.assert_allclose(res.history["test_acc"][-1], res.final["test_acc"])
    # it learns the circles
    assert np.all(res.final["train_loss"] < 0.8 * res.history["train_loss"][0])
    assert np.all(res.final["train_acc"] > 0.75) and np.all(res.final["test_acc"] > 0.55)
    assert np.all(np.isfinite(res.epoch_time_s)) and res.fit_time_s > 0
    assert res.prob.shape == (2, len(res.grid_y), len(res.grid_x))


def test_noise_and_dropout_are_off_in_inference(data):
    s = spec(MLP_DROPOUT, epochs=3)
    res = train(s, data, [0])
    # evaluating the final test set twice gives the same numbers (no random draws in inference)
    net = ReplicaNet(MLP_DROPOUT, 2, [0])
    x = torch.as_tensor(data["x_test"])
    assert torch.equal(net.predict_proba(x), net.predict_proba(x))
    clean = [layer for layer in MLP_DROPOUT if "dense" in layer]
    net_clean = ReplicaNet(clean, 2, [0])
    torch.testing.assert_close(net.predict_proba(x), net_clean.predict_proba(x))
    assert res.final["test_acc"].shape == (1,)


def test_a_diverging_replica_is_marked_and_does_not_disturb_the_others(data):
    from reglab.module import ReplicaClassifier
    from reglab.train import make_trainer

    s = spec(MLP_BN, epochs=4)
    module = ReplicaClassifier(s, [0, 1, 2], data)
    with torch.no_grad():
        module.net.head.kernel[1].fill_(float("nan"))  # replica 1 is broken from the start
    make_trainer("cpu").fit(module)
    assert module.diverged_epoch.tolist() == [0, 1, 0]
    assert torch.isnan(module.history["test_acc"][:, 1]).all()
    healthy = train(s, data, [0, 2])
    np.testing.assert_allclose(module.history["test_acc"][:, [0, 2]].numpy(), healthy.history["test_acc"], atol=1e-6)
    assert healthy.diverged_epoch.tolist() == [0, 0]


def test_a_learning_rate_of_100_diverges_without_crashing(data):
    s = spec(MLP_BN, optimizer={"name": "sgd", "lr": 100.0, "momentum": 0.9, "nesterov": False}, epochs=6)
    res = train(s, data, [0, 1])
    assert (res.diverged_epoch > 0).all()
    assert np.isnan(res.final["test_acc"]).all()
    first = res.diverged_epoch.min() - 1
    assert np.isfinite(res.history["train_loss"][:first]).all()


CNN = [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu",
                   "kernel_initializer": "glorot_uniform", "use_bias": True}},
       {"batch_norm": BN}, {"spatial_dropout2d": {"rate": 0.3}}, {"max_pooling2d": {"pool_size": 2}},
       {"flatten": {}}, {"dense": {**DENSE, "units": 10, "activation": "softmax"}}]
RNN = [{"dropout": {"rate": 0.2}}, {"lstm": {"units": 8, "return_sequences": False, "dropout": 0.2, "recurrent_dropout": 0.2}},
       {"batch_norm": BN}, HEAD]


@pytest.mark.parametrize(
    "layers, dataset",
    [(CNN, {"generator": "load_digits", "params": {"n_samples": 200, "random_state": 1}, "n_train": 100}),
     (RNN, {"generator": "make_sequences", "params": {"n_samples": 120, "length": 10, "noise": 0.5, "n_classes": 2,
                                                      "random_state": 1}, "n_train": 60})],
    ids=["cnn-softmax", "lstm-sigmoid"],
)
def test_cnn_and_lstm_seeds_train_the_same_alone_or_in_a_chunk(layers, dataset):
    data = make_dataset(dataset)
    s = spec(layers, epochs=3)
    chunk = train(s, data, [0, 4])
    alone = train(s, data, [4])
    for metric, values in chunk.history.items():
        np.testing.assert_allclose(values[:, 1], alone.history[metric][:, 0], rtol=1e-4, atol=1e-5, err_msg=metric)
    assert chunk.prob is None  # no decision boundary to draw for images and sequences
    assert np.all((chunk.final["test_acc"] >= 0) & (chunk.final["test_acc"] <= 1))


def test_multiclass_loss_and_accuracy_follow_softmax_cross_entropy():
    net = ReplicaNet([{"dense": {**DENSE, "units": 3, "activation": "softmax"}}], 4, [0, 1])
    x = torch.randn(2, 5, 4)
    y = torch.tensor([[0, 1, 2, 1, 0], [2, 2, 1, 0, 0]], dtype=torch.float32)
    logits = net(x)
    assert logits.shape == (2, 5, 3)
    for r in range(2):
        torch.testing.assert_close(net.losses(logits, y)[r], F.cross_entropy(logits[r], y[r].long()))
        assert net.correct(logits, y)[r] == (logits[r].argmax(-1) == y[r].long()).sum()


def test_label_flips_change_labels_at_the_rate_asked_and_afresh_each_epoch(data):
    from reglab.module import ReplicaClassifier

    s = spec(MLP_BN)
    s["training"]["label_flip"] = 0.3
    module = ReplicaClassifier(s, [0, 1], data)
    epochs = torch.stack([module.epoch_targets() for _ in range(50)])  # [epoch, replica, sample]
    first, second = epochs[0], epochs[1]
    clean = module.y_train.expand(2, -1)
    assert set(epochs.unique().tolist()) <= {0.0, 1.0}
    flipped = (epochs != clean).float()
    n = flipped.numel()  # within 4.5 binomial standard errors of the rate asked
    assert flipped.mean().item() == pytest.approx(0.3, abs=4.5 * (0.3 * 0.7 / n) ** 0.5)
    assert not torch.equal(first, second)
