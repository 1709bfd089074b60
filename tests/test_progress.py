"""Live progress of a training job: a flushed log line every ~5% of the epochs, and a per-epoch
metrics CSV that can be read while the job runs."""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reglab.data import make_dataset, save_dataset
from reglab.module import ReplicaClassifier
from reglab.train import Progress, train_points

DENSE = {"activation": "linear", "kernel_initializer": "glorot_uniform", "use_bias": True}
HEAD = {"dense": {**DENSE, "units": 1, "activation": "sigmoid"}}
DATA = {"generator": "make_circles", "params": {"n_samples": 80, "noise": 0.1, "random_state": 1}, "n_train": 40}
LINE = re.compile(r"^model (\d+) \((\d+) replicas\) epoch (\d+)/(\d+): train acc ([\d.]+) ± ([\d.]+), "
                  r"test acc ([\d.]+) ± ([\d.]+); [\d.]+ (s|min \d+ s) elapsed, ETA .+$")


def spec(variant, rate, epochs=40):
    layers = [{"dense": {**DENSE, "units": 6, "activation": "relu"}}, {"dropout": {"rate": rate}}, HEAD]
    return {"study": "s", "variant": variant, "dataset": {"name": "d", **DATA},
            "training": {"optimizer": {"name": "adam", "lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
                         "epochs": epochs, "batch_size": 16}, "layers": layers}


@pytest.fixture(scope="module")
def data():
    return make_dataset(DATA)


def test_a_line_every_twentieth_of_the_epochs_with_the_replicas_mean_and_std(data, tmp_path):
    log = io.StringIO()
    specs = [spec("a", 0.2), spec("b", 0.4)]
    results = train_points(specs, data, [0, 1, 2], max_replicas=4, progress_csv=tmp_path / "m.csv", log=log)
    lines = log.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    # 6 replicas in models of at most 4: two models, each reporting 20 times (40 epochs, blocks of 2)
    models = [(int(m[1]), int(m[2])) for m in parsed]
    assert models == [(1, 4)] * 20 + [(2, 2)] * 20
    assert [int(m[3]) for m in parsed] == list(range(2, 41, 2)) * 2
    # model 1 holds variant a's three seeds and b's seed 0; its last line is their final-epoch accuracy
    last = parsed[19]
    train_acc = np.concatenate([results[0].history["train_acc"][-1], results[1].history["train_acc"][-1][:1]])
    test_acc = np.concatenate([results[0].history["test_acc"][-1], results[1].history["test_acc"][-1][:1]])
    assert float(last[5]) == pytest.approx(train_acc.mean(), abs=5e-4)
    assert float(last[6]) == pytest.approx(train_acc.std(), abs=5e-4)
    assert float(last[7]) == pytest.approx(test_acc.mean(), abs=5e-4)
    assert float(last[8]) == pytest.approx(test_acc.std(), abs=5e-4)
    assert "\r" not in log.getvalue()


def test_the_metrics_csv_holds_every_epoch_and_replica_as_the_history_does(data, tmp_path):
    specs = [spec("a", 0.2), spec("b", 0.4)]
    results = train_points(specs, data, [0, 1, 2], progress_csv=tmp_path / "m.csv", log=io.StringIO())
    frame = pd.read_csv(tmp_path / "m.csv")
    assert len(frame) == 40 * 6
    for p, variant in enumerate(("a", "b")):
        for r, seed in enumerate((0, 1, 2)):
            rows = frame[(frame.variant == variant) & (frame.seed == seed)].sort_values("epoch")
            assert rows.epoch.tolist() == list(range(1, 41))
            for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
                np.testing.assert_array_equal(rows[metric].to_numpy(np.float32), results[p].history[metric][:, r])


def test_the_csv_is_readable_while_the_job_runs(data, tmp_path):
    """After each block the rows so far are on disk: read them from inside the next report."""
    path = tmp_path / "m.csv"
    seen = []

    class Peek(Progress):
        def __call__(self, module: ReplicaClassifier, first: int, last: int) -> None:
            seen.append((last, len(pd.read_csv(path))))
            super().__call__(module, first, last)

    progress = Peek(40 * 2, path, io.StringIO())
    progress.begin_model(["a", "a"])
    from reglab.train import fit_model

    fit_model(spec("a", 0.2), data, [0, 1], progress=progress)
    assert seen[0] == (2, 0)
    assert seen[5] == (12, 10 * 2)  # before block 6 is written: 5 blocks of 2 epochs x 2 replicas
    assert len(pd.read_csv(path)) == 40 * 2


def test_the_train_command_logs_progress_and_writes_the_metrics_csv(data, tmp_path):
    save_dataset(data, tmp_path / "d.npz")
    (tmp_path / "specs.json").write_text(json.dumps([spec("a", 0.2, epochs=20)]))
    out = subprocess.run([sys.executable, "-m", "reglab", "train", "--spec-file", str(tmp_path / "specs.json"),
                          "--dataset", str(tmp_path / "d.npz"), "--seeds", "0,1", "--progress-csv",
                          str(tmp_path / "logs" / "m.csv"), "--outdir", str(tmp_path / "out")],
                         capture_output=True, text=True, check=True)
    lines = [line for line in out.stdout.splitlines() if LINE.match(line)]
    assert [int(LINE.match(line)[3]) for line in lines] == list(range(1, 21))
    assert len(pd.read_csv(tmp_path / "logs" / "m.csv")) == 20 * 2
