"""Sequential seeding in the workflow: a checkpoint after each look tests the study's claims with
group-sequential boundaries and trains more seeds only for the variants of undecided claims."""

import json
import math

import pandas as pd
import pytest
import yaml

from reglab import sequential
from reglab.config import ConfigError, validate_config

from test_workflow import snakemake, tiny_config
from workdirs import make_workdir

MLP = [{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 1, "activation": "sigmoid"}}]


def sequential_config() -> dict:
    """One study, seeds {start 8, step 4, max 12}: two looks. ``frozen`` (learning rate 1e-9) stays at
    its initial training accuracy, far below ``overfit``'s (decided at look 0); ``overfit`` and
    ``overfit_copy`` train identically (one shared run), so their comparison is never decided."""
    base = tiny_config()
    return {
        **{k: base[k] for k in ("threads", "accelerator")},
        "seeds": 3,
        "seeds_per_job": None,
        "datasets": {"circles_100": base["datasets"]["circles_100"]},
        "studies": {"seq": {
            "title": "Sequential (tiny)", "dataset": "circles_100", "seeds": {"start": 8, "step": 4, "max": 12},
            "training": {"optimizer": {"name": "adam", "lr": 0.05}, "epochs": 30, "batch_size": 32},
            "variants": {"overfit": MLP, "overfit_copy": MLP,
                         "frozen": {"layers": MLP, "training": {"optimizer": {"name": "adam", "lr": 1e-9}}}},
        }},
        "claims": [
            {"id": "frozen_worse", "text": "A frozen network fits worse.", "study": "seq",
             "variant": "frozen", "compare_to": "overfit", "metric": "final_train_acc", "direction": "less"},
            {"id": "copy_better", "text": "The copy is better (it is not).", "study": "seq",
             "variant": "overfit_copy", "compare_to": "overfit", "metric": "final_test_acc", "direction": "greater"},
        ],
    }


@pytest.mark.slow
def test_more_seeds_only_for_the_variants_of_undecided_claims(tmp_path):
    work = make_workdir(tmp_path / "w", sequential_config())
    snakemake(work, "--cores", "2")
    runs = tmp_path / "w" / "results" / "runs" / "seq"
    assert sorted(p.name for p in (runs / "frozen").iterdir()) == ["chunk0"]  # decided at look 0
    assert sorted(p.name for p in (runs / "overfit").iterdir()) == ["chunk0", "chunk1"]
    assert not (runs / "overfit_copy").exists()  # shares overfit's runs

    looks = tmp_path / "w" / "results" / "sequential" / "seq"
    first = json.loads((looks / "look0" / "decision.json").read_text())
    last = json.loads((looks / "look1" / "decision.json").read_text())
    assert first["claims"]["frozen_worse"]["decision"] == "supported"
    assert first["active"] == ["overfit", "overfit_copy"] and not first["stop"]
    assert last["claims"]["copy_better"]["decision"] == "inconclusive" and last["stop"]
    # the boundaries are Lan-DeMets O'Brien-Fleming at alpha / (number of claims), looks at 8 and 12 seeds
    trace = last["claims"]["copy_better"]
    assert trace["looks"] == [8, 12]
    assert trace["upper"] == pytest.approx(list(sequential.boundaries((8 / 12, 1.0), 0.05 / 2)), abs=1e-9)
    assert first["claims"]["frozen_worse"]["z"][0] >= trace["upper"][0]

    per_seed = pd.read_csv(tmp_path / "w" / "results" / "aggregate" / "seq" / "per_seed.csv")
    counts = per_seed.groupby("variant")["seed"].apply(sorted).to_dict()
    assert counts == {"frozen": list(range(8)), "overfit": list(range(12)), "overfit_copy": list(range(12))}
    html = (tmp_path / "w" / "report" / "index.html").read_text()
    assert "Sequential seeding" in html and "stopped at look 1 (8 seeds per variant)" in html
    assert snakemake(work, "-n", "--cores", "2").stdout.count("Nothing to be done") == 1


def test_a_bad_schedule_names_its_key():
    config = tiny_config()
    config["studies"]["dropout"]["seeds"] = {"start": 10, "step": 5, "max": 6}
    with pytest.raises(ConfigError, match=r"studies\.dropout\.seeds: .*'max' \(6\) must be >= 'start' \(10\)"):
        validate_config(config)
    config["studies"]["dropout"]["seeds"] = {"start": 2, "step": 5, "max": 6}
    with pytest.raises(ConfigError, match=r"studies\.dropout\.seeds"):
        validate_config(config)


def test_a_schedule_plans_one_training_job_per_look(tmp_path):
    from reglab.config import chunk_seeds

    config = validate_config(sequential_config())
    assert [chunk_seeds(config, "seq", k) for k in range(2)] == [list(range(8)), [8, 9, 10, 11]]
    work = make_workdir(tmp_path / "w", sequential_config())
    out = snakemake(work, "-n", "--cores", "2").stdout
    assert "results/runs/seq/overfit/chunk0" in out and "chunk1" not in out  # look 1 waits for the checkpoint
    assert math.isclose(yaml.safe_load(yaml.safe_dump(config["studies"]["seq"]["seeds"]))["max"], 12)


def test_a_look_keeps_only_the_variants_of_undecided_claims():
    """decide_look on hand-made per-seed values: 'frozen' is far below 'overfit' in every seed (decided
    at look 0), 'overfit_copy' equals 'overfit' (undecided): only the latter pair goes on."""
    from reglab.looks import decide_look

    config = validate_config(sequential_config())
    rows = []
    for seed in range(8):
        for variant, acc in (("overfit", 0.9 + seed / 1000), ("overfit_copy", 0.9 + seed / 1000),
                             ("frozen", 0.5 + seed / 1000)):
            rows.append({"study": "seq", "variant": variant, "seed": seed, "final_train_acc": acc,
                         "final_test_acc": acc})
    decision = decide_look(config, "seq", pd.DataFrame(rows), 0)
    assert decision["claims"]["frozen_worse"]["decision"] == "supported"
    assert decision["claims"]["copy_better"]["decision"] == "continue"
    assert decision["active"] == ["overfit", "overfit_copy"] and not decision["stop"] and decision["n"] == 8
    # each claim spends alpha / 2 (two claims in the report): its boundaries are those of 0.025
    assert decision["claims"]["copy_better"]["upper"] == pytest.approx(
        list(sequential.boundaries((8 / 12, 1.0), 0.025)))
    last = decide_look(config, "seq", pd.DataFrame(rows), 1)
    assert last["stop"] and last["active"] == []
