"""A copy of the workflow in a temporary directory, for tests that run or plan it in isolation."""

import shutil
from pathlib import Path

import pandas as pd
import yaml

from reglab.contract import METRICS

REPO = Path(__file__).resolve().parents[1]


def make_workdir(path: Path, config: dict | None = None) -> Path:
    """Copy Snakefile, workflow/, config/ and profiles/ to ``path``; ``config`` replaces config/tiny.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", path)
    for sub in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / sub, path / sub, dirs_exist_ok=True)
    if config is not None:
        (path / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


#: per-seed metrics that are wall times: they differ between runs of the same command
TIME_METRICS = tuple(name for name, m in METRICS.items() if m.unit == "s")


def read_without_timing(path: Path) -> pd.DataFrame:
    """A results CSV without its wall-time columns (``*_s``, ``*_mb`` and statistics of time metrics)."""
    frame = pd.read_csv(path)
    timing = [c for c in frame.columns
              if c.endswith(("_s", "_mb")) or c.startswith(tuple(f"{m}_" for m in TIME_METRICS))]
    return frame.drop(columns=timing)
