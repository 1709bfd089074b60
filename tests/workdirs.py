"""A copy of the workflow in a temporary directory, for tests that run or plan it in isolation."""

import shutil
from pathlib import Path

import yaml

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
