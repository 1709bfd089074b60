"""Command line of the workflow's steps: ``python -m reglab <step> ...``; each rule calls one step.

Bad arguments or unreadable inputs end with a one-line error naming the problem (exit status 2)
before any work starts. A file that cannot be written or read (disk full, read-only folder) ends
with a one-line error naming it (exit status 1); files already there are left as they were.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import zipfile
from pathlib import Path


class UsageError(ValueError):
    """An argument that parses but cannot be used (e.g. a spec without its keys), as one line."""


def parse_json(text: str):
    """The JSON value in ``text``; invalid JSON is an argparse type error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None


def json_object(text: str) -> dict:
    """argparse type: a JSON object."""
    value = parse_json(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def json_objects(text: str) -> list[dict]:
    """argparse type: a JSON object or a list of JSON objects, as a list."""
    value = parse_json(text)
    value = value if isinstance(value, list) else [value]
    if not value or not all(isinstance(v, dict) for v in value):
        raise argparse.ArgumentTypeError("must be a JSON object or a non-empty list of JSON objects")
    return value


def seed_list(text: str) -> list[int]:
    """argparse type: comma-separated non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct non-negative integers")
    return seeds


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def existing_file(text: str) -> Path:
    """argparse type: a path to an existing file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a path to an existing directory."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {text}")
    return path


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def cmd_dataset(args: argparse.Namespace) -> None:
    from reglab.data import DataError, make_dataset, save_dataset

    try:
        data = make_dataset(args.spec)
    except DataError:  # a user's file: its message names the file and the column
        raise
    except KeyError as exc:
        raise UsageError(f"--spec: not a dataset spec (no key {exc})") from None
    except (TypeError, ValueError) as exc:  # an unknown generator parameter or a bad value
        raise UsageError(f"--spec: not a valid dataset spec ({exc})") from None
    save_dataset(data, args.out)


SPEC_KEYS = ("study", "variant", "dataset", "training", "layers")


def check_specs(specs: list[dict]) -> None:
    """Each training spec has the keys of a variant spec (reglab.config.variant_spec)."""
    for i, spec in enumerate(specs):
        missing = [key for key in SPEC_KEYS if key not in spec]
        if missing:
            raise UsageError(f"--spec: spec {i} is not a variant spec (missing keys {missing})")


def cmd_train(args: argparse.Namespace) -> None:
    from reglab.contract import read_json_list
    from reglab.data import DataError, load_dataset

    if args.spec is None:
        args.spec = read_json_list(args.spec_file, "variant specs")
        if not all(isinstance(spec, dict) for spec in args.spec):
            raise UsageError(f"--spec-file {args.spec_file}: expected a JSON list of variant specs")
    check_specs(args.spec)
    try:
        data = load_dataset(args.dataset)
    except zipfile.BadZipFile as exc:  # a cut-off npz (data.load_dataset lets this one through)
        raise DataError(f"dataset file {args.dataset}: cannot be read ({exc})") from None
    import numpy as np

    from reglab.provenance import code_hash
    from reglab.results import write_run  # torch and Lightning: only once the inputs are good
    from reglab.train import train_points

    if args.code_hash is not None and args.code_hash != code_hash():  # recorded: this job's own
        print(f"warning: this job's code hash {code_hash()} is not the workflow's {args.code_hash} (the code or "
              "versions changed since snakemake started, or the job runs in another environment)", flush=True)
    started = now()  # a pack's variants train together, as replicas of as few models as they allow
    results = train_points(args.spec, data, args.seeds, threads=args.threads, accelerator=args.accelerator,
                           max_replicas=args.max_replicas, progress_csv=args.progress_csv, log=sys.stdout,
                           engine=args.engine)
    for spec, result in zip(args.spec, results):
        write_run(args.outdir / spec["variant"], spec, result, args.chunk, started)
        acc = result.final["test_acc"]
        print(f"{spec['study']}/{spec['variant']} seeds {args.seeds}: test accuracy "
              f"{np.nanmean(acc):.3f} +- {np.nanstd(acc):.3f}, fit {result.fit_time_s:.1f}s", flush=True)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from reglab.aggregate import aggregate_study
    from reglab.contract import read_study_runs

    # the runs file labels each run with the study and variant it counts for (a shared run is another's)
    runs = args.runs or read_study_runs(args.runs_file)
    aggregate_study(runs, args.outdir)


def cmd_report(args: argparse.Namespace) -> None:
    from reglab.contract import read_validated_config
    from reglab.provenance import git_state, machine, versions
    from reglab.report import render_report

    config, config_hash = read_validated_config(args.config)  # validated by the workflow: trusted
    info = {}
    if args.run_info is not None and args.run_info.is_file():
        try:
            info = json.loads(args.run_info.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"--run-info {args.run_info}: not valid JSON ({exc})") from None
        if not isinstance(info, dict):
            raise UsageError(f"--run-info {args.run_info}: must be a JSON object")
    finished = dt.datetime.now(dt.timezone.utc)
    prov = {
        "command": info.get("command", "unknown"),
        "started": info.get("started", "unknown"),
        "report rendered": finished.isoformat(timespec="seconds"),
        "git": git_state(),
        "config hash": config_hash,
        "versions": versions(),
        **machine(),
        "threads per training job": config["threads"],
    }
    if "started" in info:
        prov["wall time"] = f"{(finished - dt.datetime.fromisoformat(info['started'])).total_seconds():.0f} s"
    render_report(config, args.results, args.out, provenance=prov, workers=args.jobs)


def cmd_compare(args: argparse.Namespace) -> None:
    from reglab.compare import compare, summary_line

    result = compare(args.a, args.b, args.out, delta=args.delta, alpha=args.alpha, out_csv=args.csv)
    print(f"{summary_line(result)}; wrote {args.out}" + (f" and {args.csv}" if args.csv else ""))


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number > 0")
    return value


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{value} is not < 1")
    return value


def cmd_kernels(args: argparse.Namespace) -> None:
    import json

    import numba

    from reglab.contract import write_text
    from reglab.fused import FAMILIES, compile_kernels

    families = args.family or list(FAMILIES)
    seconds = compile_kernels(families)
    print(f"fused engine's loops ({', '.join(families)}) compiled or loaded from numba's cache in {seconds:.1f} s",
          flush=True)
    write_text(json.dumps({"numba": numba.__version__, "families": families, "seconds": round(seconds, 3)},
                          indent=2), args.out)


def cmd_docs(args: argparse.Namespace) -> None:
    from reglab.configdocs import render

    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
        if current != text:
            raise UsageError(f"{args.out} is not what the schema and the layer registry give: "
                             "run python -m reglab docs")
        return
    from reglab.contract import write_text

    write_text(text, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reglab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dataset", help="generate one dataset")
    p.add_argument("--spec", type=json_object, required=True, help="the dataset's config entry as JSON")
    p.add_argument("--out", type=Path, required=True, help="npz file to write")
    p.set_defaults(func=cmd_dataset)

    from reglab.fused import FAMILIES  # numpy only, no torch

    p = sub.add_parser("kernels", help="compile the fused engine's loops once, before training jobs load them")
    p.add_argument("--family", action="append", choices=FAMILIES,
                   help="the loop of this family of models (repeatable; default: every family's)")
    p.add_argument("--out", type=Path, required=True, help="a JSON file saying so (the workflow's output)")
    p.set_defaults(func=cmd_kernels)

    p = sub.add_parser("train", help="train one chunk of seeds of a pack of variants")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--spec", type=json_objects,
                      help="a variant spec as JSON, or a list of them (trained one after another)")
    what.add_argument("--spec-file", type=existing_file,
                      help="a JSON file with a list of variant specs (the workflow's results/specs/STUDY/PACK.json)")
    p.add_argument("--dataset", type=existing_file, required=True, help="dataset npz")
    p.add_argument("--seeds", type=seed_list, required=True, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--chunk", type=int, default=0, help="chunk index (recorded)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--max-replicas", type=positive_int, default=None,
                   help="at most this many (variant, seed) replicas in one model (memory); more train in turns")
    p.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="cpu")
    p.add_argument("--engine", choices=("fused", "torch"), default="fused",
                   help="fused: the compiled loop for the models it covers, autograd for the rest; torch: autograd only")
    p.add_argument("--code-hash", default=None,
                   help="the code hash the workflow planned the job with (reglab.provenance.code_hash); a job "
                        "whose own differs says so in its log. meta.json records the job's own")
    p.add_argument("--progress-csv", type=Path, default=None,
                   help="CSV to append each epoch's per-replica metrics to while training (readable mid-run)")
    p.add_argument("--outdir", type=Path, required=True, help="directory for one run directory per variant")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("aggregate", help="aggregate one study's runs")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--runs", type=existing_dir, nargs="+", help="run directories")
    what.add_argument("--runs-file", type=existing_file,
                      help="a JSON list of run directories, or of {dir, study, variant} to aggregate a run under other "
                           "names (the workflow's results/specs/STUDY.runs.json)")
    p.add_argument("--outdir", type=Path, required=True, help="directory for the aggregate CSVs")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("report", help="render report/index.html")
    p.add_argument("--config", type=existing_file, required=True,
                   help="the validated config the workflow wrote (results/config.json)")
    p.add_argument("--results", type=existing_dir, required=True, help="results directory")
    p.add_argument("--run-info", type=Path, default=None, help="JSON with the workflow's command and start time")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.add_argument("--jobs", type=positive_int, default=1, help="processes drawing the studies' figures")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two runs' results folders variant by variant (one HTML page)")
    p.add_argument("a", type=Path, metavar="A", help="the first results folder, e.g. results")
    p.add_argument("b", type=Path, metavar="B", help="the second results folder, e.g. runs/laptop/results")
    p.add_argument("--delta", type=positive_float, default=0.01,
                   help="equivalence margin of the TOST verdict, in accuracy (0.01: one percentage point)")
    p.add_argument("--alpha", type=probability, default=0.05, help="significance level of the TOST verdict")
    p.add_argument("--out", type=Path, default=Path("compare.html"), help="HTML file to write")
    p.add_argument("--csv", type=Path, default=None, help="also write the comparison table as CSV")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("docs", help="write config/README.md from the config schema and the layer registry")
    p.add_argument("--out", type=Path, default=Path("config/README.md"), help="markdown file to write")
    p.add_argument("--check", action="store_true", help="only check that the file is current (exit 2 if not)")
    p.set_defaults(func=cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from reglab.config import ConfigError
    from reglab.contract import ResultsError
    from reglab.data import DataError

    try:
        args.func(args)
    except (UsageError, ConfigError, DataError, ResultsError) as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only folder, ...: one line naming the file
        path = exc.filename2 or exc.filename  # os.replace(tmp, path) names path second
        where = f"{path}: " if path else ""
        print(f"{parser.prog} {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
