"""The fused engine (reglab.fused): which networks it trains, its random numbers and gate
nonlinearities, sweeps as replicas, agreement with autograd, and the engine recorded with every run.
Its training against an independent plain-torch reference is in tests/test_reference_training.py."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from reglab import fusedkernels as K
from reglab import replicas
from reglab.config import ConfigError, load_config, validate_config
from reglab.data import make_dataset
from reglab.fused import Layout, fused_layout, noise_states
from reglab.train import train, train_points
from test_sweeps import at

DENSE = {"activation": "linear", "kernel_initializer": "glorot_uniform", "use_bias": True, "max_norm": None,
         "unit_norm": False, "weight_noise": 0.0}
HEAD = {"dense": {**DENSE, "units": 1, "activation": "sigmoid"}}
CIRCLES = {"generator": "make_circles", "params": {"n_samples": 90, "noise": 0.1, "random_state": 1}, "n_train": 40}
ADAM = {"name": "adam", "lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False}
# every op the fused engine has: noise and dropout on the inputs, noise, ReLU and dropout after the hidden Dense
MLP = [{"gaussian_noise": {"stddev": 0.05}}, {"dropout": {"rate": 0.1}},
       {"dense": {**DENSE, "units": 8, "max_norm": 2.0}}, {"gaussian_noise": {"stddev": 0.1}},
       {"activation": {"name": "relu"}}, {"dropout": {"rate": 0.3}}, HEAD]


SEQUENCES = {"generator": "make_sequences",
             "params": {"n_samples": 70, "length": 6, "noise": 0.5, "n_classes": 2, "random_state": 1}, "n_train": 40}
LSTM = {"units": 5, "return_sequences": False, "dropout": 0.0, "recurrent_dropout": 0.0}
# every op of the LSTM family: noise and dropout on the inputs (per step), the LSTM's own input
# dropout, noise, ReLU and dropout after it
RNN = [{"gaussian_noise": {"stddev": 0.05}}, {"dropout": {"rate": 0.1}}, {"lstm": {**LSTM, "dropout": 0.2}},
       {"gaussian_noise": {"stddev": 0.1}}, {"activation": {"name": "relu"}}, {"dropout": {"rate": 0.3}}, HEAD]


def spec(layers=MLP, optimizer=ADAM, epochs=3, dataset=CIRCLES, **training):
    return {"study": "s", "variant": "v", "dataset": {"name": "d", **dataset},
            "training": {"optimizer": dict(optimizer), "epochs": epochs, "batch_size": 16, "label_flip": 0.0,
                         "gradient_noise": {"eta": 0.0, "gamma": 0.55}, **training},
            "layers": copy.deepcopy(layers)}


def rnn(layers=RNN, optimizer=ADAM, epochs=3, **training):
    return spec(layers, optimizer, epochs, SEQUENCES, **training)


@pytest.fixture(scope="module")
def data():
    return make_dataset(CIRCLES)


@pytest.fixture(scope="module")
def sequences():
    return make_dataset(SEQUENCES)


# ---- which networks ----


def test_the_layout_places_input_ops_hidden_layer_hidden_ops_and_head():
    assert fused_layout(spec(), (2,)) == Layout(input_ops=(0, 1), hidden=2, hidden_ops=(3, 4, 5), head=6)
    assert fused_layout(rnn(), (6, 1)) == Layout(input_ops=(0, 1), hidden=2, hidden_ops=(3, 4, 5), head=6,
                                                 kind="lstm")


def lstm_layers(*middle, **lstm):
    return [{"lstm": {**LSTM, **lstm}}, *middle, HEAD]


@pytest.mark.parametrize(("layers", "shape", "reason"), [
    (MLP, (1, 8, 8), "not vectors or sequences"),
    (MLP, (8, 2), "not one LSTM layer and a Dense head"),
    (RNN, (3,), "not one hidden Dense layer"),
    (lstm_layers(recurrent_dropout=0.2), (6, 1), "recurrent_dropout"),
    (lstm_layers(recurrent_dropout=[0.0, 0.2]), (6, 1), "recurrent_dropout"),
    (lstm_layers(return_sequences=True), (6, 1), "return_sequences"),
    (lstm_layers({"batch_norm": {}}), (6, 1), "a batch_norm layer"),
    (lstm_layers({"activation": {"name": "tanh"}}), (6, 1), "a tanh activation"),
    ([{"lstm": {**LSTM, "return_sequences": True}}, *lstm_layers()], (6, 1), "not one LSTM"),
    ([{"lstm": LSTM}, {"dense": {**DENSE, "units": 3, "activation": "softmax"}}], (6, 1), "a head other than"),
    ([{"dense": {**DENSE, "units": 4}}, {"dense": {**DENSE, "units": 4}}, HEAD], (2,), "not one hidden Dense"),
    ([{"dense": {**DENSE, "units": 4, "activation": "tanh"}}, HEAD], (2,), "hidden tanh activation"),
    ([{"dense": {**DENSE, "units": 4, "weight_noise": 0.1}}, HEAD], (2,), "weight noise"),
    ([{"dense": {**DENSE, "units": 4}}, {"batch_norm": {}}, HEAD], (2,), "a batch_norm layer"),
    ([{"dense": {**DENSE, "units": 4}}, {"dense": {**DENSE, "units": 3, "activation": "softmax"}}], (2,),
     "a head other than"),
])
def test_networks_outside_the_family_are_refused_with_the_reason(layers, shape, reason):
    assert reason in fused_layout(spec(layers), shape)


def test_a_network_outside_the_family_trains_with_autograd_and_says_so(data, sequences):
    layers = [{"dense": {**DENSE, "units": 4, "activation": "tanh"}}, HEAD]
    assert train(spec(layers), data, [0]).engine == "torch"
    assert train(spec(), data, [0]).engine == "fused"
    assert train(spec(), data, [0], engine="torch").engine == "torch"
    assert train(rnn(), sequences, [0]).engine == "fused"
    assert train(rnn(lstm_layers(recurrent_dropout=0.2)), sequences, [0]).engine == "torch"


# ---- the LSTM loop's gate nonlinearities ----


@pytest.mark.parametrize(("name", "reference", "tolerance"), [
    ("tanh", np.tanh, 3e-7),
    ("sigmoid", lambda x: 0.5 * (1 + np.tanh(x / 2)), 1.5e-7),  # 1 / (1 + exp(-x)), without overflow
])
def test_the_gate_nonlinearities_are_within_their_stated_error(name, reference, tolerance):
    x = np.concatenate([np.linspace(-30, 30, 400_001), np.geomspace(1e-12, 1e-3, 1000),
                        -np.geomspace(1e-12, 1e-3, 1000), [0.0, 7.9, -7.9, 9.0, 88.0, -88.0, 1e30, -1e30]])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    getattr(K, f"fill_{name}")(x, out)
    want = reference(x.astype(np.float64))
    assert np.abs(out - want).max() <= tolerance
    # near zero tanh(x) ~ x and sigmoid(x) ~ 1/2 + x/4: the relative error of the small values stays small
    small = (np.abs(x) < 1e-3) & (x != 0)
    if name == "tanh":
        assert np.all(np.abs(out[small] - want[small]) <= 1e-6 * np.abs(want[small]))
    # bounded, and monotone but for wiggles within the error bound
    assert np.all((out >= -1) & (out <= 1)) and np.all(np.diff(out[:400_001]) >= -2 * tolerance)


# ---- random numbers ----


def test_uniforms_are_uniform_on_zero_one_in_float32_steps():
    out = np.empty(200_000, np.float32)
    K.fill_uniform(noise_states([5]), 0, out)
    assert out.min() >= 0 and out.max() < 1
    assert np.all(out * 2**24 == np.floor(out * 2**24))  # multiples of 2^-24: exact in float32
    assert stats.kstest(out, "uniform").pvalue > 1e-3


def test_normals_are_standard_normal_in_the_body_and_in_the_tails():
    out = np.empty(2_000_000, np.float32)
    K.fill_normal(noise_states([9]), 0, out)
    assert stats.kstest(out, "norm").pvalue > 1e-3
    assert abs(out.mean()) < 5 / np.sqrt(out.size) and abs(out.var() - 1) < 0.005
    for cut in (2.0, 3.0, 3.5, 4.0):  # the tails' mass is right, on both sides
        expected = stats.norm.sf(cut) * out.size
        for side in (1, -1):
            assert abs(np.sum(side * out > cut) - expected) < 5 * np.sqrt(expected), side * cut
    assert abs(np.corrcoef(out[0::2], out[1::2])[0, 1]) < 0.005  # a pair's two normals: uncorrelated


def test_the_log_of_the_normals_is_within_its_stated_error():
    """log32, over (0, 1] as the radius takes it: from 2^-33 (the smallest u1) up, and near 1."""
    x = np.concatenate([np.geomspace(2.0**-33, 1, 2_000_001), 1 - np.geomspace(2.0**-24, 0.5, 100_001)])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    K.fill_log(x, out)
    want = np.log(x.astype(np.float64))
    rel = np.abs(out - want)[want != 0] / np.abs(want[want != 0])
    assert rel.max() <= 1.3e-7 and out[x == 1].tolist() == [0.0]


def splitmix64(state: int, n: int) -> np.ndarray:
    """The next ``n`` 64-bit draws of a SplitMix64 state (Steele, Lea & Flood 2014), in numpy."""
    s = np.uint64(state) + np.uint64(0x9E3779B97F4A7C15) * np.arange(1, n + 1, dtype=np.uint64)
    z = (s ^ (s >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@pytest.mark.parametrize("n", [200_001, 2])
def test_normals_are_box_muller_pairs_of_the_draws_within_float32_rounding(n):
    """Each draw gives two normals: radius sqrt(-2 ln u1) from its high 32 bits (u1 = (k + 1/2) 2^-32,
    rounded to float32), angle 2 pi k' 2^-32 from its low ones; cos, then sin. An odd count uses its
    last draw's first normal; the state moves on by one step per draw."""
    states = noise_states([7])
    start = int(states[0])
    out = np.empty(n, np.float32)
    K.fill_normal(states, 0, out)
    draws = splitmix64(start, (n + 1) // 2)
    u1 = (np.float32((draws >> np.uint64(32)).astype(np.float64) * 2.0**-32 + 2.0**-33)).astype(np.float64)
    angle = 2 * np.pi * (draws & np.uint64(0xFFFFFFFF)).astype(np.float64) * 2.0**-32
    radius = np.sqrt(-2 * np.log(u1))
    want = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).reshape(-1)[:n]
    assert np.abs(out - want).max() <= 2e-6  # within ~4 float32 steps at the largest radii (6.7)
    assert int(states[0]) == (start + (n + 1) // 2 * 0x9E3779B97F4A7C15) % 2**64


def test_replica_streams_are_independent_and_their_states_advance():
    states = noise_states([0, 1])
    a, b = np.empty(100_000, np.float32), np.empty(100_000, np.float32)
    K.fill_normal(states, 0, a)
    K.fill_normal(states, 1, b)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02
    again = np.empty(100_000, np.float32)
    K.fill_normal(states, 0, again)  # the state moved on: fresh numbers
    assert abs(np.corrcoef(a, again)[0, 1]) < 0.02
    replay = noise_states([0])
    K.fill_normal(replay, 0, again)  # the same seed: the same numbers
    np.testing.assert_array_equal(a, again)


def test_a_replica_stream_depends_on_its_draws_seed_alone():
    ordinary = noise_states([4])
    decomposed = noise_states([{"seed": 0, "init": 1, "order": 2, "draws": 4, "split": None}])
    np.testing.assert_array_equal(ordinary, decomposed)


# ---- sweeps: replica (point p, seed s) is point p alone with seed s, bit for bit ----

SWEEPS = {
    "input noise stddev": (spec(), ("layers", 0, "gaussian_noise", "stddev"), [0.0, 0.1, 0.5]),
    "input dropout rate": (spec(), ("layers", 1, "dropout", "rate"), [0.0, 0.2]),
    "hidden noise stddev": (spec(), ("layers", 3, "gaussian_noise", "stddev"), [0.0, 0.2]),
    "dropout rate": (spec(), ("layers", 5, "dropout", "rate"), [0.0, 0.2, 0.6]),
    "max norm": (spec(), ("layers", 2, "dense", "max_norm"), [None, 0.5, 2.0]),
    "label flip": (spec(), ("training", "label_flip"), [0.0, 0.1, 0.3]),
    "gradient noise eta": (spec(), ("training", "gradient_noise", "eta"), [0.0, 0.01, 0.1]),
    "adam lr": (spec(), ("training", "optimizer", "lr"), [0.001, 0.01, 0.05]),
    "sgd lr": (spec(optimizer=SGD), ("training", "optimizer", "lr"), [0.01, 0.1]),
}


RNN_SWEEPS = {
    "lstm: input dropout rate": (rnn(), ("layers", 1, "dropout", "rate"), [0.0, 0.3]),
    "lstm: its own dropout": (rnn(), ("layers", 2, "lstm", "dropout"), [0.0, 0.2, 0.5]),
    "lstm: noise after": (rnn(), ("layers", 3, "gaussian_noise", "stddev"), [0.0, 0.3]),
    "lstm: dropout after": (rnn(), ("layers", 5, "dropout", "rate"), [0.0, 0.3]),
    "lstm: label flip": (rnn(), ("training", "label_flip"), [0.0, 0.2]),
    "lstm: gradient noise eta": (rnn(), ("training", "gradient_noise", "eta"), [0.0, 0.05]),
    "lstm: sgd lr": (rnn(optimizer=SGD), ("training", "optimizer", "lr"), [0.01, 0.1]),
}


@pytest.mark.parametrize("kind", [*SWEEPS, *RNN_SWEEPS])
def test_each_grid_point_as_a_replica_trains_bit_for_bit_as_it_would_alone(kind, data, sequences):
    base, path, values = SWEEPS[kind] if kind in SWEEPS else RNN_SWEEPS[kind]
    data = data if kind in SWEEPS else sequences
    points = [at(base, path, v) for v in values]
    seeds = [3, 5]
    assert len(replicas.plan_models(points, seeds)) == 1
    together = train_points(points, data, seeds)
    for p, point in enumerate(points):
        alone = train(point, data, [seeds[1]])
        assert together[p].engine == alone.engine == "fused"
        for metric, history in together[p].history.items():
            np.testing.assert_array_equal(history[:, 1], alone.history[metric][:, 0], err_msg=f"{kind} {metric}")
        for metric, values_ in together[p].final.items():
            np.testing.assert_array_equal(values_[1], alone.final[metric][0], err_msg=f"{kind} final {metric}")
    # the swept value matters: the points do not all train alike
    finals = [r.history["train_loss"][-1, 0] for r in together]
    assert len(set(finals)) > 1


# ---- agreement with autograd where nothing is drawn ----


@pytest.mark.parametrize("optimizer", [ADAM, SGD])
def test_without_random_draws_the_engines_agree(optimizer, data):
    layers = [{"dense": {**DENSE, "units": 32, "activation": "relu", "max_norm": 1.5}}, HEAD]
    fused = train(spec(layers, optimizer, epochs=40), data, [0, 1, 2])
    autograd = train(spec(layers, optimizer, epochs=40), data, [0, 1, 2], engine="torch")
    for metric in fused.history:
        np.testing.assert_allclose(fused.history[metric], autograd.history[metric], atol=1e-4, err_msg=metric)
    np.testing.assert_allclose(fused.prob, autograd.prob, atol=1e-4)


@pytest.mark.parametrize("features", [1, 3, 4, 5])
def test_without_random_draws_the_engines_agree_for_any_number_of_input_features(features, data):
    """The loop's hidden Dense takes its inputs two features a pass, and an odd one alone."""
    columns = lambda x: np.stack([x[:, i % 2] * (1 + i // 2) - 0.1 * i for i in range(features)], axis=1)
    wide = {k: columns(v).astype(np.float32) if k.startswith("x") else v for k, v in data.items()}
    layers = [{"dense": {**DENSE, "units": 9, "activation": "relu"}}, HEAD]
    fused = train(spec(layers, epochs=10), wide, [0, 1])
    autograd = train(spec(layers, epochs=10), wide, [0, 1], engine="torch")
    assert (fused.engine, autograd.engine) == ("fused", "torch")
    for metric in fused.history:
        np.testing.assert_allclose(fused.history[metric], autograd.history[metric], atol=1e-5, err_msg=metric)


@pytest.mark.parametrize("optimizer", [ADAM, SGD])
def test_without_random_draws_the_lstm_engines_agree(optimizer, sequences):
    """Within what the loop's approximate tanh and sigmoid (3e-7) allow, over 30 epochs."""
    layers = [{"lstm": {**LSTM, "units": 8}}, {"activation": {"name": "relu"}}, HEAD]
    fused = train(rnn(layers, optimizer, epochs=30), sequences, [0, 1, 2])
    autograd = train(rnn(layers, optimizer, epochs=30), sequences, [0, 1, 2], engine="torch")
    assert (fused.engine, autograd.engine) == ("fused", "torch")
    for metric in fused.history:
        np.testing.assert_allclose(fused.history[metric], autograd.history[metric], atol=1e-4, err_msg=metric)
    np.testing.assert_allclose(fused.final["test_loss"], autograd.final["test_loss"], atol=1e-4)


def test_the_lstm_loop_uses_one_blas_thread_whatever_the_machine_has(sequences, monkeypatch):
    """The loop's matrix products run on one thread (its own order of work) and leave the process's
    BLAS thread counts as they were."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    seen = []
    original = K.train_lstm_block

    def spy(*args):
        seen.append({i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return original(*args)

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    monkeypatch.setattr(K, "train_lstm_block", spy)
    train(rnn(epochs=2), sequences, [0])
    assert seen and all(set(threads.values()) == {1} for threads in seen)
    assert {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == before


def test_a_diverging_replica_shows_as_nan_from_its_epoch_on_and_leaves_the_others(data):
    points = [spec(optimizer={**ADAM, "lr": lr}, epochs=6) for lr in (0.01, 1e30)]
    steady, diverged = train_points(points, data, [0])
    assert diverged.engine == "fused" and diverged.diverged_epoch[0] > 0
    assert np.isnan(diverged.history["train_loss"][diverged.diverged_epoch[0] - 1:, 0]).all()
    assert steady.diverged_epoch[0] == 0 and np.isfinite(steady.history["train_loss"]).all()


# ---- the engine: a config key, recorded with the run ----


def test_the_engine_is_a_validated_config_key():
    raw = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    assert validate_config(copy.deepcopy(raw))["engine"] == "fused"
    del raw["engine"]
    assert validate_config(copy.deepcopy(raw))["engine"] == "fused"  # the schema's default
    raw["engine"] = "jax"
    with pytest.raises(ConfigError, match="engine"):
        validate_config(raw)


def test_the_run_records_its_engine(tmp_path, data):
    from reglab.results import write_run

    result = train(spec(), data, [0, 1])
    write_run(tmp_path / "run", spec(), result, 0, "2026-12-01T00:00:00+00:00")
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["engine"] == "fused"
