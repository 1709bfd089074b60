"""Sources of variance (issue 13 item 7, after Bouthillier et al. 2021): decomposition runs vary one
source of randomness (initial weights, data order, training-time draws, the train/test split) while
the others keep a fixed seed; the study's variance.csv gives each source's std of final test accuracy."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.datasets import make_circles

from reglab import contract
from reglab.aggregate import aggregate_study
from reglab.config import ConfigError, study_packs, study_runs, validate_config, variant_spec
from reglab.data import make_dataset
from reglab.module import ReplicaClassifier
from reglab.replicas import plan_models, replica_seed, split_random_state
from reglab.results import write_run
from reglab.train import fit_model, replica_data, train, train_points

DENSE = {"activation": "linear", "kernel_initializer": "glorot_uniform", "use_bias": True, "max_norm": None,
         "unit_norm": False, "weight_noise": 0.0}
CIRCLES = {"generator": "make_circles", "params": {"n_samples": 90, "noise": 0.1, "random_state": 1}, "n_train": 40}
LAYERS = [{"gaussian_noise": {"stddev": 0.05}}, {"dense": {**DENSE, "units": 8, "activation": "relu", "weight_noise": 0.05}},
          {"dropout": {"rate": 0.3}}, {"dense": {**DENSE, "units": 1, "activation": "sigmoid"}}]


def spec(vary=None, epochs=3):
    out = {"study": "s", "variant": "v", "dataset": {"name": "d", **CIRCLES},
           "training": {"optimizer": {"name": "adam", "lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
                        "epochs": epochs, "batch_size": 16, "label_flip": 0.1,
                        "gradient_noise": {"eta": 0.01, "gamma": 0.55}},
           "layers": copy.deepcopy(LAYERS)}
    if vary:
        out["vary"] = {"source": vary, "fixed_seed": 0}
    return out


@pytest.fixture(scope="module")
def data():
    return make_dataset(CIRCLES)


def streams(vary, data, seeds=(3, 5)):
    """What replicas (vary, 3) and (vary, 5) draw: initial weights, shuffles, dropout masks, label flips."""
    s = spec(vary)
    replicas = [replica_seed(s, seed) for seed in seeds]
    module = ReplicaClassifier(s, replicas, replica_data(s, data, replicas))
    module.net.reset_noise()
    dropout = module.net.body[2]
    masks = dropout(torch.ones(2, 16, 8))  # the dropout layer's draws, replica by replica
    flips = module.epoch_targets()  # label flips come from the same (draws) stream
    weights = next(module.net.body[1].parameters())  # the hidden layer's first weight [S, ...]
    return {"init": not torch.equal(weights[0], weights[1]),
            "order": not torch.equal(module.orders[:, 0], module.orders[:, 1]),
            "draws": not torch.equal(masks[0], masks[1]) and not torch.equal(flips[0], flips[1])}


@pytest.mark.parametrize("vary", ["init", "order", "draws", "all", None])
def test_each_source_varies_alone(vary, data):
    differ = streams(vary, data)
    expected = {source: vary in (source, "all", None) for source in ("init", "order", "draws")}
    assert differ == expected


def test_a_fixed_source_replica_is_the_ordinary_run_of_the_fixed_seed(data):
    """vary=init, seed 0 (every stream at the fixed seed 0) trains bit for bit as the ordinary seed 0,
    in one model with the ordinary replicas (vary is a per-replica option)."""
    ordinary, varied = spec(), spec("init")
    assert len(plan_models([ordinary, varied], [0, 1])) == 1
    a, b = train_points([ordinary, varied], data, [0, 1])
    np.testing.assert_array_equal(a.history["train_loss"][:, 0], b.history["train_loss"][:, 0])
    assert not np.array_equal(a.history["train_loss"][:, 1], b.history["train_loss"][:, 1])
    assert a.seeds == b.seeds == [0, 1]


def test_split_replicas_train_on_the_dataset_made_again_with_a_derived_random_state(data):
    s, seeds = spec("split"), [3, 5]
    per_replica = replica_data(s, data, [replica_seed(s, seed) for seed in seeds])
    assert per_replica["per_replica"] and per_replica["x_train"].shape == (2, 40, 2)
    for r, seed in enumerate(seeds):
        x, y = make_circles(n_samples=90, noise=0.1, random_state=split_random_state(seed))
        np.testing.assert_array_equal(per_replica["x_train"][r], x[:40].astype(np.float32))
        np.testing.assert_array_equal(per_replica["y_test"][r], y[40:].astype(np.float32))
    assert not np.array_equal(per_replica["x_train"][0], per_replica["x_train"][1])
    assert not np.array_equal(per_replica["x_train"][0], data["x_train"])
    # each replica trains on its own split exactly as the fixed seed 0 trains on that dataset alone
    together = train(s, data, seeds)
    for r, seed in enumerate(seeds):
        alone = train(spec(), make_dataset({**CIRCLES, "params": {**CIRCLES["params"],
                                                                 "random_state": split_random_state(seed)}}), [0])
        for metric in ("train_loss", "test_acc"):
            np.testing.assert_allclose(together.history[metric][:, r], alone.history[metric][:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.final["test_loss"][r], alone.final["test_loss"][0], rtol=1e-5)


def test_a_file_without_random_state_is_re_split_from_its_pooled_samples(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50), "label": np.arange(50) % 2}).to_csv(
        tmp_path / "mine.csv", index=False)
    mine = {"file": str(tmp_path / "mine.csv"), "label": "label", "n_train": 35}
    base = make_dataset(mine)
    s = {**spec("split"), "dataset": {"name": "mine", **mine}}
    out = replica_data(s, base, [replica_seed(s, 2), replica_seed(spec("init"), 2)])  # split 2; the dataset's own
    assert out["x_train"].shape == (2, 35, 2) and out["x_test"].shape == (2, 15, 2)
    rows = lambda x, y: sorted(map(tuple, np.column_stack([x, y]).tolist()))
    assert rows(np.concatenate([out["x_train"][0], out["x_test"][0]]), np.concatenate([out["y_train"][0], out["y_test"][0]])) \
        == rows(np.concatenate([base["x_train"], base["x_test"]]), np.concatenate([base["y_train"], base["y_test"]]))
    assert not np.array_equal(out["x_train"][0], base["x_train"])
    np.testing.assert_array_equal(out["x_train"][1], base["x_train"])  # a fixed split keeps the dataset's


def test_ordinary_int_seed_training_is_unchanged(data):
    """Values of the engine before seeds per source (computed with the committed engine); a replica
    given its seed per source, all equal, trains the same."""
    result = train(spec(), data, [0, 4])
    np.testing.assert_array_equal(result.final["test_loss"], np.float32([0.723537266254425, 0.7136598229408264]))
    np.testing.assert_array_equal(result.history["train_loss"][-1], np.float32([0.6726552248001099, 0.6981185674667358]))
    np.testing.assert_array_equal(result.final["train_acc"], np.float32([0.550000011920929, 0.625]))
    per_source = fit_model(spec(), data, [{"seed": s, "init": s, "order": s, "draws": s, "split": None} for s in (0, 4)])
    np.testing.assert_array_equal(per_source.final["test_loss"], result.final["test_loss"])
    assert per_source.seeds == [0, 4]


# --------------------------------------------------------------------------- config and aggregation
TINY = """
seeds: 3
datasets:
  c: {generator: make_circles, params: {n_samples: 60, noise: 0.1, random_state: 1}, n_train: 30}
studies:
  s:
    title: t
    dataset: c
    training: {optimizer: {name: adam, lr: 0.01}, epochs: 2, batch_size: 16}
    variance_sources: true
    variants:
      plain:
        - dense: {units: 4, activation: relu}
        - dense: {units: 1, activation: sigmoid}
      drop:
        - dense: {units: 4, activation: relu}
        - dropout: {rate: 0.5}
        - dense: {units: 1, activation: sigmoid}
"""


def test_the_aggregate_variance_table_is_the_std_of_the_runs_final_test_accuracy(tmp_path):
    config = validate_config(yaml.safe_load(TINY))
    packs = study_packs(config, "s")
    assert packs["drop--sources"] == [f"drop--{s}" for s in ("init", "order", "draws", "split", "all")]
    results = tmp_path / "results"
    data = make_dataset(config["datasets"]["c"])
    for pack, variants in packs.items():
        specs = [variant_spec(config, "s", v) for v in variants]
        for s, result in zip(specs, train_points(specs, data, [0, 1, 2])):
            write_run(contract.job_dir(results, "s", pack, 0) + f"/{s['variant']}", s, result, 0, "now")
    out = tmp_path / "agg"
    aggregate_study(study_runs(config, str(results)), out)
    table = pd.read_csv(out / "variance.csv")
    assert list(table.columns) == list(contract.VARIANCE_COLUMNS)
    assert list(table["source"]) == ["seeds", "init", "order", "draws", "split", "all"] * 2
    assert list(table["variant"]) == ["plain"] * 6 + ["drop"] * 6
    for _, row in table.iterrows():
        run = row["run"]
        pack = run if row["source"] == "seeds" else f"{row['variant']}--sources"
        finals = pd.read_csv(f"{contract.job_dir(results, 's', pack, 0)}/{run}/final.csv")
        acc = finals["test_acc"].to_numpy(float)
        assert row["n"] == 3
        assert row["std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-12)
        assert row["mean"] == pytest.approx(acc.mean(), abs=1e-12)
        assert row["std_ci_low"] <= row["std"] <= row["std_ci_high"] or row["std"] == 0
    draws_only = table[(table["variant"] == "plain") & (table["source"] == "draws")]
    assert float(draws_only["std"].iloc[0]) == 0  # no dropout or noise: nothing to draw
    summary = pd.read_csv(out / "summary.csv")
    assert "drop--split" in set(summary["variant"])  # aggregated like any variant
    aggregate_study([r for r in study_runs(config, str(results)) if "--" not in r["variant"]], out)
    assert not (out / "variance.csv").exists()  # a stale table is removed


def test_an_unknown_source_is_one_config_error_naming_its_index():
    config = yaml.safe_load(TINY)
    config["studies"]["s"]["variance_sources"] = ["init", "weights"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert err.value.path == ("studies", "s", "variance_sources", 1)
    assert "'weights' is not one of ['init', 'order', 'draws', 'split']" in str(err.value)
    assert str(err.value).startswith("config error at studies.s.variance_sources[1]:")


def test_decomposition_runs_are_planned_once_and_revalidate_unchanged():
    config = validate_config(yaml.safe_load(TINY))
    study = config["studies"]["s"]
    assert study["variance_runs"]["plain--order"] == {"variant": "plain", "source": "order"}
    assert variant_spec(config, "s", "plain--order")["vary"] == {"source": "order", "fixed_seed": 0}
    assert "vary" not in variant_spec(config, "s", "plain")
    assert validate_config(copy.deepcopy(config)) == config
    clash = yaml.safe_load(TINY)
    clash["studies"]["s"]["variants"]["plain--init"] = clash["studies"]["s"]["variants"]["plain"]
    with pytest.raises(ConfigError, match="at studies.s.variance_sources: .*'plain--init'"):
        validate_config(clash)
    off = yaml.safe_load(TINY)
    off["studies"]["s"]["variance_sources"] = ["split"]
    assert set(validate_config(off)["studies"]["s"]["variance_runs"]) == {"plain--split", "plain--all", "drop--split",
                                                                         "drop--all"}


def test_the_report_offers_variance_csv_for_download(tmp_path):
    import base64
    from pathlib import Path

    from reglab import contract
    from reglab.report import study_downloads

    path = Path(contract.aggregate_path(tmp_path, "s", contract.VARIANCE))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"study,variant,source\ns,v,init\n")
    (link,) = [d for d in study_downloads(tmp_path, "s") if d["name"] == "variance.csv"]
    assert link["filename"] == "s_variance.csv"
    assert base64.b64decode(link["href"].split(",", 1)[1]) == path.read_bytes()
