"""The fused engine: one compiled loop trains a block of epochs of every replica of a model, for the
families of networks that dominate the studies' cost (the seed's 500-unit MLP over 4,000 epochs)
or that autograd trains slowly (a small LSTM, step by step).

The families (:func:`fused_layout`), each with a ``Dense(1, sigmoid)`` head, Adam or SGD (with
momentum), label flips and gradient noise, and every per-replica hyperparameter of
:mod:`reglab.replicas` free to differ between replicas:

- *dense* (:func:`reglab.fusedkernels.train_block`): 1-D inputs, Gaussian noise and dropout on
  them, one hidden Dense (linear or ReLU, with or without a max-norm constraint), then Gaussian
  noise, dropout and ReLU;
- *lstm* (:func:`reglab.fusedkernels.train_lstm_block`): sequences, Gaussian noise and dropout on them
  (per step), one ``LSTM`` returning its last output (with its input ``dropout``; no
  ``recurrent_dropout``), then Gaussian noise, dropout and ReLU.

Any other model trains with autograd (:mod:`reglab.module`), as does every model on a GPU.

A loop computes what the autograd engine computes -- Keras ``fit`` semantics, the same initial
weights (the network's own), the same per-epoch shuffles, evaluation in inference mode -- with the
forward and backward passes and the optimizer fused per replica, so that a replica's activations
stay in the CPU's cache instead of crossing memory once per operation (the LSTM loop's tanh and
sigmoid are rational approximations within 3e-7: see :mod:`reglab.fusedkernels`). Its random draws (dropout masks, noise, label flips) come from each replica's own
SplitMix64 stream (seeded, like the autograd engine's generators, from the replica's ``draws`` seed),
not from torch's generators: the two engines train the same distribution, not the same numbers, for
models that draw. Which engine trained a run is recorded with it (``meta.json``'s ``engine``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from reglab.replicas import stream_seed

#: the engines a training job may use: fused where the model allows (else autograd), or autograd only
ENGINES = ("fused", "torch")
#: the fused engine's families of models (:attr:`Layout.kind`), each with its own compiled loop
FAMILIES = ("dense", "lstm")

_INPUT_OPS = {"gaussian_noise", "dropout"}
_HIDDEN_OPS = {"gaussian_noise", "dropout", "activation"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a fusable network's layers sit: its input ops, hidden layer (a Dense or, for ``kind``
    lstm, an LSTM), hidden ops and head (layer indices into the spec's ``layers``, and into the
    network's ``body`` + head)."""

    input_ops: tuple[int, ...]
    hidden: int
    hidden_ops: tuple[int, ...]
    head: int
    kind: str = "dense"


#: measured seconds of the fused loops (one core, 2026-12). Dense: per sample and hidden unit and
#: input feature (+2) of each epoch's training and test passes; the seed's 500-unit model on 30 + 70
#: samples: 21 us a replica-epoch, 33 us with GaussianNoise in the hidden layer (15,000 normals).
#: LSTM: per multiply-add of the gates' products (a test step's, and three times that for a training
#: step: forward and two backward) and per unit and step of a training and of a test sequence (the
#: cell's arithmetic); the rnn study's LSTM(32), 20 steps, 100 + 300 sequences: 1.8 ms.
SAMPLE_UNIT_SECONDS = 1.05e-10
LSTM_MAC_SECONDS = 2.2e-11
LSTM_TRAIN_UNIT_SECONDS = 4e-9
LSTM_TEST_UNIT_SECONDS = 2e-9
#: per normal drawn; per uniform drawn
NORMAL_SECONDS = 0.9e-9
UNIFORM_SECONDS = 0.6e-9


def fused_epoch_seconds(spec: dict, layout: Layout, n_train: int, n_test: int,
                        sample_shape: tuple[int, ...]) -> float:
    """Estimated seconds of one replica-epoch of ``spec`` (with ``layout``) in the fused engine, on
    samples of ``sample_shape``."""
    layers = [next(iter(layer.items())) for layer in spec["layers"]]
    units = layers[layout.hidden][1]["units"]
    features = int(np.prod(sample_shape))  # input values per sample
    if layout.kind == "lstm":
        steps, inputs = sample_shape
        macs = 4 * units * (inputs + units + 1)  # per sequence and step
        seconds = steps * ((3 * n_train + n_test) * macs * LSTM_MAC_SECONDS
                           + (n_train * LSTM_TRAIN_UNIT_SECONDS + n_test * LSTM_TEST_UNIT_SECONDS) * units)
        if any(_values(layers[layout.hidden][1].get("dropout", 0))):
            seconds += UNIFORM_SECONDS * n_train * sample_shape[1]
    else:
        seconds = SAMPLE_UNIT_SECONDS * (n_train + n_test) * units * (features + 2)
    for indices, width in ((layout.input_ops, features), (layout.hidden_ops, units)):
        for i in indices:
            kind = layers[i][0]
            if kind == "gaussian_noise":
                seconds += NORMAL_SECONDS * n_train * width
            elif kind == "dropout":
                seconds += UNIFORM_SECONDS * n_train * width
    if spec["training"].get("label_flip"):
        seconds += UNIFORM_SECONDS * n_train
    if (spec["training"].get("gradient_noise") or {}).get("eta"):
        steps = -(-n_train // int(spec["training"]["batch_size"]))
        inputs = sample_shape[-1] + units + 1 if layout.kind == "lstm" else features + 1
        weights = inputs * units * (4 if layout.kind == "lstm" else 1) + units + 1
        seconds += NORMAL_SECONDS * steps * weights
    return seconds


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def fused_layout(spec: dict, sample_shape: tuple[int, ...]) -> Layout | str:
    """The :class:`Layout` of ``spec`` (a :func:`reglab.replicas.batch_spec`) if the fused engine
    trains it on samples of ``sample_shape``, else the reason it does not (a short phrase)."""
    if len(sample_shape) not in (1, 2):
        return f"inputs of shape {sample_shape}, not vectors or sequences"
    hidden_kind = "dense" if len(sample_shape) == 1 else "lstm"
    layers = [next(iter(layer.items())) for layer in spec["layers"]]
    kinds = [kind for kind, _ in layers]
    hiddens = [i for i, kind in enumerate(kinds) if kind == hidden_kind]
    heads = [i for i, kind in enumerate(kinds) if kind == "dense"]
    if hidden_kind == "dense":
        hiddens, heads = hiddens[:-1], hiddens[-1:]
    if len(hiddens) != 1 or heads != [len(layers) - 1]:
        return f"not one {'hidden Dense' if hidden_kind == 'dense' else 'LSTM'} layer and a Dense head"
    hidden, head = hiddens[0], heads[0]
    bad = [kinds[i] for i in range(hidden) if kinds[i] not in _INPUT_OPS]
    bad += [kinds[i] for i in range(hidden + 1, head) if kinds[i] not in _HIDDEN_OPS]
    if bad:
        return f"a {bad[0]} layer"
    for i in range(hidden + 1, head):
        if kinds[i] == "activation" and layers[i][1]["name"] not in ("relu", "linear"):
            return f"a {layers[i][1]['name']} activation"
    hp, op = layers[hidden][1], layers[head][1]
    if hidden_kind == "lstm":
        if hp.get("return_sequences") or any(_values(hp.get("recurrent_dropout", 0))):
            return "an LSTM with return_sequences or recurrent_dropout"
    else:
        if hp.get("activation", "linear") not in ("relu", "linear"):
            return f"a hidden {hp['activation']} activation"
        if any(_values(hp.get("weight_noise", 0))) or hp.get("unit_norm") or not hp.get("use_bias", True):
            return "weight noise, unit norm or no bias on the hidden layer"
    if op["units"] != 1 or op["activation"] != "sigmoid" or not op.get("use_bias", True) or any(
            _values(op.get("weight_noise", 0))) or op.get("unit_norm") or any(
            v is not None for v in _values(op.get("max_norm"))):
        return "a head other than a plain Dense(1, sigmoid)"
    optimizer = spec["training"]["optimizer"]
    if optimizer["name"] not in ("adam", "sgd") or optimizer.get("nesterov"):
        return f"the {optimizer['name']} optimizer" + (" with Nesterov momentum" if optimizer.get("nesterov") else "")
    return Layout(tuple(range(hidden)), hidden, tuple(range(hidden + 1, head)), head, hidden_kind)


def fusable(sample_shape: tuple[int, ...]) -> Callable[[dict], bool]:
    """For :func:`reglab.replicas.plan_models`' ``apart``: whether the fused engine trains a spec on
    samples of ``sample_shape`` (a model of replicas it trains and replicas it cannot would train
    wholly with autograd)."""
    return lambda spec: isinstance(fused_layout(spec, tuple(sample_shape)), Layout)


def _ops(layers: list[tuple[str, dict]], replicas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Op codes [ops] and per-replica parameters [ops, S] of ``(kind, params)`` layers (noise: stddev;
    dropout: keep probability and 1/keep, computed in float64 and rounded once, as
    :class:`reglab.layers.Rate` does; a linear activation is no op)."""
    from reglab import fusedkernels as K

    codes, params, scales = [], [], []
    for kind, p in layers:
        if kind == "activation":
            if p["name"] == "linear":
                continue
            codes.append(K.OP_RELU)
            params.append(np.zeros(replicas))
            scales.append(np.zeros(replicas))
        elif kind == "gaussian_noise":
            codes.append(K.OP_NOISE)
            params.append(np.broadcast_to(np.asarray(_values(p["stddev"]), np.float64), replicas))
            scales.append(np.zeros(replicas))
        else:
            keep = 1.0 - np.broadcast_to(np.asarray(_values(p["rate"]), np.float64), replicas)
            codes.append(K.OP_DROPOUT)
            params.append(keep)
            scales.append(1.0 / keep)
    shape = (len(codes), replicas)
    return (np.asarray(codes, np.int64), np.asarray(params, np.float32).reshape(shape),
            np.asarray(scales, np.float32).reshape(shape))


def noise_states(seeds: list) -> np.ndarray:
    """Each replica's initial SplitMix64 state (uint64 ``[S]``), from its ``draws`` seed."""
    from reglab.model import STREAM_NOISE

    return np.array([np.random.SeedSequence([stream_seed(s, "draws"), STREAM_NOISE]).generate_state(1, np.uint64)[0]
                     for s in seeds], dtype=np.uint64)


def compile_kernels(families=FAMILIES) -> float:
    """Compile the fused loops of ``families`` (of :data:`FAMILIES`) for the argument types
    :class:`FusedBlocks` passes (numba caches them in ``__pycache__``, so training jobs then load
    them instead of each compiling them); returns seconds. Trains one replica of a 2-input (2
    features, 2 steps), 2-unit network of each family for one epoch on 4 samples."""
    from reglab import fusedkernels as K

    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families of the fused engine: {sorted(unknown)} (known: {', '.join(FAMILIES)})")
    start = time.perf_counter()
    s, n, f, u = 1, 4, 2, 2
    ops = (np.zeros(0, np.int64), np.zeros((0, s), np.float32), np.zeros((0, s), np.float32))
    rest = (np.full(s, 0.001), 0, 0.9, 0.999, 1e-7, 0.0)
    tail = (np.zeros(s), np.zeros(s), 0.55, np.zeros(2, np.int64), 32, noise_states([0]),
            np.zeros((1, 4, s), np.float32))
    orders = np.zeros((1, s, n), np.int64)
    if "dense" in families:
        theta = np.zeros((s, (f + 2) * u + 1), np.float32)
        K.train_block(0, 1, 0, orders, np.zeros((1, n, f), np.float32), np.zeros((1, n), np.float32),
                      np.zeros((1, n, f), np.float32), np.zeros((1, n), np.float32),
                      theta, np.zeros_like(theta), np.zeros_like(theta), *ops, *ops, *rest, np.full(s, np.inf),
                      *tail)
    if "lstm" in families:
        theta = np.zeros((s, (f + u + 1) * 4 * u + u + 1), np.float32)
        K.train_lstm_block(0, 1, 0, orders, np.zeros((1, n, 2, f), np.float32), np.zeros((1, n), np.float32),
                           np.zeros((1, n, 2, f), np.float32), np.zeros((1, n), np.float32), u,
                           theta, np.zeros_like(theta), np.zeros_like(theta), *ops, np.ones(s, np.float32),
                           np.ones(s, np.float32), *ops, *rest, *tail)
    return time.perf_counter() - start


def _per_replica(value, replicas: int, default: float) -> np.ndarray:
    values = [default if v is None else v for v in _values(value)]
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values, np.float64), replicas))


class FusedBlocks:
    """Trains blocks of epochs of a :class:`reglab.module.ReplicaClassifier` whose network has
    ``layout``: from the network's parameters (written back after each block), the module's shuffles,
    data and update count, into its ``epoch_metrics`` buffer; the optimizer's moments and the random
    states are its own. BLAS (the LSTM loop's matrix products) runs on one thread meanwhile: the
    loop's own order of work, whatever the machine's cores."""

    def __init__(self, module, layout: Layout) -> None:
        net, spec = module.net, module.spec
        s = net.replicas
        modules = [*net.body, net.head]
        hidden, head = modules[layout.hidden], modules[layout.head]
        layers = [next(iter(layer.items())) for layer in spec["layers"]]
        self.layout = layout
        if layout.kind == "lstm":
            own = []  # the hidden layer's own activation, the first op after it (an LSTM has none)
            tensors = (hidden.kernel, hidden.recurrent_kernel, hidden.bias, head.kernel, head.bias)
            keep = 1.0 - _per_replica(layers[layout.hidden][1].get("dropout", 0.0), s, 0.0)
            self.lstm_dropout = (keep.astype(np.float32), (1.0 / keep).astype(np.float32))
            self.units = int(hidden.units)
            import scipy.linalg.cython_blas  # noqa: F401  (numba's BLAS: loaded, so that the controller finds it)
            from threadpoolctl import ThreadpoolController

            self.blas = ThreadpoolController()  # looked up once per model (~3 ms), not per block
        else:
            own = [("activation", {"name": layers[layout.hidden][1].get("activation", "linear")})]
            tensors = (hidden.kernel, hidden.bias, head.kernel, head.bias)
        # the network's parameters (numpy views of its tensors) and their flat copy the loop trains
        self.params = [t.detach().numpy().reshape(s, -1) for t in tensors]
        self.theta = np.ascontiguousarray(np.concatenate(self.params, axis=1))
        self.bounds = np.cumsum([0] + [p.shape[1] for p in self.params], dtype=np.int64)  # each tensor's offset
        self.moments = (np.zeros_like(self.theta), np.zeros_like(self.theta))
        self.input_ops = _ops([layers[i] for i in layout.input_ops], s)
        self.hidden_ops = _ops([*own, *(layers[i] for i in layout.hidden_ops)], s)
        training = spec["training"]
        opt = dict(training["optimizer"])
        self.optimizer = 0 if opt["name"] == "adam" else 1
        self.lr = _per_replica(opt.get("lr"), s, 0.0)
        self.betas = (float(opt.get("beta_1", 0.9)), float(opt.get("beta_2", 0.999)), float(opt.get("epsilon", 1e-7)))
        self.momentum = float(opt.get("momentum", 0.0))
        self.max_norm = _per_replica(layers[layout.hidden][1].get("max_norm"), s, np.inf)
        self.label_flip = _per_replica(training.get("label_flip", 0.0), s, 0.0)
        gradient_noise = training.get("gradient_noise") or {}
        self.grad_eta = _per_replica(gradient_noise.get("eta", 0.0), s, 0.0)
        self.grad_gamma = float(gradient_noise.get("gamma", 0.55))
        self.batch_size = int(training["batch_size"])
        self.state = noise_states(net.replica_seeds)
        x_train, y_train = module.x_train.numpy(), module.y_train.numpy()
        self.x_train = x_train if module.replica_rows is not None else x_train[None]
        self.y_train = y_train if module.replica_rows is not None else y_train[None]
        self.x_test = np.ascontiguousarray(module.x_test.numpy())
        self.y_test = np.ascontiguousarray(module.y_test.numpy())
        self.orders = np.ascontiguousarray(module.orders.numpy().astype(np.int64, copy=False))  # no copy: int64
        self.metrics = module.epoch_metrics.numpy()

    def run(self, first: int, last: int, updates: int) -> float:
        """Train epochs ``first`` to ``last - 1`` (after ``updates`` optimizer steps); returns seconds."""
        start = time.perf_counter()
        common = (int(first), int(last), int(updates), self.orders, self.x_train, self.y_train, self.x_test,
                  self.y_test)
        training = (self.lr, self.optimizer, *self.betas, self.momentum)
        extras = (self.label_flip, self.grad_eta, self.grad_gamma, self.bounds, self.batch_size, self.state,
                  self.metrics)
        from reglab import fusedkernels

        if self.layout.kind == "lstm":
            with self.blas.limit(limits=1, user_api="blas"):
                fusedkernels.train_lstm_block(*common, self.units, self.theta, *self.moments, *self.input_ops,
                                           *self.lstm_dropout, *self.hidden_ops, *training, *extras)
        else:
            fusedkernels.train_block(*common, self.theta, *self.moments, *self.input_ops, *self.hidden_ops,
                                     *training, self.max_norm, *extras)
        offset = 0
        for param in self.params:  # back into the network's tensors
            param[...] = self.theta[:, offset:offset + param.shape[1]]
            offset += param.shape[1]
        return time.perf_counter() - start
