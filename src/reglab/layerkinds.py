"""The layer registry: everything the workflow knows about each kind of layer, in one table.

``LAYER_KINDS[kind]`` holds, for each key a variant's layer may have (``- dense: {units: 50}``):

- ``options``: the JSON-schema fragment of the layer's options (``config_schema()`` puts it under
  ``$defs.layer.properties.<kind>``), with a ``description`` for the layer and every option;
- ``rank`` and ``shape_rule``: the per-sample input rank it needs (None: any) and its output shape
  (see :mod:`reglab.shapes`; ``LayerKind.output_shape`` checks both and raises ShapeError);
- ``build``: ``(replicas, in_shape, params) -> nn.Module``, the replica-batched layer (torch is
  imported inside, so this module, config validation and the Snakefile stay torch-free);
- ``activation_floats``, ``macs``, ``step_seconds``: the cost estimates the cluster resources are
  computed from (``train_mem_mb`` and ``train_runtime`` in workflow/rules/common.smk, through
  :func:`network_cost`).

A new layer type = its class (in layers.py, conv.py or recurrent.py), its test, one entry here.
Checklist for the entry: options with a description for the layer and each option (defaults as
Keras'); the rank it needs and its shape rule; its builder; its costs. tests/test_layer_registry.py
then checks that the builder's module maps the rule's input shape to the rule's output shape, and
`python -m reglab docs` regenerates config/README.md (a test fails until it is regenerated).

Resource estimates (measured once with the train rule's benchmark files, benchmarks/train/*.tsv;
torch 2.13 CPU, 1 thread):

- Memory: a training job peaked at 464-470 MB for each job of config/tiny.yaml; for
  config/config.yaml at 474-589 MB for the MLP jobs (10 seeds; the 500-unit dropout/noise ones the
  largest), 431-557 MB for the CNN, 417-528 MB for the LSTM jobs and 689-728 MB for the grid packs of
  9-10 variants (~26 MB more per variant: a pack holds its variants' results). Python, torch and
  Lightning are ~460 MB of it. Above that the job holds activations: evaluation runs every replica
  over the whole test set at once, so :func:`network_cost` takes the largest per-sample activation of
  the network (``activation_floats``: the layer's output, or for the LSTM the hidden state of every
  time step, which it materialises even without ``return_sequences``) and the memory estimate counts
  it for every sample of the dataset and every replica, as float32 (4 bytes), 16 times (the copies
  alive at once in the forward and backward passes, with headroom).
- Time (the autograd engine, 2026-12, one job at a time; the fused engine's loops have their own
  estimate, reglab.fused.fused_epoch_seconds): ~8 s of start-up per job, then per optimizer step
  ~1 ms for an MLP or the CNN and ~2.3 ms for the LSTM, plus per replica 13 us for the 50-unit BN
  MLP, 159 us for the 500-unit dropout MLP, 0.5 ms for the CNN and 1.6 ms for the LSTM (10 against
  50 seeds). Hence each kind's ``step_seconds``, the per-step overhead of a network holding it
  (dense and conv2d 2 ms, lstm 4 ms; a network takes its largest), ``macs``, the per-sample
  multiply-adds of its forward pass (training's forward and backward are ~3x them, the test pass
  1x, 2 flops each), and ``flop_rate``, the flops per second they run at (dense 3 GFLOP/s: small
  products; conv2d and lstm 15 GFLOP/s; a network takes the rate of the kind doing most of its
  multiply-adds). The estimates stay above the measurements (up to ~2x for the CNN and LSTM).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

from reglab.shapes import RANK_NAMES, ShapeError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerKind:
    """One layer type: its options' schema, shape rule, replica builder and resource costs."""

    name: str
    #: JSON-schema fragment of the options (``$defs.layer.properties.<name>``), with descriptions
    options: dict
    #: per-sample input shape + params -> output shape (rank already checked)
    shape_rule: Callable[[Shape, dict], Shape]
    #: (replicas, per-sample input shape, params) -> the replica-batched ``nn.Module``
    build: Callable[[int, Shape, dict], object]
    #: per-sample input rank it needs (1 vectors, 2 sequences, 3 feature maps); None: any
    rank: int | None = None
    #: (input shape, output shape, params) -> per-sample floats of its largest activation
    activation_floats: Callable[[Shape, Shape, dict], int] = lambda shape, out, params: math.prod(out)
    #: (input shape, output shape, params) -> per-sample multiply-adds of its forward pass
    macs: Callable[[Shape, Shape, dict], int] = lambda shape, out, params: 0
    #: overhead in seconds per optimizer step of a network that holds this layer (see the module doc)
    step_seconds: float = 0.0
    #: flops per second of the autograd engine on this layer (see the module doc)
    flop_rate: float = 3e9
    #: options that may differ between the replicas of one model (they change no shape), each with
    #: the class of values that must still agree (None: any values may share a model)
    replica_options: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return self.options["description"]

    def output_shape(self, shape: Shape, params: dict) -> Shape:
        """The per-sample shape this layer turns ``shape`` into; ShapeError if it cannot take it."""
        shape = tuple(shape)
        if self.rank is not None and len(shape) != self.rank:
            raise ShapeError(f"{self.name} needs {RANK_NAMES[self.rank]}, but gets inputs of shape {shape}")
        out = tuple(self.shape_rule(shape, params))
        if min(out) < 1:
            raise ShapeError(f"{self.name} leaves nothing of inputs of shape {shape} (output {out})")
        return out


# ----------------------------------------------------------------------------- shared option schemas
def _rate(what: str) -> dict:
    return {"description": what, "type": "number", "minimum": 0, "exclusiveMaximum": 1}


INITIALIZERS = ["glorot_uniform", "he_uniform", "glorot_normal", "he_normal"]


def _same(shape: Shape, params: dict) -> Shape:
    return shape


def _positive(value) -> bool:
    """The class of an LSTM's recurrent_dropout that replicas of one model share: 0 or not (Keras
    uses another cell for each)."""
    return value > 0


# ----------------------------------------------------------------------------- builders (torch inside)
def _options_only(module: str, name: str) -> Callable:
    """A builder for a layer class that takes only its options (no replica count, no input shape)."""

    def build(replicas: int, shape: Shape, params: dict):
        return getattr(importlib.import_module(module), name)(**params)

    return build


def _build_dense(replicas: int, shape: Shape, params: dict):
    from reglab.layers import Dense

    return Dense(replicas, shape[0], **params)


def _build_batch_norm(replicas: int, shape: Shape, params: dict):
    from reglab.layers import BatchNorm

    if len(shape) == 3:  # feature maps normalise each channel (axis 2 of [S, B, C, H, W])
        return BatchNorm(replicas, shape[0], axis=2, **params)
    return BatchNorm(replicas, shape[-1], axis=-1, **params)  # vectors, sequences: the last axis


def _build_conv2d(replicas: int, shape: Shape, params: dict):
    from reglab.conv import Conv2D

    return Conv2D(replicas, shape[0], **params)


def _build_lstm(replicas: int, shape: Shape, params: dict):
    from reglab.recurrent import LSTM

    return LSTM(replicas, shape[1], **params)


# ----------------------------------------------------------------------------- shape rules
def _conv2d_shape(shape: Shape, params: dict) -> Shape:
    trim = 0 if params.get("padding", "valid") == "same" else params["kernel_size"] - 1
    return (params["filters"], shape[1] - trim, shape[2] - trim)


def _max_pooling2d_shape(shape: Shape, params: dict) -> Shape:
    p = params.get("pool_size", 2)
    return (shape[0], shape[1] // p, shape[2] // p)


def _lstm_shape(shape: Shape, params: dict) -> Shape:
    return (shape[0], params["units"]) if params.get("return_sequences") else (params["units"],)


# ----------------------------------------------------------------------------- the table
_KINDS = [
    LayerKind(
        name="dense",
        options={
            "description": "Keras Dense: activation(x @ kernel + bias) on vectors",
            "type": "object",
            "additionalProperties": False,
            "required": ["units"],
            "properties": {
                "units": {"description": "number of output units", "type": "integer", "minimum": 1},
                "activation": {
                    "description": "activation of the output (the last layer: sigmoid with 1 unit, or softmax)",
                    "enum": ["linear", "relu", "sigmoid", "tanh", "softmax"],
                    "default": "linear",
                },
                "kernel_initializer": {
                    "description": "Keras initializer of the kernel (each replica's from its own seed)",
                    "enum": INITIALIZERS,
                    "default": "glorot_uniform",
                },
                "use_bias": {"description": "add a bias (initialised to zero)", "type": "boolean", "default": True},
                "max_norm": {
                    "description": "Keras max_norm kernel constraint (each unit's incoming weights), null for none",
                    "type": ["number", "null"],
                    "exclusiveMinimum": 0,
                    "default": None,
                },
                "unit_norm": {"description": "Keras unit_norm kernel constraint", "type": "boolean", "default": False},
                "weight_noise": {
                    "description": "stddev of Gaussian noise added to the kernel at every training forward pass",
                    "type": "number",
                    "minimum": 0,
                    "default": 0,
                },
            },
        },
        rank=1,
        shape_rule=lambda shape, params: (params["units"],),
        build=_build_dense,
        replica_options={"weight_noise": None, "max_norm": None},
        macs=lambda shape, out, params: shape[0] * params["units"],
        step_seconds=0.002,
    ),
    LayerKind(
        name="batch_norm",
        options={
            "description": ("Keras BatchNormalization: per feature (vectors, sequences) or per channel "
                            "(feature maps); moving statistics in inference"),
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "momentum": {
                    "description": "moving statistics = momentum * moving + (1 - momentum) * batch statistics",
                    "type": "number", "minimum": 0, "maximum": 1, "default": 0.99,
                },
                "epsilon": {"description": "added to the variance before its square root",
                            "type": "number", "exclusiveMinimum": 0, "default": 0.001},
                "center": {"description": "learn an offset beta", "type": "boolean", "default": True},
                "scale": {"description": "learn a scale gamma", "type": "boolean", "default": True},
            },
        },
        shape_rule=_same,
        build=_build_batch_norm,
        replica_options={"momentum": None},
    ),
    LayerKind(
        name="dropout",
        options={
            "description": ("Keras Dropout: zeroes each value with probability rate in training (kept "
                            "values scaled by 1/(1-rate)); identity in inference"),
            "type": "object",
            "additionalProperties": False,
            "required": ["rate"],
            "properties": {"rate": _rate("probability to drop each value")},
        },
        shape_rule=_same,
        build=_options_only("reglab.layers", "Dropout"),
        replica_options={"rate": None},
    ),
    LayerKind(
        name="gaussian_noise",
        options={
            "description": "Keras GaussianNoise: adds N(0, stddev^2) noise in training; identity in inference",
            "type": "object",
            "additionalProperties": False,
            "required": ["stddev"],
            "properties": {
                "stddev": {"description": "standard deviation of the noise", "type": "number", "minimum": 0},
            },
        },
        shape_rule=_same,
        build=_options_only("reglab.layers", "GaussianNoise"),
        replica_options={"stddev": None},
    ),
    LayerKind(
        name="activation",
        options={
            "description": "Keras Activation: an activation function on its own",
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"description": "the activation function", "enum": ["relu", "sigmoid", "tanh", "linear"]},
            },
        },
        shape_rule=_same,
        build=_options_only("reglab.layers", "Activation"),
    ),
    LayerKind(
        name="conv2d",
        options={
            "description": "Keras Conv2D, stride 1, on channels-first feature maps",
            "type": "object",
            "additionalProperties": False,
            "required": ["filters", "kernel_size"],
            "properties": {
                "filters": {"description": "number of output channels", "type": "integer", "minimum": 1},
                "kernel_size": {"description": "height and width of the square kernel",
                                "type": "integer", "minimum": 1},
                "padding": {
                    "description": "valid: no padding (maps shrink by kernel_size - 1); same: keep the size",
                    "enum": ["valid", "same"], "default": "valid",
                },
                "activation": {"description": "activation of the output",
                               "enum": ["linear", "relu", "sigmoid", "tanh"], "default": "linear"},
                "kernel_initializer": {
                    "description": "Keras initializer of the kernel (fans kernel_size^2 x channels)",
                    "enum": INITIALIZERS, "default": "glorot_uniform",
                },
                "use_bias": {"description": "add a bias per filter (initialised to zero)",
                             "type": "boolean", "default": True},
            },
        },
        rank=3,
        shape_rule=_conv2d_shape,
        build=_build_conv2d,
        macs=lambda shape, out, params: math.prod(out) * shape[0] * params["kernel_size"] ** 2,
        step_seconds=0.002,
        flop_rate=15e9,
    ),
    LayerKind(
        name="max_pooling2d",
        options={
            "description": "Keras MaxPooling2D: the maximum of each pool_size x pool_size window (strides = pool_size)",
            "type": "object",
            "additionalProperties": False,
            "properties": {"pool_size": {"description": "height and width of the window (a remainder is dropped)",
                                         "type": "integer", "minimum": 1, "default": 2}},
        },
        rank=3,
        shape_rule=_max_pooling2d_shape,
        build=_options_only("reglab.conv", "MaxPooling2D"),
    ),
    LayerKind(
        name="flatten",
        options={
            "description": "Keras Flatten: any per-sample shape to a vector",
            "type": "object",
            "additionalProperties": False,
        },
        shape_rule=lambda shape, params: (math.prod(shape),),
        build=_options_only("reglab.conv", "Flatten"),
    ),
    LayerKind(
        name="spatial_dropout2d",
        options={
            "description": ("Keras SpatialDropout2D: drops whole feature maps with probability rate in "
                            "training (kept maps scaled by 1/(1-rate))"),
            "type": "object",
            "additionalProperties": False,
            "required": ["rate"],
            "properties": {"rate": _rate("probability to drop each feature map")},
        },
        rank=3,
        shape_rule=_same,
        build=_options_only("reglab.conv", "SpatialDropout2D"),
        replica_options={"rate": None},
    ),
    LayerKind(
        name="lstm",
        options={
            "description": ("Keras LSTM on sequences (time, features); dropout and recurrent_dropout draw one "
                            "mask per sequence, reused at every time step (variational RNN)"),
            "type": "object",
            "additionalProperties": False,
            "required": ["units"],
            "properties": {
                "units": {"description": "size of the hidden state", "type": "integer", "minimum": 1},
                "return_sequences": {
                    "description": "output every time step's hidden state (time, units), not only the last (units)",
                    "type": "boolean", "default": False,
                },
                "dropout": {**_rate("probability to drop each input feature (one mask per sequence)"), "default": 0},
                "recurrent_dropout": {**_rate("probability to drop each unit of the recurrent state (one mask per "
                                              "sequence)"), "default": 0},
            },
        },
        rank=2,
        shape_rule=_lstm_shape,
        build=_build_lstm,
        replica_options={"dropout": None, "recurrent_dropout": _positive},
        # every step's hidden state is materialised (return_sequences only chooses what is returned)
        activation_floats=lambda shape, out, params: shape[0] * params["units"],
        # per time step: 4 gates from the input and the previous hidden state
        macs=lambda shape, out, params: shape[0] * 4 * params["units"] * (shape[1] + params["units"]),
        step_seconds=0.004,
        flop_rate=15e9,
    ),
]

#: every layer type a variant may use, in the order the docs and error messages list them
LAYER_KINDS: dict[str, LayerKind] = {kind.name: kind for kind in _KINDS}


@dataclass(frozen=True)
class NetworkCost:
    """A network's per-sample costs (per replica), for the resource estimates."""

    activation_floats: int  # its largest layer's activation floats
    macs: int  # multiply-adds of a forward pass through all its layers
    step_seconds: float  # the per-step overhead of its most expensive kind
    flop_rate: float  # the autograd engine's flops per second on the kind doing most multiply-adds


def network_cost(layers: list[dict], input_shape: Shape) -> NetworkCost:
    """The costs of a variant's ``[{kind: params}, ...]`` on per-sample inputs of ``input_shape``.

    Options left out take their schema defaults (a validated config has them filled in already).
    """
    floats, macs, step, shape = 0, 0, 0.0, tuple(input_shape)
    rate, most = LayerKind.flop_rate, -1
    for layer in layers:
        (name, params), = layer.items()
        kind = LAYER_KINDS[name]
        params = {**option_defaults(name), **(params or {})}
        out = kind.output_shape(shape, params)
        floats = max(floats, kind.activation_floats(shape, out, params))
        layer_macs = kind.macs(shape, out, params)
        macs += layer_macs
        step = max(step, kind.step_seconds)
        if layer_macs > most:
            rate, most = kind.flop_rate, layer_macs
        shape = out
    return NetworkCost(floats, macs, step, rate)


def option_defaults(name: str) -> dict:
    """The schema defaults of a layer kind's options."""
    properties = LAYER_KINDS[name].options.get("properties", {})
    return {key: sub["default"] for key, sub in properties.items() if "default" in sub}
