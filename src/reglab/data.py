"""Datasets: made by scikit-learn or read from a user's file, split into train and test, stored as npz
without pickle.

A dataset's config entry names either a ``generator`` with its ``params`` or a ``file``:

* reglab's own generators (:data:`GENERATORS`: make_circles, make_moons, the subsampled and shuffled
  :func:`load_digits`, :func:`make_sequences`): the first ``n_train`` samples train, the rest test.
* any other scikit-learn generator (``make_blobs``, ``make_classification``, ...) or bundled loader
  (``load_iris``, ``load_wine``, ``load_breast_cancer``; never a ``fetch_*``: nothing is downloaded)
  whose labels are classes (:data:`NOT_CLASSES` lists those refused). Its ``params`` are checked
  against the function's signature (:func:`check_params`); a loader returns ``(X, y)`` with
  ``return_X_y=True``, and takes one parameter of reglab's, ``random_state``, which shuffles its
  samples (``np.random.default_rng(random_state).permutation``; without it they keep the loader's
  order). The first ``n_train`` samples train, the rest test.
* a ``file`` (:func:`read_file`): CSV or Parquet (a header row; feature columns and the ``label``
  column), or NPZ (arrays ``x`` ``[samples, ...]`` and ``y`` ``[samples]``), its path relative to the
  working directory. It is split by scikit-learn's ``train_test_split`` (``n_train`` or
  ``test_fraction``, ``stratify``, ``shuffle``, ``random_state``) and its features optionally scaled
  (``scaling``: ``standard`` or ``minmax``, fitted on the training split only).

Labels may be numbers or text; the classes are their distinct values in sorted order, class k
labelled k (0..K-1), and their names are recorded in the dataset file (array ``classes``). Every
problem (a missing file or column, non-numeric features, a missing value, a single class, labels that
are not classes) raises one :class:`DataError` naming the file and the column; reglab.config raises it
as a ConfigError when the config is validated, before anything runs.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn import datasets as skdatasets

from reglab.contract import atomic_write


def load_digits(n_samples: int = 1797, random_state: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download), shuffled by ``random_state``.

    Returns the first ``n_samples`` (at most 1797) of the shuffled set: x ``[N, 1, 8, 8]``
    (channels-first) scaled from 0..16 to [0, 1], y the class index 0-9.
    """
    digits = skdatasets.load_digits()
    order = np.random.default_rng(random_state).permutation(len(digits.target))[:n_samples]
    x = digits.images[order, None, :, :] / 16.0
    return x, digits.target[order]


def make_sequences(
    n_samples: int = 1000,
    length: int = 40,
    noise: float = 1.3,
    n_classes: int = 2,
    random_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sine waves to classify by frequency, a task where the order of the values matters.

    Class k (balanced, in shuffled order) has a frequency drawn uniformly from the k-th of
    ``n_classes`` bands between 1.5 and 4.5 cycles per sequence, separated by gaps; each wave has a
    random phase and amplitude in [0.7, 1.3], plus N(0, noise^2) per step. With a random phase
    every class has (nearly) the same distribution of values, so a model must use their order.
    Returns x ``[n_samples, length, 1]`` and y the class index.

    Calibration (two classes, length 40, 500 training sequences, Adam 1e-3, batch 32): a 32-unit
    LSTM (4 seeds) reaches ~90-92% test accuracy by epoch 20-40 at noise 1.3, then slowly
    overfits (train ~97%, test ~89-90% at epoch 100); at epoch 100, noise 1.25 gives ~92% test,
    1.5 ~83%, 0.5 ~99.7%.
    """
    rng = np.random.default_rng(random_state)
    y = rng.permutation(np.arange(n_samples) % n_classes)
    width = 3.0 / n_classes
    lo = 1.5 + y * width + 0.15 * width
    freq = lo + rng.uniform(0.0, 0.7 * width, n_samples)
    phase = rng.uniform(0.0, 2 * np.pi, n_samples)
    amplitude = rng.uniform(0.7, 1.3, n_samples)
    t = np.arange(length) / length
    x = amplitude[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None])
    x = x + rng.normal(0.0, noise, x.shape)
    return x[:, :, None], y


GENERATORS = {
    "make_circles": skdatasets.make_circles,
    "make_moons": skdatasets.make_moons,
    "load_digits": load_digits,
    "make_sequences": make_sequences,
}
KEYS = ("x_train", "y_train", "x_test", "y_test")

#: scikit-learn functions whose data are not samples labelled with classes, and why
NOT_CLASSES = {
    **dict.fromkeys(("make_regression", "make_friedman1", "make_friedman2", "make_friedman3",
                     "make_sparse_uncorrelated", "load_diabetes"), "continuous targets (a regression)"),
    **dict.fromkeys(("make_swiss_roll", "make_s_curve"), "a continuous position on a manifold (a regression)"),
    **dict.fromkeys(("make_multilabel_classification", "load_linnerud"),
                    "several targets per sample (multi-label or multi-output)"),
    **dict.fromkeys(("make_low_rank_matrix", "make_sparse_coded_signal", "make_spd_matrix",
                     "make_sparse_spd_matrix", "make_biclusters", "make_checkerboard"),
                    "matrices, not labelled samples"),
    **dict.fromkeys(("load_files", "load_svmlight_file", "load_svmlight_files"),
                    "data read from files of its own (name your file with file: instead)"),
    **dict.fromkeys(("load_sample_image", "load_sample_images"), "images without labels"),
}
#: scikit-learn's and reglab's functions that make samples labelled with classes (suggested in messages)
CLASS_GENERATORS = ("make_circles", "make_moons", "make_blobs", "make_classification", "make_gaussian_quantiles",
                    "make_hastie_10_2", "load_iris", "load_wine", "load_breast_cancer", "load_digits",
                    "make_sequences")
#: parameters that change what a scikit-learn function returns: reglab sets them (or leaves their defaults)
RETURN_FORM = ("return_X_y", "as_frame", "return_centers", "return_indicator", "return_distributions", "coef")
#: the file types a dataset's ``file`` may have
FILE_TYPES = (".csv", ".npz", ".parquet")
SCALINGS = ("none", "standard", "minmax")


class DataError(ValueError):
    """A dataset that cannot be made: a missing or malformed file, or a generator that gives no classes.

    ``key`` is the path, inside the dataset's config entry, of the key the problem concerns
    (``("label",)``, ``("params", "n_sample")``; empty: the entry as a whole), so that config
    validation can name it.
    """

    def __init__(self, message: str, key: tuple = ()):
        super().__init__(message)
        self.key = tuple(key)


class Dataset(dict):
    """The arrays of a dataset (:data:`KEYS`) by name; ``classes`` the class names (class k: ``classes[k]``)."""

    classes: list[str] | None = None


class DatasetInfo(NamedTuple):
    """What validation and the workflow need to know of a dataset without training on it."""

    shape: tuple[int, ...]  # per sample
    classes: tuple[str, ...]
    n_train: int
    n_test: int


# --------------------------------------------------------------------------- scikit-learn functions
def sklearn_function(name: str):
    """The scikit-learn generator or bundled loader ``name``; DataError (at ``generator``) for one that
    downloads, gives no classes or does not exist."""
    if name.startswith("fetch_"):
        raise DataError(f"{name} downloads its data and reglab downloads nothing: use a generator (make_*), "
                        "a bundled loader (load_*) or your own file (file:)", ("generator",))
    if name in NOT_CLASSES:
        raise DataError(f"{name} gives {NOT_CLASSES[name]}, but a dataset's labels must be classes: use one of "
                        f"{', '.join(CLASS_GENERATORS)}", ("generator",))
    function = getattr(skdatasets, name, None) if name.startswith(("make_", "load_")) else None
    if function is None or name not in skdatasets.__all__:
        raise DataError(f"unknown generator {name!r} (scikit-learn's and reglab's with classes: "
                        f"{', '.join(CLASS_GENERATORS)})", ("generator",))
    if name.startswith("load_") and "return_X_y" not in inspect.signature(function).parameters:
        raise DataError(f"{name} does not return samples and their labels (X, y)", ("generator",))
    return function


def check_params(name: str, params: dict) -> None:
    """Raise DataError (at ``params.KEY``) for a parameter the function ``name`` does not take.

    Allowed: the function's parameters (inspect.signature) less those that change what it returns
    (:data:`RETURN_FORM`); a loader (``load_*``) also takes reglab's ``random_state`` (a shuffle). A
    ``make_*`` function that takes a ``random_state`` must be given one, so the data are the same
    every time they are made.
    """
    signature = inspect.signature(sklearn_function(name)).parameters
    allowed = [p for p in signature if p not in RETURN_FORM]
    if name.startswith("load_") and "random_state" not in allowed:
        allowed.append("random_state")
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values())
    for key in params:
        if key in RETURN_FORM and key in signature:
            raise DataError(f"reglab sets {key} of {name} itself (it takes the samples and labels); leave it out",
                            ("params", key))
        if key not in allowed and not any_keyword:
            raise DataError(f"{name} has no parameter {key} (it has {', '.join(allowed) or 'none'})", ("params", key))
    if name.startswith("make_") and "random_state" in signature and "random_state" not in params:
        raise DataError(f"{name} draws random numbers: give params.random_state so that the dataset is the same "
                        "every time it is made", ("params",))


@functools.lru_cache(maxsize=16)
def _generated(name: str, params_json: str) -> tuple[np.ndarray, np.ndarray]:
    """The samples and raw labels a scikit-learn function makes (cached: validation and the workflow ask often)."""
    function = sklearn_function(name)
    params = json.loads(params_json)
    check_params(name, params)
    signature = inspect.signature(function).parameters
    state = params.pop("random_state", None) if name.startswith("load_") and "random_state" not in signature else None
    try:
        out = function(**params, **({"return_X_y": True} if "return_X_y" in signature else {}))
    except (TypeError, ValueError) as exc:  # scikit-learn's own check of a value
        named = re.match(r"The '(\w+)' parameter", str(exc))
        key = ("params", named[1]) if named and named[1] in params else ("params",)
        raise DataError(f"{name}: {exc}", key) from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise DataError(f"{name} does not return samples and their labels (X, y)", ("generator",))
    x, y = (np.asarray(a) for a in out)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or x.dtype.kind not in "biuf":
        what = f"x {x.shape} and y {y.shape}" if y.ndim == 1 else f"{y.shape[1]} targets per sample"
        raise DataError(f"{name} does not give numeric samples with one class label each ({what})", ("generator",))
    if state is not None:
        order = np.random.default_rng(state).permutation(len(y))
        x, y = x[order], y[order]
    return x, y


# --------------------------------------------------------------------------- labels
def _classes(y: np.ndarray, what: str, key: tuple, where) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels -> (class indices 0..K-1 in the labels' sorted order, class names); DataError when they
    are not classes (missing, non-integer numbers, a single class). ``what`` names them in messages,
    ``where(i)`` sample i."""
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise DataError(f"{what} has a missing value at {where(bad[0])}", key)
        fractional = np.flatnonzero(y != np.round(y))
        if fractional.size:
            raise DataError(f"{what} holds non-integer numbers ({y[fractional[0]]:g} at {where(fractional[0])}): "
                            "labels must be classes, not a regression target", key)
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise DataError(f"{what} holds neither numbers nor text (dtype {y.dtype})", key)
    if y.dtype.kind == "S":
        y = y.astype(str)
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        shown = repr(str(classes[0])) if len(classes) else "none"
        raise DataError(f"{what} holds a single class ({shown}); a classifier needs at least 2", key)
    return index.reshape(-1), tuple(str(c) for c in classes)


# --------------------------------------------------------------------------- files
def _line(i: int) -> str:
    return f"line {i + 2}"  # after the header line


def _row(i: int) -> str:
    return f"row {i + 1}"


def _sample(i: int) -> str:
    return f"sample {i}"


def read_file(path: str | os.PathLike, label: str | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A user's data file as (samples, class indices, class names); DataError naming the file and the
    column (or array) for any problem. ``label`` names the label column of a CSV or Parquet file."""
    path = Path(path)
    try:
        version = _version(path)
    except FileNotFoundError:
        raise DataError(f"dataset file {path}: not found (a relative path is relative to the working "
                        f"directory, {Path.cwd()})", ("file",)) from None
    except OSError as exc:
        raise DataError(f"dataset file {path}: cannot be read ({exc.strerror})", ("file",)) from None
    return _read_file(str(path), version, label)


def _version(path: Path) -> tuple:
    """What tells one file, and one version of it, from another: its absolute path, mtime and size."""
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=16)
def _read_file(path: str, version: tuple, label: str | None):
    """:func:`read_file`, read once per path (and version of the file)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_TYPES:
        raise DataError(f"dataset file {path}: unknown file type {suffix or '(none)'!r} (reglab reads "
                        f"{', '.join(FILE_TYPES)})", ("file",))
    if suffix == ".npz":
        if label is not None:
            raise DataError(f"dataset file {path}: an npz file holds arrays x and y; label names the label column "
                            "of a CSV or Parquet file", ("label",))
        x, y = _read_npz(path)
        where = _sample
        what = f"dataset file {path}: array 'y'"
    else:
        if label is None:
            raise DataError(f"dataset file {path}: a {suffix[1:].upper()} file needs label, the name of its label "
                            "column", ())
        x, y, where = _read_table(path, suffix, label)
        what = f"dataset file {path}: label column {label!r}"
    index, classes = _classes(y, what, ("label",) if label is not None else ("file",), where)
    return x, index, classes


def _read_table(path: str, suffix: str, label: str) -> tuple[np.ndarray, np.ndarray, object]:
    """Features and raw labels of a CSV or Parquet file, and how to name its rows."""
    import pandas as pd

    if suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise DataError(f"dataset file {path}: reading Parquet needs the pyarrow package, which is not installed "
                            "(pip install pyarrow, or save the table as CSV)", ("file",))
        reader, where = pd.read_parquet, _row
    else:
        reader, where = pd.read_csv, _line
    try:
        frame = reader(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"dataset file {path}: is empty (a CSV file needs a header row and data rows)",
                        ("file",)) from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        raise DataError(f"dataset file {path}: cannot be read ({' '.join(str(exc).split())})", ("file",)) from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if label not in columns:
        raise DataError(f"dataset file {path}: no label column {label!r} (columns: {', '.join(columns)})", ("label",))
    if len(frame) == 0:
        raise DataError(f"dataset file {path}: has a header row but no data rows", ("file",))
    features = [c for c in columns if c != label]
    if not features:
        raise DataError(f"dataset file {path}: has no feature column beside the label column {label!r}", ("file",))
    x = np.empty((len(frame), len(features)))
    for j, column in enumerate(features):
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            coerced = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero((coerced.isna() & values.notna()).to_numpy())
            if bad.size:
                raise DataError(f"dataset file {path}: column {column!r} is not numeric ({values.iloc[bad[0]]!r} at "
                                f"{where(bad[0])}); features must be numbers", ("file",))
            values = coerced
        x[:, j] = values.to_numpy(dtype=float, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(x[:, j]))
        if bad.size:
            kind = "a missing value" if np.isnan(x[bad[0], j]) else "an infinite value"
            raise DataError(f"dataset file {path}: column {column!r} has {kind} at {where(bad[0])}", ("file",))
    labels = frame[label]
    missing = np.flatnonzero(labels.isna().to_numpy())
    if missing.size:
        raise DataError(f"dataset file {path}: label column {label!r} has a missing value at {where(missing[0])}",
                        ("label",))
    if pd.api.types.is_bool_dtype(labels) or pd.api.types.is_numeric_dtype(labels):
        y = labels.to_numpy()
    else:
        y = labels.astype(str).to_numpy(dtype=str)
    return x, y, where


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays x and y of an npz file (no pickle)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"dataset file {path}: cannot be read as npz ({exc})", ("file",)) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"dataset file {path}: is one array, not an npz archive with arrays x and y", ("file",))
    with npz:
        missing = [k for k in ("x", "y") if k not in npz.files]
        if missing:
            raise DataError(f"dataset file {path}: no array {missing[0]!r} (arrays: {', '.join(npz.files) or 'none'})",
                            ("file",))
        arrays = {}
        for name in ("x", "y"):
            try:
                arrays[name] = npz[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # object arrays: no pickle
                raise DataError(f"dataset file {path}: array {name!r} cannot be read ({exc})", ("file",)) from None
        x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "biuf":
        raise DataError(f"dataset file {path}: array 'x' is not numeric (dtype {x.dtype}); features must be numbers",
                        ("file",))
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"dataset file {path}: array 'x' {x.shape} must have one row per sample and array 'y' "
                        f"{y.shape} one label per row", ("file",))
    x = x.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    if bad.size:
        raise DataError(f"dataset file {path}: array 'x' has a missing or infinite value at sample {bad[0]}", ("file",))
    return x, y


def _split_file(spec: dict, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...]):
    """Train and test sets of a file dataset (scikit-learn's train_test_split), features scaled."""
    from sklearn.model_selection import train_test_split

    path, n = spec["file"], len(y)
    if ("n_train" in spec) == ("test_fraction" in spec):
        raise DataError("a file dataset needs n_train or test_fraction" if "n_train" not in spec else
                        "give n_train or test_fraction, not both", ("test_fraction",) if "n_train" in spec else ())
    if "n_train" in spec:
        key, sizes, n_test = ("n_train",), {"train_size": spec["n_train"]}, n - spec["n_train"]
    else:
        key, sizes = ("test_fraction",), {"test_size": spec["test_fraction"]}
        n_test = math.ceil(spec["test_fraction"] * n)
    if n_test < 1:
        raise DataError(f"n_train ({spec['n_train']}) must be less than the {n} samples of {path} so that the test "
                        "set is not empty", key)
    if n_test >= n:
        raise DataError(f"test_fraction ({spec['test_fraction']}) leaves none of the {n} samples of {path} to train",
                        key)
    stratify, shuffle = spec.get("stratify", False), spec.get("shuffle", True)
    if stratify and not shuffle:
        raise DataError("stratify needs shuffle: true (an unshuffled split keeps the file's order)", ("stratify",))
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, **sizes, shuffle=shuffle, stratify=y if stratify else None, random_state=spec.get("random_state", 0))
    except ValueError as exc:
        raise DataError(f"dataset file {path}: cannot split it with stratify ({exc})", ("stratify",)) from None
    advice = "train on more samples" if stratify else "set stratify: true or train on more samples"
    _check_train_classes(y_train, classes, f"the training set of {path}", advice, key)
    x_train, x_test = _scale(x_train, x_test, spec.get("scaling", "none"))
    return x_train, y_train, x_test, y_test


def _check_train_classes(y_train: np.ndarray, classes: tuple[str, ...], what: str, advice: str, key: tuple) -> None:
    """Every class has a training sample (else the model could not learn it)."""
    missing = sorted(set(range(len(classes))) - set(np.unique(y_train).tolist()))
    if missing:
        names = ", ".join(repr(classes[k]) for k in missing)
        raise DataError(f"no sample of class{'es' if len(missing) > 1 else ''} {names} (of {len(classes)}) in {what}: "
                        f"{advice}", key)


def _scale(x_train: np.ndarray, x_test: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Features scaled per feature (every value of a sample's array) by a scaler fitted on x_train alone."""
    if scaling == "none":
        return x_train, x_test
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if scaling not in SCALINGS:
        raise DataError(f"unknown scaling {scaling!r} (allowed: {', '.join(SCALINGS)})", ("scaling",))
    scaler = {"standard": StandardScaler, "minmax": MinMaxScaler}[scaling]()
    scaler.fit(x_train.reshape(len(x_train), -1))
    return tuple(scaler.transform(a.reshape(len(a), -1)).reshape(a.shape) for a in (x_train, x_test))


# --------------------------------------------------------------------------- datasets
def make_dataset(spec: dict) -> Dataset:
    """The dataset a config entry describes, split into train and test (see the module docstring)."""
    if "file" in spec:
        x, y, classes = read_file(spec["file"], spec.get("label"))
        x_train, y_train, x_test, y_test = _split_file(spec, x, y, classes)
    elif spec["generator"] in GENERATORS:
        x, y = GENERATORS[spec["generator"]](**spec["params"])
        n_train = spec["n_train"]
        x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
        classes = tuple(str(k) for k in np.unique(y).astype(int))
    else:
        name = spec["generator"]
        x, raw = _generated(name, json.dumps(spec.get("params", {}), sort_keys=True))
        y, classes = _classes(raw, f"{name}'s labels", ("generator",), _sample)
        n_train = spec["n_train"]
        if n_train >= len(y):
            raise DataError(f"n_train ({n_train}) must be less than the {len(y)} samples {name} makes so that the "
                            "test set is not empty", ("n_train",))
        advice = "set params.random_state to shuffle them" if name.startswith("load_") else "raise n_train"
        _check_train_classes(y[:n_train], classes, f"the first {n_train} samples of {name}", advice, ("n_train",))
        x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    data = Dataset(x_train=x_train.astype(np.float32), y_train=y_train.astype(np.float32),
                   x_test=x_test.astype(np.float32), y_test=y_test.astype(np.float32))
    data.classes = list(classes)
    return data


def dataset_info(spec: dict) -> DatasetInfo:
    """Shape per sample, class names and split sizes of a dataset entry: its data are made (a file
    read) once per entry and version of the file; DataError as :func:`make_dataset`."""
    version = None
    if "file" in spec:
        try:
            version = _version(Path(spec["file"]))
        except OSError:
            pass  # make_dataset names the problem
    return _dataset_info(json.dumps(spec, sort_keys=True), version)


@functools.lru_cache(maxsize=64)
def _dataset_info(spec_json: str, version: tuple | None) -> DatasetInfo:
    data = make_dataset(json.loads(spec_json))
    return DatasetInfo(tuple(data["x_train"].shape[1:]), tuple(data.classes), len(data["y_train"]),
                       len(data["y_test"]))


def save_dataset(data: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write a dataset to ``path`` atomically (npz, no pickle), with its class names (array ``classes``)
    when it has them."""
    arrays = {k: data[k] for k in KEYS}
    if getattr(data, "classes", None) is not None:
        arrays["classes"] = np.asarray(data.classes, dtype=str)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_dataset(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a dataset written by :func:`save_dataset`; a bad file raises DataError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise DataError(f"dataset file {path}: missing arrays {missing}")
            data = {k: np.asarray(npz[k], dtype=np.float32) for k in KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"dataset file {path}: cannot be read ({exc})") from None
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise DataError(f"dataset file {path}: x_{split} {x.shape} and y_{split} {y.shape} do not match")
    return data
