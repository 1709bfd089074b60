"""The benchmark command runs all three ways of training and reports per-replica-epoch ratios."""

from pathlib import Path

import pytest
import torch

from reglab import bench
from reglab.config import load_config, validate_config, variant_spec
from reglab.data import make_dataset


def test_bench_reports_times_and_ratios(capsys):
    report = bench.main(["--epochs", "2", "--seeds", "2", "--lightning-seeds", "1", "--cases", "dropout", "rnn"])
    assert set(report) == {"dropout", "rnn"}
    for case in report.values():
        assert all(case[k] > 0 for k in ("engine", "torch_loop", "lightning"))
        assert case["ratio_loop"] == pytest.approx(case["torch_loop"] / case["engine"])
    out = capsys.readouterr().out
    assert "vs loop" in out and "dropout" in out and "rnn" in out


@pytest.mark.parametrize("study, variant", [("dropout", "dropout_0.4"), ("batchnorm", "bn_before"), ("cnn", "bn"),
                                            ("rnn", "baseline")])
def test_baseline_models_match_the_variant_shapes(study, variant):
    config = validate_config(load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml"))
    spec = variant_spec(config, study, variant)
    data = make_dataset(spec["dataset"])
    model = bench.torch_model(spec["layers"], data["x_train"].shape[1:], seed=0)
    logits = model(torch.as_tensor(data["x_train"][:5]))
    units = spec["layers"][-1]["dense"]["units"]
    assert logits.shape == (5, units)
