"""Per-sample shapes through a network, without torch: used to validate configs and build models.

Shapes exclude the replica and batch axes: ``(features,)`` for vectors, ``(time, features)`` for
sequences, ``(channels, height, width)`` for feature maps (channels-first).
"""

from __future__ import annotations

import math

RANK_NAMES = {1: "vectors", 2: "sequences (time, features)", 3: "feature maps (channels, height, width)"}
NEEDS_RANK = {"dense": 1, "conv2d": 3, "max_pooling2d": 3, "spatial_dropout2d": 3, "lstm": 2}


class ShapeError(ValueError):
    """A layer that cannot take its input's shape."""


def dataset_input(dataset: dict) -> tuple[tuple[int, ...], int]:
    """A dataset entry's per-sample input shape and number of classes."""
    params = dataset["params"]
    generator = dataset["generator"]
    if generator == "load_digits":
        return (1, 8, 8), 10
    if generator == "make_sequences":
        return (params.get("length", 40), 1), params.get("n_classes", 2)
    return (2,), 2  # make_circles, make_moons


def output_shape(kind: str, params: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample shape a layer turns ``shape`` into; ShapeError if it cannot take it."""
    need = NEEDS_RANK.get(kind)
    if need is not None and len(shape) != need:
        raise ShapeError(f"{kind} needs {RANK_NAMES[need]}, but gets inputs of shape {shape}")
    if kind == "dense":
        return (params["units"],)
    if kind == "conv2d":
        k = params["kernel_size"]
        trim = 0 if params.get("padding", "valid") == "same" else k - 1
        out = (params["filters"], shape[1] - trim, shape[2] - trim)
    elif kind == "max_pooling2d":
        p = params.get("pool_size", 2)
        out = (shape[0], shape[1] // p, shape[2] // p)
    elif kind == "flatten":
        out = (math.prod(shape),)
    elif kind == "lstm":
        out = (shape[0], params["units"]) if params.get("return_sequences") else (params["units"],)
    else:  # batch_norm, dropout, gaussian_noise, activation, spatial_dropout2d keep the shape
        out = shape
    if min(out) < 1:
        raise ShapeError(f"{kind} leaves nothing of inputs of shape {shape} (output {out})")
    return out


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
