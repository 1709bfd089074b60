"""The command line the rules call: usage errors for bad arguments and files, real work otherwise."""

import json

import numpy as np
import pandas as pd
import pytest

from reglab.cli import main
from reglab.data import DataError, load_dataset

DATASET = {"generator": "make_circles", "params": {"n_samples": 60, "noise": 0.1, "random_state": 1}, "n_train": 20}
DENSE = {"activation": "linear", "kernel_initializer": "glorot_uniform", "use_bias": True}
SPEC = {
    "study": "s", "variant": "v", "dataset": {"name": "d", **DATASET},
    "training": {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False}, "epochs": 3, "batch_size": 32},
    "layers": [{"dense": {**DENSE, "units": 4, "activation": "relu"}}, {"dense": {**DENSE, "units": 1, "activation": "sigmoid"}}],
}


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "d.npz"
    assert main(["dataset", "--spec", json.dumps(DATASET), "--out", str(path)]) == 0
    return path


def test_dataset_command_writes_the_split(dataset):
    data = load_dataset(dataset)
    assert data["x_train"].shape == (20, 2) and data["x_test"].shape == (40, 2)
    assert set(np.unique(data["y_train"])) <= {0.0, 1.0}


def test_train_command_writes_a_complete_run_directory(dataset, tmp_path):
    args = ["train", "--spec", json.dumps(SPEC), "--dataset", str(dataset), "--seeds", "3,4", "--outdir", str(tmp_path)]
    assert main(args) == 0
    out = tmp_path / "v"
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["study", "variant", "seed", "epoch", "train_loss", "train_acc", "test_loss",
                                     "test_acc", "epoch_time_s"]
    assert len(history) == 3 * 2 and set(history["seed"]) == {3, 4}
    assert len(pd.read_csv(out / "final.csv")) == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seeds"] == [3, 4] and meta["spec"] == SPEC and len(meta["config_hash"]) == 16
    assert {"torch", "pytorch-lightning", "python"} <= set(meta["versions"])
    with np.load(out / "boundary.npz", allow_pickle=False) as npz:
        assert npz["prob"].shape == (2, len(npz["grid_y"]), len(npz["grid_x"]))
    assert not list(out.glob(".*tmp"))  # no temporary file left behind


def test_train_command_trains_a_pack_of_variants_one_after_another(dataset, tmp_path):
    pack = [SPEC, {**SPEC, "variant": "w", "layers": [SPEC["layers"][0], {"dropout": {"rate": 0.5}}, SPEC["layers"][1]]}]
    args = ["train", "--spec", json.dumps(pack), "--dataset", str(dataset), "--seeds", "0", "--outdir", str(tmp_path)]
    assert main(args) == 0
    for variant in ("v", "w"):
        meta = json.loads((tmp_path / variant / "meta.json").read_text())
        assert meta["variant"] == variant and meta["seeds"] == [0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--spec", "{not json", "--dataset", "DATASET", "--seeds", "0", "--outdir", "o"], "not valid JSON"),
        (["train", "--spec", "[1]", "--dataset", "DATASET", "--seeds", "0", "--outdir", "o"], "must be a JSON object or a non-empty list"),
        (["train", "--spec", "{}", "--dataset", "missing.npz", "--seeds", "0", "--outdir", "o"], "file not found: missing.npz"),
        (["train", "--spec", "{}", "--dataset", "DATASET", "--seeds", "a,b", "--outdir", "o"], "not a comma-separated list"),
        (["train", "--spec", "{}", "--dataset", "DATASET", "--seeds", "1,1", "--outdir", "o"], "distinct"),
        (["train", "--spec", "{}", "--dataset", "DATASET", "--seeds", "0", "--threads", "0", "--outdir", "o"], "not >= 1"),
        (["train", "--spec", "{}", "--dataset", "DATASET", "--seeds", "0"], "--outdir"),
        (["aggregate", "--runs", "no/such/dir", "--outdir", "o"], "directory not found"),
        (["report", "--config", "no/such.json", "--results", ".", "--out", "x.html"], "file not found: no/such.json"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_give_usage_errors(args, message, dataset, capsys):
    args = [str(dataset) if a == "DATASET" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


def test_a_corrupt_dataset_file_is_named_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    args = ["train", "--spec", json.dumps(SPEC), "--dataset", str(bad), "--seeds", "0", "--outdir", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_dataset_without_expected_arrays_is_rejected(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 2)))
    with pytest.raises(DataError, match="missing arrays"):
        load_dataset(path)


def test_pickled_dataset_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1), x_test=np.zeros((1, 2)),
             y_test=np.zeros(1))
    with pytest.raises(DataError, match="cannot be read"):
        load_dataset(path)


def test_kernels_compiles_the_loops_of_the_families_asked_for(tmp_path, capsys):
    from reglab import fusedkernels

    out = tmp_path / "kernels" / "lstm.json"
    assert main(["kernels", "--family", "lstm", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["families"] == ["lstm"] and written["seconds"] >= 0
    assert fusedkernels.train_lstm_block.signatures  # compiled (or loaded) in this process
    assert main(["kernels", "--out", str(tmp_path / "all.json")]) == 0
    assert json.loads((tmp_path / "all.json").read_text())["families"] == ["dense", "lstm"]
    with pytest.raises(SystemExit):
        main(["kernels", "--family", "rnn", "--out", str(tmp_path / "x.json")])
    assert "invalid choice: 'rnn'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
