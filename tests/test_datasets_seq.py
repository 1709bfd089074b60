"""The digits and sequence generators: shapes, classes, determinism and the npz contract."""

import numpy as np
import pytest

from reglab.data import GENERATORS, load_dataset, make_dataset, save_dataset

DIGITS = {"generator": "load_digits", "n_train": 300, "params": {"n_samples": 1797, "random_state": 0}}
SEQ = {"generator": "make_sequences", "n_train": 500,
       "params": {"n_samples": 1500, "length": 40, "noise": 1.3, "random_state": 0}}


def test_digits_shapes_classes_and_scaling():
    data = make_dataset(DIGITS)
    assert data["x_train"].shape == (300, 1, 8, 8)
    assert data["x_test"].shape == (1497, 1, 8, 8)
    assert data["y_train"].shape == (300,) and data["y_test"].shape == (1497,)
    for key in data:
        assert data[key].dtype == np.float32
    x = np.concatenate([data["x_train"], data["x_test"]])
    y = np.concatenate([data["y_train"], data["y_test"]])
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    assert np.array_equal(y, np.round(y))
    assert len(np.unique(data["y_train"])) == 10  # a shuffled split: every class in the 300


def test_digits_are_deterministic_and_shuffled_by_random_state():
    from sklearn.datasets import load_digits

    a, b = make_dataset(DIGITS), make_dataset(DIGITS)
    for key in a:
        assert np.array_equal(a[key], b[key])
    other = make_dataset({**DIGITS, "params": {"n_samples": 1797, "random_state": 1}})
    assert not np.array_equal(a["y_train"], other["y_train"])
    raw = load_digits()
    # the same images, reordered: each training image is a digits image with its label
    first = a["x_train"][0, 0] * 16
    match = np.flatnonzero((np.abs(raw.images - first) < 1e-4).all(axis=(1, 2)))
    assert a["y_train"][0] in raw.target[match]
    small = GENERATORS["load_digits"](n_samples=400, random_state=0)
    assert small[0].shape == (400, 1, 8, 8) and small[1].shape == (400,)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_sequences_shapes_classes_and_determinism(n_classes):
    spec = {**SEQ, "params": {**SEQ["params"], "n_classes": n_classes}}
    data = make_dataset(spec)
    assert data["x_train"].shape == (500, 40, 1) and data["x_test"].shape == (1000, 40, 1)
    assert data["y_train"].shape == (500,) and data["y_test"].shape == (1000,)
    for key in data:
        assert data[key].dtype == np.float32
    y = np.concatenate([data["y_train"], data["y_test"]])
    assert np.array_equal(np.bincount(y.astype(int)), np.full(n_classes, 1500 // n_classes))
    again = make_dataset(spec)
    for key in data:
        assert np.array_equal(data[key], again[key])
    other = make_dataset({**spec, "params": {**spec["params"], "random_state": 1}})
    assert not np.array_equal(data["x_train"], other["x_train"])


def test_sequence_classes_differ_in_order_not_in_values():
    x, y = GENERATORS["make_sequences"](n_samples=2000, length=40, noise=0.0, random_state=0)
    x = x[:, :, 0]
    # the values' distribution is nearly the same in both classes ...
    assert abs(x[y == 0].std() - x[y == 1].std()) < 0.05
    assert abs(np.abs(x[y == 0]).mean() - np.abs(x[y == 1]).mean()) < 0.05
    # ... but the frequency (zero crossings, an order statistic) separates them
    crossings = (np.diff(np.sign(x), axis=1) != 0).sum(axis=1)
    assert crossings[y == 0].max() < crossings[y == 1].min() + 2
    assert crossings[y == 0].mean() + 2 < crossings[y == 1].mean()


def test_new_datasets_round_trip_through_npz(tmp_path):
    for spec in (DIGITS, SEQ):
        data = make_dataset(spec)
        save_dataset(data, tmp_path / f"{spec['generator']}.npz")
        back = load_dataset(tmp_path / f"{spec['generator']}.npz")
        for key in data:
            assert np.array_equal(back[key], data[key])
