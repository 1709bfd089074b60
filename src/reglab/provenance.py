"""Where a result came from: versions, code commit, machine, and the hash of the code that computed it."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "pytorch-lightning", "numba", "numpy", "scikit-learn", "pandas", "scipy", "matplotlib", "snakemake")
REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parent
LOCK = REPO / "requirements.lock"

#: The modules (src/reglab/NAME.py) whose code decides what a training job computes and writes: the
#: engine (layers and their registry, model, Lightning module, optimizers, training loop, replica
#: planning, shapes), the dataset loader and the writer of the run files. Not in it: ``config``
#: (what it decides for a job is in the job's spec, whose own hash reruns the job), ``contract``
#: (file layout and the metric registry the report reads; a change of the run files' format changes
#: its SCHEMA_VERSION), ``provenance``, ``cli``, and what only aggregates, tests or renders results
#: (aggregate, stats, plots, report, templates, configdocs, bench).
TRAINING_MODULES = ("conv", "data", "fused", "fusedkernels", "layerkinds", "layers", "model", "module", "optim",
                    "recurrent", "replicas", "results", "shapes", "train")
#: The modules whose code decides what a dataset job writes.
DATA_MODULES = ("data",)


def versions() -> dict[str, str]:
    """Python and key package versions of this environment."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(repo: Path = REPO) -> dict[str, object]:
    """The commit checked out in ``repo`` and whether the tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def cpu_model() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """Host name, CPU model and core count."""
    return {"hostname": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count()}


def source_hash(sources: dict[str, bytes], lock: bytes | None, torch_version: str) -> str:
    """First 16 hex digits of the sha256 over named source files' bytes, the lock file's bytes
    (``None``: there is none) and the torch version; each part length-prefixed, files in name order."""
    digest = hashlib.sha256()

    def part(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    for name in sorted(sources):
        part(name.encode())
        part(sources[name])
    part(b"requirements.lock" if lock is not None else b"no requirements.lock")
    part(lock or b"")
    part(f"torch {torch_version}".encode())
    return digest.hexdigest()[:16]


def code_hash_of(modules: tuple[str, ...], package: Path = PACKAGE, lock: Path = LOCK) -> str:
    """The code-and-versions hash of ``modules`` (names of ``package``'s ``.py`` files; a missing one
    is an error): their bytes, the locked versions (``lock``; also where it is absent, as for an
    installed package) and the installed torch version (its metadata: torch is not imported)."""
    sources = {f"{name}.py": (Path(package) / f"{name}.py").read_bytes() for name in modules}
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return source_hash(sources, Path(lock).read_bytes() if Path(lock).is_file() else None, torch_version)


@functools.lru_cache(maxsize=None)
def code_hash(modules: tuple[str, ...] = TRAINING_MODULES) -> str:
    """The code-and-versions hash of this installation's ``modules`` (default: what training runs),
    computed once per process. Any byte changed in one of these files (a comment too), in
    requirements.lock or a torch upgrade changes it; the workflow makes it a parameter of the train
    (and dataset) rule, so Snakemake reruns the jobs whose code changed."""
    return code_hash_of(tuple(modules))
