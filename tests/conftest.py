"""Shared fixtures: a small synthetic results tree in the documented formats (docs/architecture.md);
and the collection order (:func:`pytest_collection_modifyitems`: the end-to-end files first).

* ``synthetic_results``: ``results/`` with datasets, runs (history.csv, final.csv, boundary.npz,
  meta.json) for 2 studies, 5 seeds, 30 epochs, 2 jobs per variant; plus a validated-style config
  dict (with claims and a published YAML) -> :class:`SyntheticResults`.
* ``synthetic_aggregated``: the same, with ``results/aggregate/{study}/*.csv`` written.
* ``make_synthetic_results``: factory ``(root, **overrides) -> SyntheticResults`` for variations
  (e.g. hostile study titles, ``grid=True`` for a third study with grids, ``images=True`` /
  ``sequences=True`` for a study on image / sequence data, without decision boundaries; ``grid2d=True``
  with ``grid=True`` for grids over several axes in it).
* ``synthetic_grid_aggregated``: the tree with the grid study, aggregated.

``diverged={(study, variant, seed): epoch}`` makes a seed diverge at that 1-based epoch, as the
engine records it: NaN metrics in history.csv from that epoch on, NaN final metrics, its
``diverged_epoch`` in final.csv (0 for every other seed) and NaN decision-boundary probabilities.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

if importlib.util.find_spec("reglab") is None:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

N_SEEDS, N_EPOCHS, SEEDS_PER_JOB, GRID = 5, 30, 3, 15
DENSE_RELU = {"dense": {"units": 8, "activation": "relu", "kernel_initializer": "glorot_uniform", "use_bias": True}}
DENSE_OUT = {"dense": {"units": 1, "activation": "sigmoid", "kernel_initializer": "glorot_uniform", "use_bias": True}}
#: study -> (title, dataset, {variant: (layers, test-acc time constant, test plateau, train plateau)})
STUDIES = {
    "bn": ("Synthetic batch-norm study", "circles_a", {
        "baseline": ([DENSE_RELU, DENSE_OUT], 12.0, 0.84, 0.85),
        "bn_after": ([DENSE_RELU, {"batch_norm": {}}, DENSE_OUT], 3.0, 0.86, 0.87),
        "bn_before": ([DENSE_RELU, {"batch_norm": {}}, {"activation": {"name": "relu"}}, DENSE_OUT], 6.0, 0.76, 0.74),
    }),
    "drop": ("Synthetic dropout study", "circles_b", {
        "overfit": ([DENSE_RELU, DENSE_OUT], 4.0, 0.74, 1.00),
        "dropout_0.4": ([DENSE_RELU, {"dropout": {"rate": 0.4}}, DENSE_OUT], 5.0, 0.81, 0.96),
    }),
}
#: the optional study with grids (``grid=True``): explicit variants, training overrides and two grids
BN = {"batch_norm": {"momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}}
GRID_STUDY = ("bn_ext", "Synthetic batch-norm extensions with grids", "circles_a", {
    "baseline": ([DENSE_RELU, DENSE_OUT], 12.0, 0.84, 0.85),
    "bn_after": ([DENSE_RELU, BN, DENSE_OUT], 3.0, 0.86, 0.87),
    "bn_no_affine": ([DENSE_RELU, {"batch_norm": {**BN["batch_norm"], "center": False, "scale": False}}, DENSE_OUT],
                     3.0, 0.85, 0.86),
    "bn_input": ([BN, DENSE_RELU, BN, DENSE_OUT], 3.0, 0.855, 0.86),
    "noise_0.01": ([{"gaussian_noise": {"stddev": 0.01}}, DENSE_RELU, DENSE_OUT], 10.0, 0.82, 0.83),
    "label_flip_0.1": ([DENSE_RELU, DENSE_OUT], 12.0, 0.82, 0.80),
    "grad_noise_0.01": ([DENSE_RELU, DENSE_OUT], 12.0, 0.83, 0.84),
})
GRID_VARIANT_TRAINING = {"label_flip_0.1": {"label_flip": 0.1},
                         "grad_noise_0.01": {"gradient_noise": {"eta": 0.01, "gamma": 0.55}}}
#: grid -> (config entry, {value: (test plateau, train plateau)}); momentum 0.9 is designed to be best
GRIDS = {
    "momentum": ({"id": "momentum", "title": "Batch-norm momentum", "base": "bn_after", "layer": 1,
                  "param": "momentum", "values": [0.0, 0.5, 0.9, 0.99], "name": "bn_momentum_{value}",
                  "baseline": "baseline"},
                 {0.0: (0.74, 0.75), 0.5: (0.81, 0.82), 0.9: (0.90, 0.91), 0.99: (0.86, 0.87)}),
    "input_noise": ({"id": "input_noise", "title": "Gaussian noise stddev on the inputs", "base": "noise_0.01",
                     "layer": 0, "param": "stddev", "values": [0.0, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
                     "name": "noise_{value}", "baseline": "baseline"},
                    {0.0: (0.80, 0.81), 0.005: (0.81, 0.82), 0.01: (0.82, 0.83), 0.05: (0.83, 0.84),
                     0.1: (0.845, 0.85), 0.5: (0.87, 0.86), 1.0: (0.70, 0.70)}),
}
#: the optional grids over several axes (``grid2d=True``, added to ``bn_ext``): grid -> (config entry,
#: point values -> (test plateau, train plateau)). ``noise_units`` (2 axes, one of them shape-changing) is
#: designed so that noise 0.05 with 8 units is best; ``bn3`` (3 axes, two of them tied over layers 0 and 2)
#: is shown as a table only
GRIDS_AXES = {
    "noise_units": ({"id": "noise_units", "title": "Input noise x hidden units", "base": "noise_0.01",
                     "axes": [{"name": "noise", "layer": 0, "param": "stddev", "values": [0.0, 0.05, 0.1]},
                              {"name": "units", "layer": 1, "param": "units", "values": [4, 8]}],
                     "baseline": "baseline"},
                    lambda p: (0.80 + {0.0: 0.0, 0.05: 0.08, 0.1: 0.04}[p["noise"]] - (0.03 if p["units"] == 4 else 0),
                               0.82 + 0.01 * (p["units"] == 8))),
    "bn3": ({"id": "bn3", "title": "Batch-norm momentum x epsilon x units", "base": "bn_input",
             "axes": [{"name": "momentum", "layers": [0, 2], "param": "momentum", "values": [0.9, 0.99]},
                      {"name": "epsilon", "layers": [0, 2], "param": "epsilon", "values": [0.001, 0.01]},
                      {"name": "units", "layer": 1, "param": "units", "values": [4, 8]}],
             "name": "bn3_m{momentum}_e{epsilon}_u{units}"},
            lambda p: (0.80 + 0.04 * (p["momentum"] == 0.9) + 0.01 * (p["units"] == 8), 0.84)),
}
DATASETS = {"circles_a": (60, 60), "circles_b": (30, 70)}  # n_train, n_test
#: the optional studies on data without a decision boundary (no boundary.npz), as the engine writes them:
#: ``images=True``: 4-class 6x6 images [N, 1, 6, 6]; ``sequences=True``: 2-class sequences [N, 12, 1]
CONV = {"conv2d": {"filters": 4, "kernel_size": 3, "activation": "relu"}}
LSTM = {"lstm": {"units": 8}}
IMAGE_STUDY = ("img", "Synthetic CNN study on images", "blocks_6x6", {
    "baseline": ([CONV, {"flatten": {}}, {"dense": {"units": 4, "activation": "softmax"}}], 5.0, 0.88, 0.95),
    "dropout_0.5": ([CONV, {"dropout": {"rate": 0.5}}, {"flatten": {}}, {"dense": {"units": 4, "activation": "softmax"}}],
                    6.0, 0.90, 0.92),
})
SEQUENCE_STUDY = ("seq", "Synthetic LSTM study on sequences", "waves_12", {
    "baseline": ([LSTM, DENSE_OUT], 8.0, 0.85, 0.90),
    "bn_after": ([LSTM, {"batch_norm": {}}, DENSE_OUT], 4.0, 0.86, 0.88),
})
EXTRA_DATASETS = {"blocks_6x6": (40, 60), "waves_12": (30, 50)}
N_IMAGE_CLASSES = 4
CLAIMS = [
    {"id": "bn_faster", "text": "BN after the ReLU reaches 80% sooner.", "study": "bn", "variant": "bn_after",
     "compare_to": "baseline", "metric": "epochs_to_80", "direction": "less", "threshold": 0, "alpha": 0.05},
    {"id": "bn_before_fast", "text": "BN before the ReLU passes 80% within 20 epochs.", "study": "bn",
     "variant": "bn_before", "metric": "epochs_to_80", "direction": "less", "threshold": 20, "alpha": 0.05},
    {"id": "dropout_helps", "text": "Dropout raises test accuracy.", "study": "drop", "variant": "dropout_0.4",
     "compare_to": "overfit", "metric": "final_test_acc", "direction": "greater", "threshold": 0, "alpha": 0.05},
    {"id": "overfit_fits", "text": "The overfit model fits the training set.", "study": "drop", "variant": "overfit",
     "metric": "final_train_acc", "direction": "greater", "threshold": 0.95, "alpha": 0.05},
]
PUBLISHED = {
    "sources": {"bn": "https://example.org/bn", "drop": "https://example.org/drop",
                "third_party": "https://example.org/third-party"},
    "studies": {
        "bn": {"baseline": {"train": 0.838, "test": 0.846}, "bn_after": {"train": 0.846, "test": 0.848},
               "bn_before": {"train": 0.826, "test": 0.830}},
        "drop": {"overfit": {"train": 1.0, "test": 0.757}, "dropout_0.4": {"train": 0.967, "test": 0.814}},
    },
    # shown only in the "bn_ext" study (grid=True); bn_no_momentum has no variant there
    "third_party": {"bn": {"bn_after": {"train": 0.832, "test": 0.844}, "bn_no_beta_gamma": {"train": 0.832, "test": 0.852},
                           "bn_no_momentum": {"train": 0.738, "test": 0.740},
                           "bn_input_and_after": {"train": 0.822, "test": 0.845}}},
}


#: the test files that run the workflow end to end (minutes each, the real-SLURM check the longest),
#: longest first: the workers take whole files (``--dist loadfile``) in collection order, so these
#: start at once and the short files fill in around them, instead of one long file starting last
#: and running alone at the end
LONGEST_FIRST = ("test_slurm.py", "test_workflow.py", "test_shared_runs.py", "test_faults.py",
                 "test_sequential_workflow.py", "test_resume.py")


def pytest_collection_modifyitems(config, items):
    """Collect the :data:`LONGEST_FIRST` files first (every other file, and the tests within a file,
    keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@dataclass
class SyntheticResults:
    """A synthetic results tree: ``results_dir`` (= root/results), its config and run dirs per study."""

    root: Path
    results_dir: Path
    config: dict
    run_dirs: dict[str, list[Path]] = field(default_factory=dict)

    def aggregate(self) -> None:
        """Write results/aggregate/{study}/ for every study."""
        from reglab.aggregate import aggregate_study

        for study, dirs in self.run_dirs.items():
            aggregate_study(dirs, self.results_dir / "aggregate" / study)


def _circles(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy concentric circles (like make_circles, without scikit-learn)."""
    y = (np.arange(n) % 2).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 1, 0.5, 1.0)
    x = np.c_[radius * np.cos(angle), radius * np.sin(angle)] + rng.normal(0, 0.1, (n, 2))
    return x.astype(np.float32), y


def _blocks(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """4-class 6x6 grey images in [0, 1], ``[n, 1, 6, 6]``: class k has a bright 3x3 block in quadrant k."""
    y = (np.arange(n) % N_IMAGE_CLASSES).astype(np.float32)
    x = rng.uniform(0, 0.3, (n, 1, 6, 6))
    for i, k in enumerate(y.astype(int)):
        r, c = divmod(k, 2)
        x[i, 0, 3 * r:3 * r + 3, 3 * c:3 * c + 3] += 0.7
    return np.clip(x, 0, 1).astype(np.float32), y


def _waves(n: int, rng: np.random.Generator, length: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """2-class noisy sine waves ``[n, length, 1]``: class 1 has twice the frequency of class 0."""
    y = (np.arange(n) % 2).astype(np.float32)
    t = np.arange(length) / length
    x = np.sin(2 * np.pi * (1 + y[:, None]) * t[None, :] + rng.uniform(0, 2 * np.pi, (n, 1)))
    return (x + rng.normal(0, 0.2, x.shape))[:, :, None].astype(np.float32), y


GENERATE = {"circles_a": _circles, "circles_b": _circles, "blocks_6x6": _blocks, "waves_12": _waves}


def _curve(rng, tau: float, top: float, n_points: int) -> np.ndarray:
    """A noisy rising accuracy curve over N_EPOCHS, quantised to 1/n_points like real accuracies."""
    e = np.arange(1, N_EPOCHS + 1)
    acc = 0.5 + (top - 0.5) * (1 - np.exp(-e / tau)) + rng.normal(0, 0.015, e.size)
    return np.clip(np.round(acc * n_points) / n_points, 0, 1)


def _write_job(run_dir: Path, study: str, variant: str, chunk: int, seeds: list[int], params: tuple,
               n_train: int, n_test: int, diverged: dict | None = None, boundary: bool = True) -> None:
    """history.csv, final.csv, boundary.npz (unless ``boundary`` is false) and meta.json of one job
    (``diverged``: seed -> epoch)."""
    layers, tau, top, train_top = params
    run_dir.mkdir(parents=True, exist_ok=True)
    hist, final, probs = [], [], []
    epoch_time = 0.01 + 0.002 * np.random.default_rng(chunk).random(N_EPOCHS)
    gx = gy = np.linspace(-1.5, 1.5, GRID, dtype=np.float32)
    r = np.hypot(*np.meshgrid(gx, gy))
    for seed in seeds:
        rng = np.random.default_rng(zlib.crc32(f"{study}/{variant}/{seed}".encode()))
        test_acc, train_acc = _curve(rng, tau, top, n_test), _curve(rng, tau * 0.8, train_top, n_train)
        div = (diverged or {}).get(seed, 0)
        if div:  # NaN from the diverged epoch on, as the engine writes it
            test_acc[div - 1:] = train_acc[div - 1:] = np.nan
        for e in range(N_EPOCHS):
            hist.append({"study": study, "variant": variant, "seed": seed, "epoch": e + 1,
                         "train_loss": -np.log(max(train_acc[e], 0.01)), "train_acc": train_acc[e],
                         "test_loss": -np.log(max(test_acc[e], 0.01)), "test_acc": test_acc[e],
                         "epoch_time_s": epoch_time[e]})
        final.append({"study": study, "variant": variant, "seed": seed, "train_loss": -np.log(train_acc[-1]),
                      "train_acc": train_acc[-1], "test_loss": -np.log(test_acc[-1]), "test_acc": test_acc[-1],
                      "diverged_epoch": div})
        prob = 1 / (1 + np.exp(-rng.uniform(6, 12) * (0.75 - r)))
        probs.append(np.full_like(prob, np.nan) if div else prob)
    pd.DataFrame(hist).to_csv(run_dir / "history.csv", index=False)
    pd.DataFrame(final).to_csv(run_dir / "final.csv", index=False)
    if boundary:
        np.savez_compressed(run_dir / "boundary.npz", seeds=np.asarray(seeds, dtype=np.int64), grid_x=gx, grid_y=gy,
                            prob=np.asarray(probs, dtype=np.float32))
    meta = {
        "schema_version": 1, "study": study, "variant": variant, "chunk": chunk, "seeds": seeds,
        "config_hash": "abc123def4567890", "spec": {"study": study, "variant": variant, "layers": layers},
        "fit_time_s": float(epoch_time.sum() + 0.5), "peak_rss_mb": 321.5, "threads": 1, "accelerator": "cpu",
        "engine": "fused" if chunk == 0 else "torch",
        "versions": {"python": "3.11.7", "torch": "2.13.0", "pytorch_lightning": "2.6.6", "numpy": "2.4.6",
                     "scikit_learn": "1.9.1", "snakemake": "9.27.1"},
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:01+00:00",
        "hostname": "testhost", "cpu": "Synthetic CPU",
    }
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def _axes_grid(entry: dict, plateaus, variants: dict) -> dict:
    """Expand a grid over several axes into ``variants`` as validation would (every combination, the first
    axis slowest; default names ``{id}_<axis><value>_...``); the entry with ``name``, ``variants`` and ``points``."""
    base_layers, tau = variants[entry["base"]][0], variants[entry["base"]][1]
    names = [a["name"] for a in entry["axes"]]
    template = entry.get("name", "{id}_" + "_".join(f"{n}{{{n}}}" for n in names))
    points, variant_names = [], []
    for combo in itertools.product(*(a["values"] for a in entry["axes"])):
        point = dict(zip(names, combo))
        variant = template.replace("{id}", entry["id"])
        for n, value in point.items():
            variant = variant.replace(f"{{{n}}}", str(value))
        layers = copy.deepcopy(base_layers)
        for axis in entry["axes"]:
            for i in axis.get("layers", [axis.get("layer")]):
                next(iter(layers[i].values()))[axis["param"]] = point[axis["name"]]
        variants[variant] = (layers, tau, *plateaus(point))
        points.append(point)
        variant_names.append(variant)
    return {**entry, "name": template, "variants": variant_names, "points": points}


def _grid_study(axes: bool = False) -> tuple[str, str, str, dict, list]:
    """The ``bn_ext`` study with its grid points expanded as validation would: (name, title, dataset,
    {variant: synthetic params}, grids with ``variants`` filled in); ``axes``: with :data:`GRIDS_AXES` too."""
    name, title, dataset, variants = GRID_STUDY
    variants, grids = dict(variants), []
    for entry, plateaus in (GRIDS_AXES.values() if axes else ()):
        grids.append(_axes_grid(entry, plateaus, variants))
    for entry, plateaus in GRIDS.values():
        base_layers, tau = variants[entry["base"]][0], variants[entry["base"]][1]
        names = []
        for value in entry["values"]:
            variant = entry["name"].replace("{value}", str(value))
            layers = copy.deepcopy(base_layers)
            next(iter(layers[entry["layer"]].values()))[entry["param"]] = value
            variants[variant] = (layers, tau, *plateaus[value])
            names.append(variant)
        grids.append({**entry, "variants": names})
    grids = grids[len(GRIDS_AXES):] + grids[:len(GRIDS_AXES)] if axes else grids  # the one-axis grids first
    return name, title, dataset, variants, grids


def write_synthetic_results(root: Path, titles: dict | None = None, claims: list | None = None,
                            published: bool = True, grid: bool = False,
                            diverged: dict | None = None, images: bool = False,
                            sequences: bool = False, grid2d: bool = False) -> SyntheticResults:
    """Write the synthetic tree under ``root/results`` and return it with its config.

    ``titles`` overrides study titles; ``claims`` replaces the default claims; ``published=False``
    points config["published"] at a file that does not exist; ``grid=True`` adds a third study,
    ``bn_ext`` (see :data:`GRID_STUDY`, :data:`GRIDS`), with two grids, per-variant training
    overrides and third-party published numbers; ``grid2d=True`` (with ``grid=True``) adds to it the grids
    over several axes of :data:`GRIDS_AXES`, after the others. ``images=True`` / ``sequences=True`` add a study
    ``img`` on 4-class images (:data:`IMAGE_STUDY`) / ``seq`` on binary sequences
    (:data:`SEQUENCE_STUDY`), after the others, whose runs write no boundary.npz. ``diverged`` maps ``(study, variant, seed)`` to the
    1-based epoch at which that seed diverges (see the module docstring).
    """
    results = root / "results"
    rng = np.random.default_rng(0)
    config = {"seeds": N_SEEDS, "seeds_per_job": SEEDS_PER_JOB, "threads": 1, "accelerator": "cpu",
              "datasets": {}, "studies": {}, "claims": list(CLAIMS if claims is None else claims),
              "published": str(root / ("published.yaml" if published else "absent.yaml"))}
    out = SyntheticResults(root, results, config)
    extra = [s for s, on in ((IMAGE_STUDY, images), (SEQUENCE_STUDY, sequences)) if on]
    for name, (n_train, n_test) in {**DATASETS, **{s[2]: EXTRA_DATASETS[s[2]] for s in extra}}.items():
        x_tr, y_tr = GENERATE[name](n_train, rng)
        x_te, y_te = GENERATE[name](n_test, rng)
        (results / "datasets").mkdir(parents=True, exist_ok=True)
        np.savez(results / "datasets" / f"{name}.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        generator = {"blocks_6x6": "load_digits", "waves_12": "make_sequences"}.get(name, "make_circles")
        config["datasets"][name] = {"generator": generator, "n_train": n_train,
                                    "params": {"n_samples": n_train + n_test, "noise": 0.1, "random_state": 1}}
    seeds = list(range(N_SEEDS))
    studies = {k: (*v, []) for k, v in STUDIES.items()}
    if grid:
        name, *rest = _grid_study(axes=grid2d)
        studies[name] = tuple(rest)
    for name, *rest in extra:
        studies[name] = (*rest, [])
    for study, (title, dataset, variants, grids) in studies.items():
        config["studies"][study] = {
            "title": (titles or {}).get(study, title), "dataset": dataset, "seeds": N_SEEDS,
            "training": {"optimizer": {"name": "adam", "lr": 0.001}, "epochs": N_EPOCHS, "batch_size": 32},
            "variants": {v: p[0] for v, p in variants.items()}, "grids": [], "variant_training": {},
        }
        if grids:
            config["studies"][study] |= {"grids": grids, "variant_training": copy.deepcopy(GRID_VARIANT_TRAINING)}
        n_train, n_test = {**DATASETS, **EXTRA_DATASETS}[dataset]
        packs = {}  # as reglab.config.study_packs: a grid's points in one pack named by its id
        for g in grids:
            packs.update({v: g["id"] for v in g["variants"] if v not in packs})
        for variant, params in variants.items():
            for chunk in range(0, -(-N_SEEDS // SEEDS_PER_JOB)):
                pack = packs.get(variant, variant)  # otherwise a pack of one
                run_dir = results / "runs" / study / pack / f"chunk{chunk}" / variant
                job_seeds = seeds[chunk * SEEDS_PER_JOB:(chunk + 1) * SEEDS_PER_JOB]
                job_diverged = {s: e for (st, v, s), e in (diverged or {}).items() if (st, v) == (study, variant)}
                _write_job(run_dir, study, variant, chunk, job_seeds, params, n_train, n_test, job_diverged,
                           boundary=dataset in DATASETS)
                out.run_dirs.setdefault(study, []).append(run_dir)
    if published:
        (root / "published.yaml").write_text(yaml.safe_dump(PUBLISHED, sort_keys=False))
    return out


@pytest.fixture(scope="session")
def make_synthetic_results():
    """Factory: ``make_synthetic_results(root, titles=..., claims=..., published=...)``."""
    return write_synthetic_results


@pytest.fixture
def synthetic_results(tmp_path) -> SyntheticResults:
    """The default synthetic results tree (runs and datasets, no aggregates) and its config."""
    return write_synthetic_results(tmp_path)


@pytest.fixture
def synthetic_aggregated(synthetic_results) -> SyntheticResults:
    """The default synthetic tree with results/aggregate/{study}/*.csv written."""
    synthetic_results.aggregate()
    return synthetic_results


@pytest.fixture
def synthetic_grid_aggregated(tmp_path) -> SyntheticResults:
    """The synthetic tree with the ``bn_ext`` grid study added, aggregated."""
    syn = write_synthetic_results(tmp_path, grid=True)
    syn.aggregate()
    return syn
