"""Per-sample shapes through a network, without torch: used to validate configs and build models.

Each layer kind's shape rule (and the input rank it needs) is in the layer registry,
:data:`reglab.layerkinds.LAYER_KINDS`; :func:`output_shape` dispatches through it.

Shapes exclude the replica and batch axes: ``(features,)`` for vectors, ``(time, features)`` for
sequences, ``(channels, height, width)`` for feature maps (channels-first).
"""

from __future__ import annotations

RANK_NAMES = {1: "vectors", 2: "sequences (time, features)", 3: "feature maps (channels, height, width)"}


class ShapeError(ValueError):
    """A layer that cannot take its input's shape."""


#: reglab's own generators, whose shape, classes and size follow from their params (no data are made)
BUILTIN_GENERATORS = ("make_circles", "make_moons", "load_digits", "make_sequences")


def dataset_input(dataset: dict) -> tuple[tuple[int, ...], int]:
    """A dataset entry's per-sample input shape and number of classes.

    Another scikit-learn generator's data are made, a file's read, once (reglab.data.dataset_info).
    """
    generator = dataset.get("generator")
    if generator == "load_digits":
        return (1, 8, 8), 10
    if generator == "make_sequences":
        params = dataset["params"]
        return (params.get("length", 40), 1), params.get("n_classes", 2)
    if generator in ("make_circles", "make_moons"):
        return (2,), 2
    from reglab.data import dataset_info  # scikit-learn: only for datasets that need it

    info = dataset_info(dataset)
    return info.shape, len(info.classes)


def dataset_sizes(dataset: dict) -> tuple[int, int]:
    """A dataset entry's numbers of training and test samples (see :func:`dataset_input`)."""
    if dataset.get("generator") in BUILTIN_GENERATORS:
        return dataset["n_train"], dataset["params"]["n_samples"] - dataset["n_train"]
    from reglab.data import dataset_info

    info = dataset_info(dataset)
    return info.n_train, info.n_test


def output_shape(kind: str, params: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample shape a layer turns ``shape`` into; ShapeError if it cannot take it."""
    from reglab.layerkinds import LAYER_KINDS  # the registry imports ShapeError from here

    return LAYER_KINDS[kind].output_shape(shape, params)


def head_error(layers: list[dict], shape: tuple[int, ...], n_classes: int) -> str | None:
    """Why the last layer cannot classify ``n_classes`` classes, or None if it can."""
    (kind, params), = layers[-1].items()
    activation = params.get("activation")
    if kind == "dense" and activation == "sigmoid" and shape == (1,) and n_classes == 2:
        return None
    if kind == "dense" and activation == "softmax" and shape == (n_classes,):
        return None
    return (f"the last layer must be dense with units: 1 and activation: sigmoid (2 classes) or "
            f"units: {n_classes} and activation: softmax; the dataset has {n_classes} classes")
