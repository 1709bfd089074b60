"""One look of a sequentially seeded study: its claims tested on the seeds so far with
group-sequential boundaries (:mod:`reglab.sequential`), and the variants that need more seeds.

A study with ``seeds: {start, step, max}`` trains look 0's seeds (``start`` per variant) for every
variant; after each look the workflow's checkpoint calls :func:`run_look`. For each claim of the
study it recomputes the claim's one-sided p-values (:func:`reglab.stats.check_claim`, raw) on the
first n_j seeds of every look j so far and runs the group-sequential test over them
(:func:`reglab.sequential.trace_claim`) at ``alpha / m``, ``m`` the number of claims in the report
(Bonferroni: the sequential claims and the others share the family-wise error rate; see
:func:`sequential_alpha`). A claim stays decided once decided. The next look trains only the
variants named by claims still undecided; the study stops when none is left or at ``max``.
Variants no claim names get look 0's seeds only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reglab import contract
from reglab.config import seed_schedule
from reglab.sequential import trace_claim
from reglab.stats import check_claim

DECISION = "decision.json"


def claim_variants(claim: dict) -> set[str]:
    """Every variant a claim (or any of its parts) compares."""
    tests = claim.get("parts") or [claim]
    return {t[key] for t in tests for key in ("variant", "compare_to") if t.get(key)}


def sequential_alpha(claim: dict, config: dict) -> float:
    """The level a sequential claim's group-sequential test spends: its alpha over the report's claims."""
    return float(claim.get("alpha", 0.05)) / max(1, len(config.get("claims", [])))


def study_traces(config: dict, study: str, per_seed: pd.DataFrame, look: int) -> dict[str, dict]:
    """claim id -> :class:`reglab.sequential.BoundaryTrace` (as a dict) of each claim of ``study`` over
    looks 0..``look``, from the per-seed values of every seed trained so far."""
    schedule = seed_schedule(config, study)
    seeds = pd.to_numeric(per_seed["seed"])
    traces = {}
    for claim in (c for c in config.get("claims", []) if c["study"] == study):
        p, p_opposite = [], []
        for n in schedule.looks[: look + 1]:
            result = check_claim(claim, per_seed[seeds < n], effects=False)  # its p-values only
            p.append(result["p_value"])
            p_opposite.append(result["p_value_opposite"])
        trace = trace_claim(p, schedule, sequential_alpha(claim, config), p_values_opposite=p_opposite,
                            claim_id=claim["id"])
        traces[claim["id"]] = trace.to_dict()
    return traces


def decide_look(config: dict, study: str, per_seed: pd.DataFrame, look: int) -> dict:
    """The decision after look ``look`` (0-based): the claims' traces, the variants the next look
    trains (``active``) and whether the study stops."""
    schedule = seed_schedule(config, study)
    traces = study_traces(config, study, per_seed, look)
    open_claims = [c for c in config.get("claims", []) if c["study"] == study
                   and traces[c["id"]]["decision"] == "continue"]
    active = sorted(set().union(*(claim_variants(c) for c in open_claims))) if open_claims else []
    last = look + 1 >= schedule.n_looks
    return {"study": study, "look": look, "n": schedule.looks[look],
            "schedule": {"start": schedule.start, "step": schedule.step, "max": schedule.max},
            "claims": traces, "active": [] if last else active, "stop": last or not active}


def run_look(config: dict, study: str, look: int, runs: list[dict], outdir: str | Path) -> dict:
    """Aggregate the study's runs so far into ``outdir`` (the look's own tables), decide, and write
    ``outdir/decision.json``; returns the decision."""
    from reglab.aggregate import aggregate_study

    outdir = Path(outdir)
    aggregate_study(runs, outdir)
    per_seed = pd.read_csv(outdir / "per_seed.csv")
    decision = decide_look(config, study, per_seed, look)
    contract.write_json(decision, outdir / DECISION)
    return decision


def read_traces(results: str | Path, study: str) -> list[dict]:
    """The decisions of every look a study ran, in order (none for a study without looks)."""
    base = Path(contract.sequential_look_dir(results, study, 0)).parent
    looks = sorted(base.glob("look*/" + DECISION), key=lambda p: int(p.parent.name[4:]))
    return [contract.read_json(p) for p in looks]
