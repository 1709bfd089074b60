"""Same work, once: variants with one full spec (dataset, training, layers) and one set of seeds are
trained by one job, and every study (and variant) that lists them aggregates and shows that run under
its own names (reglab.config.run_owners, study_runs; the runs files; aggregation; the report)."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reglab import contract
from reglab.aggregate import ResultsError, aggregate_study
from reglab.cli import main
from reglab.config import (VARIANTS_PACK, content_key, content_spec, load_config, run_owners, study_packs,
                           study_runs, training_jobs, validate_config, variant_spec)
from reglab.report import load_boundaries, load_metas, render_report
from test_aggregate import write_tiny_job
from test_workflow import snakemake, tiny_config
from workdirs import make_workdir, read_without_timing  # tests/workdirs.py

CONFIG_PATH = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


@pytest.fixture(scope="module")
def shipped():
    return validate_config(load_config(CONFIG_PATH))


def trained(config) -> list[tuple[str, str, int]]:
    """(study, variant, chunk) of every variant a training job trains."""
    return [(j["study"], v, j["chunk"]) for j in training_jobs(config) for v in j["variants"]]


def trained_content(config, study, variant) -> list:
    """The (study, variant) listings that train the content of ``study``/``variant``."""
    spec = content_spec(variant_spec(config, study, variant))
    return [(s, v) for s, v, k in trained(config) if k == 0 and content_spec(variant_spec(config, s, v)) == spec]


# --------------------------------------------------------------------------- which jobs train what
def test_the_overfit_model_of_the_default_config_is_trained_once(shipped):
    listings = [(s, "overfit") for s in ("dropout", "noise", "dropout_ext", "noise_ext")]
    specs = [content_spec(variant_spec(shipped, s, v)) for s, v in listings]
    assert all(spec == specs[0] for spec in specs)  # the 500-unit model, four times in the config
    assert trained_content(shipped, "noise", "overfit") == [("dropout", "overfit")]
    owners = run_owners(shipped)
    assert {owners[listing] for listing in listings} == {("dropout", VARIANTS_PACK, "overfit")}
    # batchnorm_ext's baseline and bn_after are batchnorm's: not trained again
    assert not {("batchnorm_ext", "baseline"), ("batchnorm_ext", "bn_after")} & {(s, v) for s, v, _ in trained(shipped)}
    assert trained_content(shipped, "batchnorm_ext", "bn_after") == [("batchnorm", "bn_after")]
    assert [v for j in training_jobs(shipped) if j["study"] == "batchnorm_ext" for v in j["variants"]] == [
        "bn_no_affine", "bn_no_momentum", "bn_input"]
    # a grid point equal to an earlier study's variant is left out of its pack's job
    assert "dropout_0.4" not in study_packs(shipped, "dropout_ext")["dropout"]
    assert len(study_packs(shipped, "dropout_ext")["dropout"]) == 9


def test_pack_variants_trains_a_studys_single_variants_in_one_job(shipped):
    """With pack_variants (the shipped config), a study's variants that are neither grid points nor
    decomposition runs share one job per chunk; without it each has its own. The same (study,
    variant, chunk) are trained either way, grids and decomposition runs keep their packs, and a
    sequentially seeded study keeps a job per variant."""
    assert shipped["pack_variants"] is True
    apart = validate_config({**copy.deepcopy(shipped), "pack_variants": False})
    assert sorted(trained(apart)) == sorted(trained(shipped))
    assert study_packs(shipped, "noise") == {VARIANTS_PACK: ["input_0.01", "hidden_pre_0.1", "hidden_post_0.1"]}
    assert study_packs(apart, "noise") == {v: [v] for v in ("input_0.01", "hidden_pre_0.1", "hidden_post_0.1")}
    packed = study_packs(shipped, "dropout_ext")
    assert list(packed) == ["dropout", "dropout_maxnorm", VARIANTS_PACK]  # the grids keep theirs
    assert packed[VARIANTS_PACK] == ["input_dropout_0.2"]
    assert set(study_packs(shipped, "dropout")) == {VARIANTS_PACK, "overfit--sources", "dropout_0.4--sources"}
    assert len(training_jobs(shipped)) < len(training_jobs(apart))
    sequential = copy.deepcopy(shipped)
    sequential["studies"]["cnn"]["seeds"] = {"start": 4, "step": 2, "max": 8}
    sequential = validate_config(sequential)
    assert study_packs(sequential, "cnn") == {v: [v] for v in shipped["studies"]["cnn"]["variants"]}


def test_every_content_of_the_default_config_is_trained_exactly_once(shipped):
    keys = [content_key(shipped, s, v) for s, v, _ in trained(shipped)]
    assert len(keys) == len(set(keys))  # no content twice
    listed = [content_key(shipped, s, v) for s, study in shipped["studies"].items() for v in study["variants"]]
    assert set(listed) == set(keys)  # and every listed content is trained
    assert len(listed) - len(keys) >= 8  # at least the 8 repeats of the seed's studies in their extensions


def shared_config(**changes) -> dict:
    """The tiny config plus a study ``noise`` that lists dropout's ``overfit`` again (and one variant of its own)."""
    config = tiny_config()
    dropout = config["studies"]["dropout"]
    config["studies"]["noise"] = {
        "title": "Noise (tiny), sharing the overfit model of dropout", "dataset": "circles_100", "seeds": dropout["seeds"],
        "training": copy.deepcopy(dropout["training"]),
        "variants": {
            "overfit": copy.deepcopy(dropout["variants"]["overfit"]),
            "hidden_0.1": [{"dense": {"units": 64}}, {"gaussian_noise": {"stddev": 0.1}},
                           {"activation": {"name": "relu"}}, {"dense": {"units": 1, "activation": "sigmoid"}}],
        },
    }
    for path, value in changes.items():
        *keys, last = path.split("/")
        target = config
        for key in keys:
            target = target[int(key) if isinstance(target, list) else key]
        target[int(last) if isinstance(target, list) else last] = value
    return config


def test_a_variant_listed_by_two_studies_is_trained_by_the_first():
    config = validate_config(shared_config())
    assert ("noise", "overfit", 0) not in trained(config) and ("dropout", "overfit", 0) in trained(config)
    assert study_packs(config, "noise") == {"hidden_0.1": ["hidden_0.1"]}
    assert [j["chunk"] for j in training_jobs(config) if j["variants"] == ["overfit"]] == [0, 1]  # 4 seeds, 2 a job


@pytest.mark.parametrize("path, value", [
    ("studies/noise/variants/overfit/0/dense/units", 65),  # one layer value
    ("studies/noise/training/epochs", 41),  # training
    ("studies/noise/training/optimizer/lr", 0.002),
    ("studies/noise/seeds", 3),  # other seeds
    ("studies/noise/dataset", "circles_200"),  # other data
])
def test_variants_that_differ_in_one_value_or_in_seeds_are_not_shared(path, value):
    config = validate_config(shared_config(**{path: value}))
    assert ("noise", "overfit", 0) in trained(config) and ("dropout", "overfit", 0) in trained(config)
    assert run_owners(config)[("noise", "overfit")] == ("noise", "overfit", "overfit")
    assert content_key(config, "noise", "overfit") != content_key(config, "dropout", "overfit")


def test_identical_variants_of_one_study_share_too():
    config = tiny_config()
    config["studies"]["dropout"]["variants"]["overfit_again"] = copy.deepcopy(
        config["studies"]["dropout"]["variants"]["overfit"])
    config = validate_config(config)
    assert "overfit_again" not in study_packs(config, "dropout")
    runs = [r for r in study_runs(config) if r["variant"] == "overfit_again"]
    assert [r["dir"] for r in runs] == [f"results/runs/dropout/overfit/chunk{k}/overfit" for k in (0, 1)]


# --------------------------------------------------------------------------- the mapping
def test_study_runs_label_shared_runs_with_the_study_that_reads_them(shipped):
    runs = study_runs(shipped, "res")
    by_label = {(r["study"], r["variant"]): r["dir"] for r in runs}
    n_variants = sum(len(study["variants"]) for study in shipped["studies"].values())
    assert len(runs) == len(by_label) == n_variants  # one chunk each
    packed = f"res/runs/{{}}/{VARIANTS_PACK}/chunk0/{{}}"  # the shipped config packs single variants
    assert by_label["noise", "overfit"] == by_label["noise_ext", "overfit"] == packed.format("dropout", "overfit")
    assert by_label["batchnorm_ext", "bn_after"] == packed.format("batchnorm", "bn_after")
    assert by_label["noise_ext", "input_0.01"] == packed.format("noise", "input_0.01")
    assert by_label["dropout_ext", "dropout_0.3"] == "res/runs/dropout_ext/dropout/chunk0/dropout_0.3"
    jobs = {contract.job_dir("res", j["study"], j["pack"], j["chunk"]): j["variants"] for j in training_jobs(shipped)}
    for r in runs:  # every run is one that a job trains
        job, variant = r["dir"].rsplit("/", 1)
        assert variant in jobs[job]
    assert {(s, v) for s, study in shipped["studies"].items() for v in study["variants"]} == set(by_label)


# --------------------------------------------------------------------------- aggregation
def test_aggregation_relabels_a_shared_run(tmp_path):
    run = write_tiny_job(tmp_path / "runs" / "a" / "v" / "chunk0" / "v", study="a", variant="v")
    aggregate_study([run], tmp_path / "own")
    aggregate_study([{"dir": str(run), "study": "b", "variant": "w"}], tmp_path / "shared")
    for name in contract.AGGREGATES:
        own, shared = pd.read_csv(tmp_path / "own" / f"{name}.csv"), pd.read_csv(tmp_path / "shared" / f"{name}.csv")
        assert set(shared["variant"]) == {"w"} and set(own["variant"]) == {"v"}
        if "study" in shared:
            assert set(shared["study"]) == {"b"}
            own = own.assign(study="b")
        pd.testing.assert_frame_equal(own.assign(variant="w"), shared, check_exact=True, obj=name)


def test_the_runs_file_labels_reach_the_aggregates_through_the_command(tmp_path, capsys):
    a0 = write_tiny_job(tmp_path / "runs" / "a" / "v" / "chunk0" / "v", study="a", variant="v")
    b0 = write_tiny_job(tmp_path / "runs" / "b" / "u" / "chunk0" / "u", study="b", variant="u")
    runs = [{"dir": str(a0), "study": "b", "variant": "v"}, {"dir": str(b0), "study": "b", "variant": "u"}]
    runs_file = tmp_path / "b.runs.json"
    runs_file.write_text(json.dumps(runs))
    assert main(["aggregate", "--runs-file", str(runs_file), "--outdir", str(tmp_path / "agg")]) == 0
    per_seed = pd.read_csv(tmp_path / "agg" / "per_seed.csv")
    assert list(per_seed["study"].unique()) == ["b"] and list(per_seed["variant"].unique()) == ["v", "u"]

    runs_file.write_text(json.dumps([str(b0)]))  # a bare path keeps its meta.json's names
    assert main(["aggregate", "--runs-file", str(runs_file), "--outdir", str(tmp_path / "bare")]) == 0
    assert set(pd.read_csv(tmp_path / "bare" / "per_seed.csv")["variant"]) == {"u"}

    runs_file.write_text(json.dumps([{"dir": str(b0), "variant": "u"}]))
    assert main(["aggregate", "--runs-file", str(runs_file), "--outdir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{runs_file}: entry 0 is not a run" in err[0]


def with_spec(run_dir: Path, spec: dict) -> Path:
    meta = json.loads((run_dir / "meta.json").read_text())
    (run_dir / "meta.json").write_text(json.dumps({**meta, "spec": spec}))
    return run_dir


def test_one_variant_may_read_identical_trainings_of_other_names_but_not_other_specs(tmp_path):
    spec = {"dataset": {"name": "d"}, "training": {"epochs": 4}, "layers": [{"dense": {"units": 3}}]}
    a = with_spec(write_tiny_job(tmp_path / "a", study="a", variant="v", seeds=(0, 1)),
                  {"study": "a", "variant": "v", **spec})
    b = with_spec(write_tiny_job(tmp_path / "b", study="b", variant="w", chunk=1, seeds=(2, 3)),
                  {"study": "b", "variant": "w", **spec})
    labelled = [{"dir": str(d), "study": "c", "variant": "x"} for d in (a, b)]
    aggregate_study(labelled, tmp_path / "ok")
    assert pd.read_csv(tmp_path / "ok" / "summary.csv")[["variant", "n", "n_jobs"]].values.tolist() == [["x", 4, 2]]

    with_spec(b, {"study": "b", "variant": "w", **spec, "layers": [{"dense": {"units": 4}}]})
    with pytest.raises(ResultsError, match=r"b/meta.json: spec hash \(without names\) .* variant 'x' mixes results"):
        aggregate_study(labelled, tmp_path / "mixed")


def test_a_shared_run_is_still_checked_against_its_own_meta(tmp_path):
    run = write_tiny_job(tmp_path / "a", study="a", variant="v")
    history = pd.read_csv(run / "history.csv")
    history.assign(variant="w").to_csv(run / "history.csv", index=False)  # as if labelled by hand
    with pytest.raises(ResultsError, match="history.csv: variant \\['w'\\] does not match meta.json"):
        aggregate_study([{"dir": str(run), "study": "b", "variant": "w"}], tmp_path / "agg")


# --------------------------------------------------------------------------- the report
def study_section(html: str, study: str) -> str:
    """The report's section of one study."""
    match = re.search(rf'<section id="study-\d+-{re.escape(study)}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"no section of study {study}"
    return match.group(1)


def row_count(html: str, *cells: str) -> int:
    """How many table rows of ``html`` begin with these cells (header or data cells)."""
    pattern = r"<tr>\s*" + r"\s*".join(rf"<t[hd][^>]*>{re.escape(c)}</t[hd]>" for c in cells)
    return len(re.findall(pattern, html))


def test_the_report_finds_a_shared_variant_in_another_studys_folder(make_synthetic_results, tmp_path):
    syn = make_synthetic_results(tmp_path)
    bn_baseline = [d for d in syn.run_dirs["bn"] if d.name == "baseline"]
    config = syn.config
    config["studies"]["drop"]["variants"]["bn_base"] = config["studies"]["bn"]["variants"]["baseline"]
    def rel(run_dir):  # paths as the workflow writes them: found under results_dir by the layout
        return f"results/{run_dir.relative_to(syn.results_dir).as_posix()}"

    runs = [{"dir": rel(d), "study": "drop", "variant": d.name} for d in syn.run_dirs["drop"]]
    runs += [{"dir": rel(d), "study": "drop", "variant": "bn_base"} for d in bn_baseline]
    contract.write_json(runs, contract.study_runs_path(syn.results_dir, "drop"))

    shared = load_boundaries(syn.results_dir, "drop", ["overfit", "bn_base"])
    own = load_boundaries(syn.results_dir, "bn", ["baseline"])
    assert list(shared) == ["overfit", "bn_base"]
    assert np.array_equal(shared["bn_base"][2], own["baseline"][2]) and shared["bn_base"][3] == own["baseline"][3]
    metas = load_metas(syn.results_dir, "drop", ["overfit", "bn_base"])
    assert [(m["study"], m["variant"], m["chunk"]) for m in metas] == [
        ("drop", "overfit", 0), ("drop", "overfit", 1),
        ("drop", "bn_base (shared: run of bn/baseline)", 0), ("drop", "bn_base (shared: run of bn/baseline)", 1)]

    aggregate_study(syn.run_dirs["bn"], syn.results_dir / "aggregate" / "bn")
    aggregate_study([{**r, "dir": str(syn.root / r["dir"])} for r in runs], syn.results_dir / "aggregate" / "drop")
    out = tmp_path / "index.html"
    render_report(config, syn.results_dir, out)
    html = out.read_text()
    assert row_count(study_section(html, "drop"), "bn_base") == 1  # in the study's summary
    assert row_count(study_section(html, "bn"), "bn_base") == 0
    assert row_count(html, "drop", "bn_base (shared: run of bn/baseline)") == 2  # its jobs (provenance), per chunk
    assert row_count(html, "bn", "baseline") == 2


# --------------------------------------------------------------------------- the workflow
def small_shared_config() -> dict:
    """Two studies on one dataset that both list ``overfit``; few seeds and epochs (2 chunks)."""
    config = shared_config()
    del config["studies"]["batchnorm"], config["datasets"]["circles_200"]
    dropout = config["studies"]["dropout"]
    dropout["seeds"] = config["studies"]["noise"]["seeds"] = 3
    dropout["training"]["epochs"] = config["studies"]["noise"]["training"]["epochs"] = 5
    del dropout["variants"]["every_noise"], dropout["grids"]
    config["claims"] = [c for c in config["claims"] if c["study"] == "dropout"]
    return config


def dry_run_jobs(workdir: Path) -> list[dict]:
    """The jobs of a dry run: rule, and each ``key: value`` line (input, output, wildcards, ...)."""
    out = snakemake(workdir, "-n").stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out)[1:]:
        lines = block.splitlines()
        fields = dict(line.strip().split(": ", 1) for line in lines[1:] if ": " in line and line.startswith("    "))
        jobs.append({"rule": lines[0].split()[-1].rstrip(":"), **fields})
    return jobs


def test_the_plan_trains_a_shared_variant_once_and_both_aggregates_wait_for_it(tmp_path):
    work = make_workdir(tmp_path, small_shared_config())
    jobs = dry_run_jobs(work)
    trains = sorted(j["output"] for j in jobs if j["rule"] == "train")
    assert trains == sorted(f"results/runs/{s}/{p}/chunk{k}" for s, p in
                            [("dropout", "overfit"), ("dropout", "dropout_0.4"), ("noise", "hidden_0.1")]
                            for k in (0, 1))
    aggregates = {j["wildcards"]: j["input"].split(", ") for j in jobs if j["rule"] == "aggregate"}
    for study in ("dropout", "noise"):
        assert {"results/runs/dropout/overfit/chunk0", "results/runs/dropout/overfit/chunk1"} <= set(
            aggregates[f"study={study}"])
    assert "results/runs/dropout/dropout_0.4/chunk0" not in aggregates["study=noise"]

    snakemake(work, "--cores", "1", "results/specs/noise.runs.json")  # the runs file (no training needed)
    runs = json.loads((work / "results" / "specs" / "noise.runs.json").read_text())
    assert runs == [{"dir": f"results/runs/{d}/chunk{k}/{v}", "study": "noise", "variant": name}
                    for name, d, v in [("overfit", "dropout/overfit", "overfit"), ("hidden_0.1", "noise/hidden_0.1",
                                                                                  "hidden_0.1")]
                    for k in (0, 1)]


@pytest.mark.slow
def test_the_tiny_workflow_shares_a_run_between_two_studies(tmp_path):
    config = small_shared_config()
    work = make_workdir(tmp_path, config)
    snakemake(work, "--cores", "2")
    assert not (work / "results" / "runs" / "noise" / "overfit").exists()  # trained once, under dropout
    agg = work / "results" / "aggregate"
    per_seed = {s: pd.read_csv(agg / s / "per_seed.csv") for s in ("dropout", "noise")}
    assert set(per_seed["noise"]["study"]) == {"noise"} and set(per_seed["dropout"]["study"]) == {"dropout"}
    overfit = {s: ps[ps["variant"] == "overfit"].drop(columns="study").reset_index(drop=True)
               for s, ps in per_seed.items()}
    assert list(overfit["noise"]["seed"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(overfit["dropout"], overfit["noise"], check_exact=True)  # timings too: one run
    summaries = {s: read_without_timing(agg / s / "summary.csv") for s in ("dropout", "noise")}
    rows = {s: t[t["variant"] == "overfit"].drop(columns="study").reset_index(drop=True) for s, t in summaries.items()}
    pd.testing.assert_frame_equal(rows["dropout"], rows["noise"], check_exact=True)

    html = (work / "report" / "index.html").read_text()
    for study in ("dropout", "noise"):  # in each study's summary
        assert row_count(study_section(html, study), "overfit") >= 1
    assert row_count(html, "noise", "overfit (shared: run of dropout/overfit)") == 2  # its 2 jobs (provenance)
    assert row_count(html, "dropout", "overfit") == 2
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(work, "-n"))
