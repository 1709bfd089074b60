"""The benchmark: every figure is the best of >= 3 repeats after an untimed warm-up, per replica-epoch;
the ratios divide like by like, and the per-seed baselines train the engine's own model.

No test here measures time: a fake clock, moved by fake training runs by set amounts, stands in for
the real one, so every expected figure follows from the amounts.
"""

from pathlib import Path

import pytest
import torch

from reglab import bench
from reglab.config import load_config, validate_config, variant_spec
from reglab.data import make_dataset
from reglab.model import ReplicaNet

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "config" / "config.yaml")


class FakeClock:
    """A clock that moves only when a fake training run spends its set seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_best_time_is_the_minimum_of_the_repeats_after_an_untimed_warm_up():
    clock, calls = FakeClock(), []
    # the warm-up is the fastest call (timed, it would win); the best repeat is neither first nor last,
    # and the mean (4) and the median (4) of the repeats differ from the minimum (3)
    durations = iter([0.5, 5.0, 3.0, 4.0])

    def fn():
        calls.append(clock())
        clock.spend(next(durations))

    assert bench.best_times({"fn": fn}, 3, clock) == {"fn": pytest.approx(3.0)}
    assert len(calls) == 4  # 1 warm-up + 3 repeats

    durations, calls[:] = iter([9.0, 8.0, 7.0, 6.0, 2.0, 5.0]), []
    assert bench.best_times({"fn": fn}, 5, clock) == {"fn": pytest.approx(2.0)} and len(calls) == 6



def test_best_times_interleave_the_ways_after_their_warm_ups():
    """One call of each per round: a slow spell of the machine (here the second round) costs every
    way the same round, and each figure is still its own minimum."""
    clock, order = FakeClock(), []
    spells = {"a": iter([0.1, 2.0, 9.0, 3.0]), "b": iter([0.1, 4.0, 9.0, 5.0])}

    def way(name):
        def fn():
            order.append(name)
            clock.spend(next(spells[name]))
        return fn

    best = bench.best_times({"a": way("a"), "b": way("b")}, 3, clock)
    assert order == ["a", "b"] * 4  # warm-ups, then three rounds
    assert best == {"a": pytest.approx(2.0), "b": pytest.approx(4.0)}


#: seconds each fake run spends, in call order, per case: the warm-up first, then 3 repeats. The loop
#: trains 2 seeds per run (one call each; run totals 8, 6, 7: best 6); plain Lightning 1 seed per run.
PLAN = {
    "dropout": {"engine": [0.1, 6.0, 2.0, 4.0],
                "autograd": [0.1, 9.0, 8.0, 12.0],
                "loop": [0.1, 0.1, 2.0, 6.0, 4.0, 2.0, 3.0, 4.0],
                "lightning": [0.1, 9.0, 5.0, 7.0]},
    "rnn": {"engine": [0.1, 1.0, 3.0, 2.0],
            "autograd": [0.1, 1.0, 1.5, 2.0],
            "loop": [0.1, 0.1, 6.0, 6.0, 5.0, 5.0, 7.0, 7.0],
            "lightning": [0.1, 2.0, 8.0, 4.0]},
}
#: what that makes the figures with 2 seeds, 1 Lightning seed and 2 epochs: best run / (seeds * epochs)
EXPECTED = {"dropout": {"engine": 2.0 / 4, "autograd": 8.0 / 4, "torch_loop": 6.0 / 4, "lightning": 5.0 / 2},
            "rnn": {"engine": 1.0 / 4, "autograd": 1.0 / 4, "torch_loop": 10.0 / 4, "lightning": 2.0 / 2}}


@pytest.fixture
def fake_runs(monkeypatch):
    """The four ways of training replaced by runs that spend PLAN's seconds on a fake clock;
    returns (clock, calls: kind -> the seeds each call trained)."""
    clock, calls, plan = FakeClock(), {"engine": [], "autograd": [], "loop": [], "lightning": []}, {}

    def run(kind, seeds, spec):
        case = next(c for c, (study, _) in bench.CASES.items() if study == spec["study"])
        plan.setdefault(case, {k: list(v) for k, v in PLAN[case].items()})
        calls[kind].append(seeds)
        clock.spend(plan[case][kind].pop(0))

    def engine(spec, data, seeds, *args, engine):
        run({"fused": "engine", "torch": "autograd"}[engine], list(seeds), spec)

    monkeypatch.setattr(bench, "train", engine)
    monkeypatch.setattr(bench, "run_torch_loop", lambda spec, data, seed: run("loop", seed, spec))
    monkeypatch.setattr(bench, "run_plain_lightning", lambda spec, data, seed: run("lightning", seed, spec))
    return clock, calls, plan


def test_bench_figures_are_the_best_repeat_per_replica_epoch(fake_runs, capsys):
    clock, calls, plan = fake_runs
    report = bench.main(["--config", CONFIG, "--epochs", "2", "--seeds", "2", "--lightning-seeds", "1",
                         "--cases", "dropout", "rnn"], clock=clock)
    assert all(not left for case in plan.values() for left in case.values())  # 1 warm-up + 3 repeats each
    assert calls["engine"] == calls["autograd"] == [[0, 1]] * 8
    assert calls["loop"] == [0, 1] * 8 and calls["lightning"] == [0] * 8
    assert list(report) == ["dropout", "rnn"]
    for case, want in EXPECTED.items():
        got = report[case]
        for kind, seconds in want.items():
            assert got[kind] == pytest.approx(seconds), (case, kind)
        # the speed-ups compare like with like: per replica-epoch, baseline over engine
        assert got["ratio_autograd"] == pytest.approx(want["autograd"] / want["engine"])
        assert got["ratio_loop"] == pytest.approx(want["torch_loop"] / want["engine"])
        assert got["ratio_lightning"] == pytest.approx(want["lightning"] / want["engine"])
        assert got["repeats"] == 3
    out = capsys.readouterr().out
    assert "the minimum of 3 timed repeats after 1 untimed warm-up run" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("dropout", "rnn"))}
    assert rows["dropout"][1:] == ["500000.0us", "2000000.0us", "1500000.0us", "2500000.0us", "4.0x", "3.0x", "5.0x"]
    assert rows["rnn"][1:] == ["250000.0us", "250000.0us", "2500000.0us", "1000000.0us", "1.0x", "10.0x", "4.0x"]


def test_bench_repeats_option(fake_runs, capsys):
    clock, calls, plan = fake_runs
    for case in PLAN:  # 4 repeats: one more run each, a new best for the engine
        plan[case] = {k: [*v, 0.5] for k, v in PLAN[case].items()}
        plan[case]["loop"].append(0.5)
    report = bench.main(["--config", CONFIG, "--epochs", "2", "--seeds", "2", "--lightning-seeds", "1",
                         "--cases", "dropout", "--repeats", "4"], clock=clock)
    assert len(calls["engine"]) == len(calls["autograd"]) == 5 and len(calls["loop"]) == 10
    assert len(calls["lightning"]) == 5
    assert report["dropout"]["engine"] == pytest.approx(0.5 / 4) and report["dropout"]["repeats"] == 4
    assert report["dropout"]["torch_loop"] == pytest.approx(1.0 / 4)
    assert "the minimum of 4 timed repeats" in capsys.readouterr().out
    for too_few in ("2", "1", "0"):
        with pytest.raises(SystemExit):
            bench.main(["--config", CONFIG, "--repeats", too_few], clock=clock)
        assert "--repeats: must be at least 3" in capsys.readouterr().err
    assert len(calls["engine"]) == 5  # nothing ran


def test_bench_runs_the_real_trainings(capsys):
    """A smoke run of the real engine, torch loop and Lightning (tiny: 1 epoch, 2 seeds; no timing asserted)."""
    report = bench.main(["--config", CONFIG, "--epochs", "1", "--seeds", "2", "--lightning-seeds", "1",
                         "--cases", "dropout"])
    t = report["dropout"]
    assert all(t[k] > 0 for k in ("engine", "torch_loop", "lightning")) and t["repeats"] == 3
    assert t["ratio_loop"] == pytest.approx(t["torch_loop"] / t["engine"])
    assert "vs loop" in capsys.readouterr().out


# --------------------------------------------------------------------------- like with like
def _case(case):
    study, variant = bench.CASES[case]
    spec = variant_spec(validate_config(load_config(CONFIG)), study, variant)
    return spec, make_dataset(spec["dataset"])


def _load_engine_weights(net: ReplicaNet, model: torch.nn.Module) -> None:
    """Copy replica 0 of the engine's network into the baseline's trainable parameters, in layer order
    (Keras kernels ``[in, out]`` transposed to torch's ``[out, in]``; conv kernels already alike)."""
    engine = [(name, p.detach()[0]) for name, p in net.named_parameters()]
    baseline = [p for p in model.parameters() if p.requires_grad]
    assert len(engine) == len(baseline)
    with torch.no_grad():
        for (name, e), t in zip(engine, baseline):
            if name.endswith("kernel") and e.dim() == 2:
                e = e.T
            assert e.squeeze().shape == t.squeeze().shape, name
            t.copy_(e.reshape(t.shape))


@pytest.mark.parametrize("case", list(bench.CASES))
def test_baselines_train_the_engines_model(case):
    """Per replica, the torch baseline has exactly the engine's trainable parameters, and with the
    engine's weights it computes the engine's logits (inference mode): the ratios compare one model."""
    spec, data = _case(case)
    shape = data["x_train"].shape[1:]
    net = ReplicaNet(spec["layers"], shape, seeds=[3])
    model = bench.torch_model(spec["layers"], shape, seed=3)
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(model) == count(net)
    assert len(bench.torch_optimizer(model.parameters(), spec["training"]["optimizer"]).param_groups[0]["params"]) \
        == len([p for p in model.parameters() if p.requires_grad])
    _load_engine_weights(net, model)
    net.eval(), model.eval()
    x = torch.as_tensor(data["x_test"][:64])
    with torch.no_grad():
        engine, baseline = net(x[None])[0], model(x)
    units = spec["layers"][-1]["dense"]["units"]
    assert baseline.shape == (len(x), units)
    torch.testing.assert_close(baseline.reshape(engine.shape), engine, rtol=1e-4, atol=1e-5)
    # training mode: batch norm on the batch's statistics alike; dropout in both, or in neither
    net.train(), model.train()
    dropout = any(kind in ("dropout", "spatial_dropout2d") and p["rate"] > 0
                  for layer in spec["layers"] for kind, p in layer.items())
    with torch.no_grad():
        engine, baseline = [net(x[None])[0] for _ in range(2)], [model(x) for _ in range(2)]
    if dropout:
        assert not torch.equal(engine[0], engine[1]) and not torch.equal(baseline[0], baseline[1])
    else:
        torch.testing.assert_close(baseline[0].reshape(engine[0].shape), engine[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", [
    {"dense": {"units": 4, "activation": "relu", "kernel_initializer": "glorot_uniform", "max_norm": 3.0}},
    {"dense": {"units": 4, "activation": "relu", "kernel_initializer": "glorot_uniform", "weight_noise": 0.1}},
    {"lstm": {"units": 4, "dropout": 0.2}},
])
def test_baseline_refuses_a_layer_it_cannot_mirror(layer):
    shape = (5, 2) if "lstm" in layer else (2,)
    with pytest.raises(ValueError, match="benchmark's torch models have no"):
        bench.torch_model([layer, {"dense": {"units": 1, "activation": "sigmoid",
                                             "kernel_initializer": "glorot_uniform"}}], shape, seed=0)


@pytest.mark.parametrize("case", list(bench.CASES))
def test_baselines_use_the_studys_training_settings(case, monkeypatch):
    """The torch loop takes an optimizer step per batch of the study's size, for the given epochs, with
    the study's optimizer and learning rate."""
    spec, data = _case(case)
    spec["training"]["epochs"] = 2
    opts = []
    real = bench.torch_optimizer

    def optimizer(params, opt_spec):
        opts.append(real(params, opt_spec))
        opts[-1].register_step_post_hook(lambda *_: steps.append(1))
        return opts[-1]

    steps = []
    monkeypatch.setattr(bench, "torch_optimizer", optimizer)
    bench.run_torch_loop(spec, data, seed=0)
    want = spec["training"]["optimizer"]
    assert len(opts) == 1 and type(opts[0]).__name__.lower() == want["name"]
    assert opts[0].defaults["lr"] == want["lr"]
    assert len(steps) == 2 * -(-len(data["x_train"]) // spec["training"]["batch_size"])


def test_the_sweep_case_times_one_model_against_point_by_point_and_a_per_seed_loop(monkeypatch, capsys):
    clock, calls = FakeClock(), []

    def spend(kind, seconds):
        def run(*args, **kwargs):
            calls.append(kind)
            clock.spend(seconds.pop(0))
        return run

    # warm-up first, then 3 repeats: the best is 2 s for one model (fused), 6 s by autograd, 10 s
    # point by point, 10 s looped
    fused, autograd = spend("replicas", [0.1, 3.0, 2.0, 2.5]), spend("autograd", [0.1, 7.0, 6.0, 8.0])
    monkeypatch.setattr(bench, "train_points", lambda *a, engine: (fused if engine == "fused" else autograd)())
    monkeypatch.setattr(bench, "train", spend("point", [0.1] * 10 + [1.0] * 30))
    monkeypatch.setattr(bench, "run_torch_loop", spend("loop", [0.01] * 20 + [0.5] * 60))
    report = bench.main(["--config", CONFIG, "--epochs", "2", "--seeds", "2", "--cases", "sweep"], clock=clock)
    points = report["sweep"]["points_n"]
    assert points == 10 and calls.count("replicas") == calls.count("autograd") == 4
    assert calls.count("point") == 4 * points
    assert calls.count("loop") == 4 * points * 2  # every point's every seed, one after another
    replica_epochs = points * 2 * 2
    assert report["sweep"]["replicas"] == pytest.approx(2.0 / replica_epochs)
    assert report["sweep"]["points"] == pytest.approx(10.0 / replica_epochs)
    assert report["sweep"]["torch_loop"] == pytest.approx(10.0 / replica_epochs)
    assert report["sweep"]["autograd"] == pytest.approx(6.0 / replica_epochs)
    assert report["sweep"]["ratio_points"] == pytest.approx(5.0)
    assert report["sweep"]["ratio_autograd"] == pytest.approx(3.0)
    assert "point by point" in capsys.readouterr().out
