"""Sweeps as replicas: the points of a grid train as replicas of one model, each replica (point p,
seed s) exactly as point p trained alone with seed s; shape-changing points train apart."""

import copy

import numpy as np
import pytest
import torch

from reglab import replicas
from reglab.data import make_dataset
from reglab.train import train, train_points

DENSE = {"activation": "linear", "kernel_initializer": "glorot_uniform", "use_bias": True, "max_norm": None,
         "unit_norm": False, "weight_noise": 0.0}
BN = {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}
HEAD = {"dense": {**DENSE, "units": 1, "activation": "sigmoid"}}
CIRCLES = {"generator": "make_circles", "params": {"n_samples": 90, "noise": 0.1, "random_state": 1}, "n_train": 40}
DIGITS = {"generator": "load_digits", "params": {"n_samples": 90, "random_state": 0}, "n_train": 50}
WAVES = {"generator": "make_sequences", "params": {"n_samples": 60, "length": 6, "noise": 0.5, "n_classes": 2,
                                                   "random_state": 0}, "n_train": 40}
ADAM = {"name": "adam", "lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False}


def spec(layers, dataset=CIRCLES, optimizer=ADAM, epochs=3, **training):
    return {"study": "s", "variant": "v", "dataset": {"name": "d", **dataset},
            "training": {"optimizer": dict(optimizer), "epochs": epochs, "batch_size": 16, "label_flip": 0.0,
                         "gradient_noise": {"eta": 0.0, "gamma": 0.55}, **training},
            "layers": layers}


MLP = [{"gaussian_noise": {"stddev": 0.05}}, {"dense": {**DENSE, "units": 8, "activation": "relu"}},
       {"batch_norm": BN}, {"dropout": {"rate": 0.3}}, HEAD]
CNN = [{"conv2d": {"filters": 3, "kernel_size": 3, "padding": "valid", "activation": "relu",
                   "kernel_initializer": "glorot_uniform", "use_bias": True}},
       {"spatial_dropout2d": {"rate": 0.2}}, {"flatten": {}},
       {"dense": {**DENSE, "units": 10, "activation": "softmax"}}]
RNN = [{"lstm": {"units": 4, "return_sequences": False, "dropout": 0.2, "recurrent_dropout": 0.3}}, HEAD]


def at(tree, path, value):
    """A copy of ``tree`` with the value at ``path`` replaced."""
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


# (base spec, path of the swept value, values): every parameter kind that may differ between replicas
SWEEPS = {
    "dropout rate": (spec(MLP), ("layers", 3, "dropout", "rate"), [0.0, 0.2, 0.6]),
    "gaussian noise stddev": (spec(MLP), ("layers", 0, "gaussian_noise", "stddev"), [0.0, 0.1, 0.5]),
    "weight noise": (spec(MLP), ("layers", 1, "dense", "weight_noise"), [0.0, 0.05]),
    "max norm": (spec(MLP), ("layers", 1, "dense", "max_norm"), [None, 0.5, 2.0]),
    "bn momentum": (spec(MLP), ("layers", 2, "batch_norm", "momentum"), [0.0, 0.9, 0.99]),
    "label flip": (spec(MLP), ("training", "label_flip"), [0.0, 0.1, 0.3]),
    "gradient noise eta": (spec(MLP), ("training", "gradient_noise", "eta"), [0.0, 0.01, 0.1]),
    "adam lr": (spec(MLP), ("training", "optimizer", "lr"), [0.001, 0.01, 0.05]),
    "sgd lr": (spec(MLP, optimizer=SGD), ("training", "optimizer", "lr"), [0.01, 0.1]),
    "spatial dropout rate": (spec(CNN, DIGITS, epochs=2), ("layers", 1, "spatial_dropout2d", "rate"), [0.0, 0.5]),
    "lstm dropout": (spec(RNN, WAVES, epochs=2), ("layers", 0, "lstm", "dropout"), [0.0, 0.4]),
    "lstm recurrent dropout": (spec(RNN, WAVES, epochs=2), ("layers", 0, "lstm", "recurrent_dropout"), [0.1, 0.5]),
}


@pytest.mark.parametrize("kind", list(SWEEPS))
def test_each_grid_point_as_a_replica_trains_as_it_would_alone(kind):
    base, path, values = SWEEPS[kind]
    points = [at(base, path, v) for v in values]
    data = make_dataset(base["dataset"])
    seeds = [3, 5]
    assert len(replicas.plan_models(points, seeds)) == 1  # one model for the whole sweep
    together = train_points(points, data, seeds)
    for p, point in enumerate(points):
        alone = train(point, data, [seeds[1]])
        for metric, history in together[p].history.items():
            np.testing.assert_allclose(history[:, 1], alone.history[metric][:, 0], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{kind}={values[p]}: {metric}")
        for metric, final in together[p].final.items():
            np.testing.assert_allclose(final[1], alone.final[metric][0], rtol=1e-5, atol=1e-6)
        assert together[p].seeds == seeds


def test_the_swept_values_do_change_training():
    """The equality above is not trivial: the points of a sweep really train differently."""
    base, path, values = SWEEPS["dropout rate"]
    results = train_points([at(base, path, v) for v in values], make_dataset(CIRCLES), [0])
    losses = [r.history["train_loss"][-1, 0] for r in results]
    assert len(set(np.round(losses, 6))) == len(values)


def test_shape_changing_points_train_as_separate_models():
    points = [at(spec(MLP), ("layers", 1, "dense", "units"), u) for u in (4, 8)]
    points.append(at(spec(MLP), ("layers", 3, "dropout", "rate"), 0.5))  # 8 units: joins the second
    plan = replicas.plan_models(points, [0, 1, 2])
    assert [m.points for m in plan] == [[0], [1, 2]]
    results = train_points(points, make_dataset(CIRCLES), [0, 1, 2])
    alone = train(points[0], make_dataset(CIRCLES), [0, 1, 2])
    np.testing.assert_allclose(results[0].history["test_acc"], alone.history["test_acc"])


def test_lstm_recurrent_dropout_zero_and_positive_are_different_models():
    points = [at(spec(RNN, WAVES), ("layers", 0, "lstm", "recurrent_dropout"), v) for v in (0.0, 0.2, 0.4)]
    assert [m.points for m in replicas.plan_models(points, [0])] == [[0], [1, 2]]


def test_a_replica_cap_splits_a_sweep_into_models_with_the_same_results():
    base, path, values = SWEEPS["dropout rate"]
    points = [at(base, path, v) for v in values]
    plan = replicas.plan_models(points, [0, 1], max_replicas=4)
    assert [len(m.replicas) for m in plan] == [4, 2]
    data = make_dataset(CIRCLES)
    capped, whole = train_points(points, data, [0, 1], max_replicas=4), train_points(points, data, [0, 1])
    for a, b in zip(capped, whole):
        assert a.seeds == b.seeds == [0, 1]
        np.testing.assert_allclose(a.history["train_loss"], b.history["train_loss"], rtol=1e-5, atol=1e-6)
    # point 1 is split across the two models: its times add up its shares of both
    assert capped[1].fit_time_s > 0 and capped[1].epoch_time_s.shape == (base["training"]["epochs"],)


def test_batch_spec_lists_only_what_differs_and_refuses_shape_changes():
    a, b = spec(MLP), at(spec(MLP), ("layers", 3, "dropout", "rate"), 0.5)
    batched = replicas.batch_spec([a, a, b])
    assert batched["layers"][3]["dropout"]["rate"] == [0.3, 0.3, 0.5]
    assert batched["layers"][0]["gaussian_noise"]["stddev"] == 0.05  # the same everywhere: one number
    with pytest.raises(ValueError, match="cannot be replicas of one model"):
        replicas.batch_spec([a, at(a, ("layers", 1, "dense", "units"), 4)])
    with pytest.raises(ValueError, match="cannot be replicas of one model"):
        replicas.batch_spec([a, at(a, ("training", "epochs"), 4)])


def test_per_replica_rates_reach_the_layers():
    from reglab.model import ReplicaNet

    layers = replicas.batch_spec([at(spec(MLP), ("layers", 3, "dropout", "rate"), r) for r in (0.0, 0.5)])["layers"]
    net = ReplicaNet(layers, (2,), [0, 0])
    net.train()
    h = torch.ones(2, 1000, 8)
    out = net.body[3](h)
    assert torch.equal(out[0], h[0])  # rate 0: untouched (and nothing drawn)
    kept = (out[1] != 0).float().mean().item()
    assert 0.45 < kept < 0.55 and torch.allclose(out[1][out[1] != 0], torch.tensor(2.0))
