"""Bring your own data (issue 14): any scikit-learn generator or bundled loader, a CSV/NPZ file with a
split, stratification and scaling fitted on the training rows, classes inferred, bad files stopped at
config validation with one message; the report's title and intro from the config."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets as skdatasets

from reglab.cli import main
from reglab.config import ConfigError, report_text, validate_config
from reglab.data import dataset_info, make_dataset, save_dataset
from reglab.shapes import dataset_input, dataset_sizes

REPO = Path(__file__).resolve().parents[1]
SIGMOID = {"dense": {"units": 1, "activation": "sigmoid"}}


def softmax(k):
    return {"dense": {"units": k, "activation": "softmax"}}


def config_with(dataset: dict, head: dict = SIGMOID, **more) -> dict:
    """A minimal raw config: dataset `mine` and one study `s` whose variant `v` ends in `head`."""
    return {
        "datasets": {"mine": dataset},
        "studies": {"s": {"title": "t", "dataset": "mine", "training": {"optimizer": {"name": "adam"}, "epochs": 1},
                          "variants": {"v": [{"dense": {"units": 4, "activation": "relu"}}, head]}}},
        **more,
    }


def config_error(dataset: dict, head: dict = SIGMOID) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config_with(dataset, head))
    message = str(info.value)
    assert "\n" not in message
    return message


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# --------------------------------------------------------------------------- scikit-learn generators
def test_generator_params_are_checked_against_its_signature():
    message = config_error({"generator": "make_blobs", "params": {"n_sample": 10, "random_state": 0}, "n_train": 5})
    assert message == ("config error at datasets.mine.params.n_sample: make_blobs has no parameter n_sample (it has "
                       "n_samples, n_features, centers, cluster_std, center_box, shuffle, random_state)")
    # a parameter that changes what it returns is reglab's to set
    assert "datasets.mine.params.return_centers: reglab sets return_centers" in config_error(
        {"generator": "make_blobs", "params": {"return_centers": True, "random_state": 0}, "n_train": 5})
    # a random generator must be reproducible; scikit-learn's own check of a value names the key
    assert "datasets.mine.params: make_blobs draws random numbers: give params.random_state" in config_error(
        {"generator": "make_blobs", "params": {"n_samples": 50}, "n_train": 5})
    assert "datasets.mine.params.n_samples: make_blobs: The 'n_samples' parameter" in config_error(
        {"generator": "make_blobs", "params": {"n_samples": -1, "random_state": 0}, "n_train": 5})
    # a valid one: the output layer is checked against its classes and its input shape
    blobs = {"generator": "make_blobs", "params": {"n_samples": 60, "centers": 3, "n_features": 5, "random_state": 0},
             "n_train": 40}
    assert "the dataset has 3 classes" in config_error(blobs)
    config = validate_config(config_with(blobs, softmax(3)))
    assert config["datasets"]["mine"] == blobs
    assert dataset_input(blobs) == ((5,), 3) and dataset_sizes(blobs) == (40, 20)
    x, y = skdatasets.make_blobs(n_samples=60, centers=3, n_features=5, random_state=0)
    data = make_dataset(blobs)
    assert np.array_equal(data["x_train"], x[:40].astype(np.float32))
    assert np.array_equal(data["y_test"], y[40:].astype(np.float32))


@pytest.mark.parametrize(("generator", "detail"), [
    ("make_regression", "make_regression gives continuous targets (a regression), but a dataset's labels must be "
                        "classes: use one of make_circles"),
    ("load_diabetes", "load_diabetes gives continuous targets"),
    ("make_multilabel_classification", "several targets per sample"),
    ("load_linnerud", "several targets per sample"),
    ("fetch_covtype", "fetch_covtype downloads its data and reglab downloads nothing"),
    ("make_blob", "unknown generator 'make_blob' (scikit-learn's and reglab's with classes: make_circles"),
    ("load_sample_images", "images without labels"),
])
def test_generators_without_classes_are_refused(generator, detail):
    message = config_error({"generator": generator, "params": {}, "n_train": 5})
    assert message.startswith("config error at datasets.mine.generator: ") and detail in message


def test_a_loader_returns_x_y_shuffled_by_its_random_state(tmp_path):
    iris = {"generator": "load_iris", "params": {"random_state": 3}, "n_train": 100}
    data = make_dataset(iris)
    x, y = skdatasets.load_iris(return_X_y=True)
    order = np.random.default_rng(3).permutation(150)  # the documented shuffle
    assert np.array_equal(data["x_train"], x[order[:100]].astype(np.float32))
    assert np.array_equal(data["y_train"], y[order[:100]].astype(np.float32))
    assert np.array_equal(data["x_test"], x[order[100:]].astype(np.float32))
    assert dataset_info(iris).classes == ("0", "1", "2")
    validate_config(config_with(iris, softmax(3)))
    # unshuffled, iris is sorted by class: its first 100 samples hold no class 2
    assert config_error({"generator": "load_iris", "n_train": 100}, softmax(3)) == (
        "config error at datasets.mine.n_train: no sample of class '2' (of 3) in the first 100 samples of load_iris: "
        "set params.random_state to shuffle them")
    assert "load_iris has no parameter n_samples (it has random_state)" in config_error(
        {"generator": "load_iris", "params": {"n_samples": 5}, "n_train": 100}, softmax(3))


def test_generator_labels_become_classes_in_sorted_order(tmp_path):
    hastie = {"generator": "make_hastie_10_2", "params": {"n_samples": 40, "random_state": 0}, "n_train": 30}
    data = make_dataset(hastie)
    _, y = skdatasets.make_hastie_10_2(n_samples=40, random_state=0)  # labels -1.0 and 1.0
    assert set(np.unique(y)) == {-1.0, 1.0}
    expected = (y == 1.0).astype(np.float32)
    assert np.array_equal(np.concatenate([data["y_train"], data["y_test"]]), expected)
    save_dataset(data, tmp_path / "h.npz")
    with np.load(tmp_path / "h.npz", allow_pickle=False) as npz:
        assert npz["classes"].tolist() == ["-1", "1"]
    validate_config(config_with(hastie))  # two classes: a sigmoid head


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("scaling", ["standard", "minmax"])
def test_csv_features_are_scaled_with_the_training_rows_only(tmp_path, scaling):
    rows = [(1.0, 10.0, "x"), (2.0, 30.0, "y"), (4.0, 20.0, "x"), (3.0, 60.0, "y"),  # training rows
            (10.0, 0.0, "x"), (-5.0, 100.0, "y")]                                   # test rows
    path = write_csv(tmp_path / "d.csv", "a,b,target", [f"{a},{b},{t}" for a, b, t in rows])
    spec = {"file": str(path), "label": "target", "n_train": 4, "shuffle": False, "scaling": scaling}
    data = make_dataset(spec)
    x = np.array([r[:2] for r in rows])
    train, test = x[:4], x[4:]
    if scaling == "standard":
        mean, scale = train.mean(axis=0), train.std(axis=0)
    else:
        mean, scale = train.min(axis=0), train.max(axis=0) - train.min(axis=0)
    np.testing.assert_allclose(data["x_train"], (train - mean) / scale, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data["x_test"], (test - mean) / scale, rtol=1e-6, atol=1e-6)
    assert data["y_train"].tolist() == [0, 1, 0, 1] and data["y_test"].tolist() == [0, 1]
    unscaled = make_dataset({**spec, "scaling": "none"})
    assert np.array_equal(unscaled["x_test"], test.astype(np.float32))


def test_csv_split_is_stratified_shuffled_and_reproducible(tmp_path):
    labels = ["b", "a", "b", "b", "a"] * 4  # 12 b, 8 a
    path = write_csv(tmp_path / "d.csv", "id,value,species",
                     [f"{i},{i * i / 7:.4f},{t}" for i, t in enumerate(labels)])
    spec = {"file": str(path), "label": "species", "test_fraction": 0.25, "stratify": True, "random_state": 5}
    data = make_dataset(spec)
    assert data.classes == ["a", "b"]
    assert len(data["y_train"]) == 15 and len(data["y_test"]) == 5  # 25% of 20 in the test set
    assert np.bincount(data["y_test"].astype(int)).tolist() == [2, 3]  # 8 a, 12 b: proportions kept
    ids = np.concatenate([data["x_train"][:, 0], data["x_test"][:, 0]]).astype(int)
    assert sorted(ids) == list(range(20)) and ids.tolist() != list(range(20))  # every row once, shuffled
    y = np.concatenate([data["y_train"], data["y_test"]])
    assert all(data.classes[int(k)] == labels[i] for i, k in zip(ids, y))  # each row keeps its label
    again = make_dataset(spec)
    assert all(np.array_equal(data[k], again[k]) for k in data)
    other = make_dataset({**spec, "random_state": 6})
    assert not np.array_equal(data["x_test"], other["x_test"])
    assert dataset_info(spec) == ((2,), ("a", "b"), 15, 5)


def test_integer_labels_are_classes_in_numeric_order(tmp_path):
    path = write_csv(tmp_path / "d.csv", "f,label", ["0.5,10", "1.5,3", "2.5,7", "3.5,10", "4.5,3", "5.5,7"])
    data = make_dataset({"file": str(path), "label": "label", "n_train": 3, "shuffle": False})
    assert data.classes == ["3", "7", "10"]  # numbers sort as numbers, not as text
    assert data["y_train"].tolist() == [2, 0, 1] and data["y_test"].tolist() == [2, 0, 1]
    config = config_with({"file": str(path), "label": "label", "n_train": 3, "shuffle": False}, softmax(3))
    assert validate_config(config)["datasets"]["mine"] == {
        "file": str(path), "label": "label", "n_train": 3, "shuffle": False, "stratify": False, "random_state": 0,
        "scaling": "none"}


def test_an_npz_file_gives_x_and_y(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5, 1))
    y = np.array(["up", "down", "flat"] * 4)
    np.savez(tmp_path / "seq.npz", x=x, y=y)
    spec = {"file": str(tmp_path / "seq.npz"), "n_train": 9, "shuffle": False}
    data = make_dataset(spec)
    assert np.array_equal(data["x_train"], x[:9].astype(np.float32))
    assert data.classes == ["down", "flat", "up"] and data["y_test"].tolist() == [2, 0, 1]
    assert dataset_input(spec) == ((5, 1), 3)
    np.savez(tmp_path / "objects.npz", x=x, y=np.array([{"label": 1}] * 12, dtype=object))
    message = config_error({"file": str(tmp_path / "objects.npz"), "n_train": 9}, softmax(3))
    assert f"at datasets.mine.file: dataset file {tmp_path / 'objects.npz'}: array 'y' cannot be read" in message


GOOD = ["1,2,cat", "3,4,dog", "5,6,cat", "7,8,dog", "9,10,cat"]
BAD_FILES = {
    # name: (rows of a,b,target or None for no file, the key, the text after "dataset file PATH: ")
    "missing file": (None, "file", "not found (a relative path is relative to the working directory"),
    "no label column": (GOOD, "label", "no label column 'species' (columns: a, b, target)"),
    "non-numeric feature": (["1,2,cat", "3,x,dog", *GOOD], "file", "column 'b' is not numeric ('x' at line 3)"),
    "missing feature": ([*GOOD, "1,,dog"], "file", "column 'b' has a missing value at line 7"),
    "infinite feature": (["inf,2,cat", *GOOD], "file", "column 'a' has an infinite value at line 2"),
    "missing label": (["1,2,", *GOOD], "label", "label column 'target' has a missing value at line 2"),
    "single class": (["1,2,cat", "3,4,cat", "5,6,cat"], "label",
                     "label column 'target' holds a single class ('cat'); a classifier needs at least 2"),
    "regression target": (["1,2,0.25", "3,4,1", "5,6,0"], "label",
                          "label column 'target' holds non-integer numbers (0.25 at line 2)"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_stops_validation_and_the_dataset_step_with_one_message(tmp_path, name, capsys):
    rows, key, detail = BAD_FILES[name]
    path = tmp_path / "my data.csv"
    if rows is not None:
        write_csv(path, "a,b,target", rows)
    spec = {"file": str(path), "label": "species" if name == "no label column" else "target", "n_train": 2}
    message = config_error(spec)
    assert message.startswith(f"config error at datasets.mine.{key}: dataset file {path}: {detail}")
    out = tmp_path / "out.npz"
    assert main(["dataset", "--spec", json.dumps(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"dataset file {path}: {detail}" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_split_problems_name_their_key(tmp_path):
    path = write_csv(tmp_path / "d.csv", "a,target", [f"{i},{'ab'[i % 2]}" for i in range(6)] + ["9,c"])
    base = {"file": str(path), "label": "target"}
    head = softmax(3)
    assert config_error({**base, "n_train": 7}, head) == (
        f"config error at datasets.mine.n_train: n_train (7) must be less than the 7 samples of {path} so that the "
        "test set is not empty")
    assert config_error(base, head) == "config error at datasets.mine: a file dataset needs n_train or test_fraction"
    assert config_error({**base, "n_train": 3, "test_fraction": 0.5}, head).startswith(
        "config error at datasets.mine.test_fraction: give n_train or test_fraction, not both")
    assert config_error({**base, "test_fraction": 0.3, "stratify": True}, head).startswith(
        f"config error at datasets.mine.stratify: dataset file {path}: cannot split it with stratify (")
    # unshuffled, the one 'c' is in the test set
    assert config_error({**base, "n_train": 6, "shuffle": False}, head) == (
        f"config error at datasets.mine.n_train: no sample of class 'c' (of 3) in the training set of {path}: "
        "set stratify: true or train on more samples")


def test_the_output_layer_is_checked_against_a_files_classes(tmp_path):
    path = write_csv(tmp_path / "d.csv", "a,b,target", [f"{i},{i % 5},{'xyz'[i % 3]}" for i in range(12)])
    spec = {"file": str(path), "label": "target", "test_fraction": 0.25, "stratify": True}
    assert config_error(spec) == (
        "config error at studies.s.variants.v[1]: the last layer must be dense with units: 1 and activation: sigmoid "
        "(2 classes) or units: 3 and activation: softmax; the dataset has 3 classes")
    validate_config(config_with(spec, softmax(3)))
    assert dataset_sizes(spec) == (9, 3)


def test_a_file_is_read_once_per_path(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "d.csv", "a,target", [f"{i},{'ab'[i % 2]}" for i in range(10)])
    reads = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    one = {"file": str(path), "label": "target", "n_train": 6}
    config = config_with(one)
    config["datasets"]["other"] = {**one, "n_train": 4, "scaling": "minmax"}
    config["studies"]["t"] = {**config["studies"]["s"], "dataset": "other"}
    validated = validate_config(config)
    for name in ("mine", "other"):  # as the workflow asks, per job
        dataset_input(validated["datasets"][name]), dataset_sizes(validated["datasets"][name])
    make_dataset(validated["datasets"]["other"])
    assert reads == [str(path)]
    write_csv(path, "a,target", [f"{i},{'abc'[i % 3]}" for i in range(10)])  # a new version is read again
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert dataset_input(one) == ((1,), 3) and len(reads) == 2


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_names_the_package(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    assert config_error({"file": str(path), "label": "y", "n_train": 2}) == (
        f"config error at datasets.mine.file: dataset file {path}: reading Parquet needs the pyarrow package, which "
        "is not installed (pip install pyarrow, or save the table as CSV)")


def test_a_dataset_has_a_generator_or_a_file(tmp_path):
    assert config_error({"n_train": 5}) == "config error at datasets.mine: a dataset needs generator or file"
    assert config_error({"generator": "make_moons", "file": "x.csv", "n_train": 5}) == (
        "config error at datasets.mine: a dataset has generator or file, not both")
    assert config_error({"file": "x.csv", "label": "t", "n_train": 5, "params": {}}) == (
        "config error at datasets.mine: unknown key 'params' (allowed: file, label, n_train, test_fraction, "
        "stratify, shuffle, random_state, scaling)")
    assert config_error({"file": "x.csv", "label": "t", "n_train": 5, "scaling": "zscore"}).startswith(
        "config error at datasets.mine.scaling: 'zscore' is not one of")


# --------------------------------------------------------------------------- the report and the workflow
def test_the_reports_title_and_intro_come_from_the_config(tmp_path):
    from reglab.report import render_report

    assert report_text(validate_config(config_with({"generator": "make_moons", "n_train": 5, "params": {
        "n_samples": 10, "noise": 0.1, "random_state": 0}}))) == {
        "title": "reglab: batch normalization, dropout and noise over many seeds",
        "intro": "Each variant trained over many seeds; every number below is a distribution over seeds, not a "
                 "single run."}
    config = {"studies": {}, "claims": [], "published": None,
              "report": {"title": "Iris <b>study</b>", "intro": "Our own data & models."}}
    render_report(config, tmp_path, tmp_path / "index.html")
    html = (tmp_path / "index.html").read_text()
    assert "<title>Iris &lt;b&gt;study&lt;/b&gt;</title>" in html and "<h1>Iris &lt;b&gt;study&lt;/b&gt;</h1>" in html
    assert re.search(r'<p class="lead">Our own data &amp; models\. Generated [^<]+</p>', html)
    assert "Each variant trained over many seeds" not in html


@pytest.mark.slow  # a snakemake dry run (a few seconds)
def test_the_dataset_rule_takes_the_file_as_input(tmp_path):
    """Editing the file (newer than the dataset) reruns the dataset step; its path may hold a space."""
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "my data.csv", "a,b,target", GOOD)
    config = config_with({"file": "data/my data.csv", "label": "target", "n_train": 3}, published="pub.yaml")
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    out = tmp_path / "results" / "datasets" / "mine.npz"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"old")
    os.utime(out, (1e9, 1e9))  # older than the file
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "c.yaml",
                           "-n", "results/datasets/mine.npz"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "input: data/my data.csv" in proc.stdout
    assert "reason: Updated input files: data/my data.csv" in proc.stdout
