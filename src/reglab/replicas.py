"""Which variants can train as replicas of one model, and how a pack's (variant, seed) pairs are
grouped into models. Torch-free: the workflow plans resources with it too.

A replica is one (variant, seed) pair. Variants whose specs differ only in hyperparameters that
change no tensor shape (a layer kind's ``replica_options`` in :mod:`reglab.layerkinds`, and the
training keys in :data:`TRAINING_OPTIONS`) share a *signature*; they train together as replicas of
one model whose varying hyperparameters hold one value per replica (:func:`batch_spec`). Replica
(variant p, seed s) computes what training variant p alone with seed s computes: its initial
weights, shuffling and random draws come from seed s alone, its hyperparameters from p.

A replica's seed is an int (every random stream derives from it) or, for the runs of a variance
decomposition (a spec with ``vary``, see :func:`replica_seed`), a mapping of one seed per source of
randomness (:data:`SOURCES`): ``init`` (initial weights), ``order`` (the per-epoch shuffles),
``draws`` (every training-time draw: dropout masks, Gaussian, weight and gradient noise, label
flips) and ``split`` (the train/test split: None keeps the dataset's own).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping

import numpy as np

from reglab.layerkinds import LAYER_KINDS

#: training keys (paths) that may differ between the replicas of one model
TRAINING_OPTIONS = (("optimizer", "lr"), ("label_flip",), ("gradient_noise", "eta"))


def _positions(spec: dict) -> list[tuple[tuple, object]]:
    """(path, class) of every replica option in ``spec``: the class its value must share with the
    other replicas of a model (None: any value)."""
    out = []
    for i, layer in enumerate(spec["layers"]):
        (kind, params), = layer.items()
        for option, classify in LAYER_KINDS[kind].replica_options.items():
            if option in params:
                value = params[option]
                out.append((("layers", i, kind, option), None if classify is None else classify(value)))
    for path in TRAINING_OPTIONS:
        if _get(spec["training"], path) is not None:
            out.append((("training", *path), None))
    return out


def _get(tree, path):
    for key in path:
        if not isinstance(tree, (dict, list)) or (isinstance(tree, dict) and key not in tree):
            return None
        tree = tree[key]
    return tree


def _set(tree, path, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def signature(spec: dict) -> str:
    """A hash that variants trainable as replicas of one model share: the spec without its names and
    with every replica option replaced by the class of its value."""
    blank = {key: copy.deepcopy(spec[key]) for key in ("dataset", "training", "layers")}
    for path, cls in _positions(spec):
        _set(blank, path, {"replica option": cls})
    text = json.dumps(blank, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def batch_spec(specs: list[dict]) -> dict:
    """One spec for a model with one replica per entry of ``specs`` (all of one :func:`signature`):
    each replica option that differs between them becomes the list of its values, one per replica."""
    if len({signature(s) for s in specs}) != 1:
        raise ValueError("these specs differ in more than per-replica hyperparameters: "
                         "they cannot be replicas of one model")
    out = {key: copy.deepcopy(specs[0][key]) for key in ("dataset", "training", "layers")}
    out.update(study=specs[0].get("study"), variant=specs[0].get("variant"))
    for path, _ in _positions(specs[0]):
        values = [_get(s, path) for s in specs]
        if any(v != values[0] for v in values):
            _set(out, path, values)
    return out


@dataclasses.dataclass(frozen=True)
class Model:
    """One model to train: its replicas as (index into the specs, seed) pairs."""

    replicas: tuple[tuple[int, int], ...]

    @property
    def points(self) -> list[int]:
        """The specs it trains, in order."""
        return list(dict.fromkeys(p for p, _ in self.replicas))


def plan_models(specs: list[dict], seeds: list[int], max_replicas: int | None = None,
                apart: Callable[[dict], object] | None = None) -> list[Model]:
    """Group every (spec, seed) pair into models: specs of one :func:`signature` share a model
    (spec-major: all seeds of a spec, then the next), at most ``max_replicas`` replicas each (a larger
    group is split into several models, one after another). ``apart(spec)``: specs for which it
    differs train in different models even with one signature (the fused engine keeps the variants
    it trains apart from those only autograd can: :func:`reglab.fused.fusable`)."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((signature(spec), None if apart is None else apart(spec)), []).append(i)
    models = []
    for members in groups.values():
        pairs = [(p, int(s)) for p in members for s in seeds]
        size = len(pairs) if not max_replicas else max(1, int(max_replicas))
        models += [Model(tuple(pairs[i:i + size])) for i in range(0, len(pairs), size)]
    return models


# --------------------------------------------------------------------------- seeds per source
#: the sources of randomness a replica may seed apart (Bouthillier et al. 2021, "Accounting for variance")
SOURCES = ("init", "order", "draws", "split")
#: a decomposition run's ``vary``: one of SOURCES, or every source at once (the split too)
VARY = (*SOURCES, "all")
#: the stream of a split seed's derived random_state (init, shuffle and noise are 0, 1, 2: reglab.model)
STREAM_SPLIT = 3


def replica_seed(spec: dict, seed: int) -> int | dict:
    """The seed of replica (``spec``, ``seed``): ``seed`` itself (an int: every stream from it, the
    dataset's own split), unless ``spec`` is a decomposition run, ``vary: {source, fixed_seed}``: then
    a mapping ``{seed, init, order, draws, split}`` in which the varied source (every source for
    ``all``) takes ``seed`` and the others ``fixed_seed`` (the split: None, the dataset's own split).
    ``seed`` labels the replica in the run's files."""
    vary = spec.get("vary")
    if not vary:
        return int(seed)
    source, fixed = vary["source"], int(vary["fixed_seed"])
    if source not in VARY:
        raise ValueError(f"unknown source of variance {source!r} (known: {', '.join(VARY)})")
    varied = SOURCES if source == "all" else (source,)
    streams = {name: int(seed) if name in varied else fixed for name in SOURCES}
    if "split" not in varied:
        streams["split"] = None
    return {"seed": int(seed), **streams}


def seed_label(replica: int | Mapping) -> int:
    """The seed a replica is recorded under: the int itself, or a mapping's ``seed``."""
    return int(replica["seed"]) if isinstance(replica, Mapping) else int(replica)


def stream_seed(replica: int | Mapping, source: str) -> int | None:
    """The seed of one source of a replica's randomness (see :data:`SOURCES`); an int replica seeds
    every stream itself and keeps the dataset's split (None)."""
    if isinstance(replica, Mapping):
        value = replica[source]
        return None if value is None else int(value)
    return None if source == "split" else int(replica)


def split_random_state(seed: int) -> int:
    """The ``random_state`` (0 <= it < 2**31) of the dataset a replica with split seed ``seed`` trains
    on: the dataset's generator is run again with it (or, without one, the pooled samples re-split)."""
    state = np.random.SeedSequence([int(seed), STREAM_SPLIT]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFF_FFFF
