"""Where a test must run rather than skip: in CI, as root with apt-get, what .ci/run installs
(the real SLURM, chromium) is there, so a skip would hide a failure."""

import os
import shutil

import pytest


def in_ci(env=None) -> bool:
    """CI systems set CI=true (GitHub Actions, GitLab, ...; .ci/run sets it too)."""
    return (os.environ if env is None else env).get("CI", "").strip().lower() in ("true", "1", "yes")


def required_here(env=None, uid: int | None = None, apt_get: bool | None = None) -> bool:
    """Whether a test of what .ci/run installs must run here rather than skip: in CI, as root, with apt-get
    (everything .ci/run and .ci/slurm.sh need to install SLURM and chromium)."""
    uid = os.geteuid() if uid is None else uid
    apt_get = shutil.which("apt-get") is not None if apt_get is None else apt_get
    return in_ci(env) and uid == 0 and apt_get


def skip_unless_required(reason: str, required: bool) -> None:
    """Skip with ``reason``, or fail with it where the test is ``required`` to run."""
    if required:
        pytest.fail(f"must run here (CI=true, root, apt-get) but would be skipped: {reason}", pytrace=False)
    pytest.skip(reason)
