"""Check that requirements.lock pins every package the install pulled, at the installed version.

    python tools/check_lock.py [--lock requirements.lock] [--extras test] [--pins]

Walks the requirements of the installed project (reglab, with ``--extras``) through the installed
distributions' metadata (importlib.metadata), markers evaluated for this interpreter, and fails
(exit 1) naming every package of that closure that the lock lacks or pins at another version than
the installed one (PEP 440 ``==``: the lock's ``torch==2.13.0`` matches an installed
``2.13.0+cpu``), or that is not installed. Packages installed by hand outside the closure are not
looked at. ``--pins`` prints the closure as ``name==locked version`` lines instead (the pip section of
workflow/envs/reglab.yaml is the closure without extras). Run it after the install, then ``pip check``.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]


def normalize(name: str) -> str:
    """The PEP 503 form of a distribution name (``PyYAML`` -> ``pyyaml``, ``typing_extensions`` ->
    ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """{normalized name: version} of the lock's ``name==version`` lines (comments and blanks skipped)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{path}: not a name==version pin: {line!r}")
            pins[normalize(name)] = version.strip()
    return pins


def closure(project: str, extras: tuple[str, ...] = ()) -> dict[str, str | None]:
    """{normalized name: installed version, or None when not installed} of every distribution that
    ``project[extras]`` requires, directly or not (the project itself left out)."""
    found: dict[str, str | None] = {}
    todo = [(normalize(project), frozenset(extras))]
    seen = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found[name] = None
            continue
        if name != normalize(project):
            found[name] = dist.version
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *wanted)):
                todo.append((normalize(req.name), frozenset(req.extras)))
    return found


def problems(lock: dict[str, str], installed: dict[str, str | None]) -> list[str]:
    """One line per installed package missing from the lock, at another version, or not installed."""
    out = []
    for name, version in sorted(installed.items()):
        if version is None:
            out.append(f"{name}: required but not installed")
        elif name not in lock:
            out.append(f"{name}=={version}: installed but missing from the lock")
        elif not SpecifierSet(f"=={lock[name]}").contains(version, prereleases=True):
            out.append(f"{name}=={version}: installed, but the lock pins {name}=={lock[name]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=REPO / "requirements.lock")
    parser.add_argument("--project", default="reglab")
    parser.add_argument("--extras", nargs="*", default=[], help="the project's extras that were installed")
    parser.add_argument("--pins", action="store_true", help="print the closure's locked pins and exit")
    args = parser.parse_args(argv)
    lock = read_lock(args.lock)
    installed = closure(args.project, tuple(args.extras))
    if args.pins:
        print("\n".join(f"{name}=={lock.get(name, version)}" for name, version in sorted(installed.items())))
        return 0
    found = problems(lock, installed)
    for line in found:
        print(f"{args.lock.name}: {line}", file=sys.stderr)
    if found:
        return 1
    print(f"{args.lock.name}: all {len(installed)} packages that {args.project} requires are pinned at their "
          "installed versions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
