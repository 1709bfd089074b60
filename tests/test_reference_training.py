"""Replica r of a batched training job equals an independent training of its seed in plain torch.

The reference here never uses reglab's layers, ReplicaNet or ReplicaClassifier: each seed is one
plain torch network (``nn.Linear``, ``nn.Conv2d``, ``nn.MaxPool2d``, explicit LSTM gates), trained
in a per-seed loop with Keras' optimizers, BatchNormalization, max-norm and LSTM dropout written
out below. From reglab it takes only the seed's random streams (``seed_generator`` and the stream
numbers) and reproduces the engine's draw order itself:

- INIT stream: each layer's weights in layer order, per layer in the replica's weight layout
  (Dense kernel ``[in, units]``, Conv2D kernel ``[filters, in, kh, kw]``, LSTM kernel ``[in, 4U]``
  then recurrent kernel ``[U, 4U]``).
- SHUFFLE stream: ``argsort(rand(epochs, n))``, one order per epoch.
- NOISE stream, in time order: at each epoch's start the label flips (``rand(n)``); per batch, in
  layer order, weight noise (``randn`` of the kernel), dropout masks (``rand``), Gaussian noise
  (``randn``) and the LSTM's masks; after the backward pass the gradient noise of each parameter
  in parameter order.

The whole history (train metrics as Keras reports them, test metrics in inference mode, every
epoch), the final evaluation and the final weights are compared.

Both engines are checked: autograd (``engine="torch"``, every family) and the fused loops
(``engine="fused"``, the families :func:`reglab.fused.fused_layout` covers: its LSTM loop to the
precision of its approximate tanh and sigmoid, well within the tolerances). The fused engine draws
from a SplitMix64 stream per replica instead of torch's generator, in the same order; the reference
then takes its draws from that stream (:class:`SplitMixStream`, the fused engine's own fills, whose
distributions tests/test_fused.py checks), and computes everything else itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reglab.data import make_dataset
from reglab.fused import fused_layout, noise_states
from reglab.model import STREAM_INIT, STREAM_NOISE, STREAM_SHUFFLE, seed_generator
from reglab.train import train

SEEDS = [3, 7, 11]
CHECKED = (1, 2)  # replicas compared with their independent training

DATASETS = {
    "circles": {"generator": "make_circles", "params": {"n_samples": 100, "noise": 0.1, "random_state": 1},
                "n_train": 60},
    "digits": {"generator": "load_digits", "params": {"n_samples": 110, "random_state": 1}, "n_train": 60},
    "sequences": {"generator": "make_sequences",
                  "params": {"n_samples": 80, "length": 8, "noise": 0.5, "n_classes": 2, "random_state": 1},
                  "n_train": 48},
}

ADAM = {"name": "adam", "lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False}


def dense(units, **options):
    return {"dense": {"units": units, "activation": "linear", "kernel_initializer": "glorot_uniform",
                      "use_bias": True, "max_norm": None, "unit_norm": False, "weight_noise": 0.0, **options}}


def batch_norm(**options):
    return {"batch_norm": {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True, **options}}


def conv2d(filters, kernel_size, **options):
    return {"conv2d": {"filters": filters, "kernel_size": kernel_size, "padding": "valid", "activation": "linear",
                       "kernel_initializer": "glorot_uniform", "use_bias": True, **options}}


def lstm(units, **options):
    return {"lstm": {"units": units, "return_sequences": False, "dropout": 0.0, "recurrent_dropout": 0.0, **options}}


SIGMOID_HEAD = dense(1, activation="sigmoid")
SOFTMAX_HEAD = dense(10, activation="softmax")

#: family -> (dataset, layers, optimizer, epochs, batch size, training extras). Some have an odd number of
#: units: the fused engine draws its normals in pairs, each op's batch and each parameter tensor's
#: gradient noise in one go, and an odd-sized block shows whether the engine splits them as the
#: reference does
FAMILIES = {
    "bn_mlp_sgd": ("circles", [dense(12, activation="relu", kernel_initializer="he_uniform"), batch_norm(),
                             SIGMOID_HEAD], SGD, 3, 16, {}),
    "bn_before_relu_no_affine": ("circles", [batch_norm(momentum=0.0), dense(12, kernel_initializer="he_normal"),
                                           batch_norm(center=False, scale=False), {"activation": {"name": "relu"}},
                                           SIGMOID_HEAD], SGD, 3, 16, {}),
    "dropout_mlp_adam": ("circles", [{"dropout": {"rate": 0.2}}, dense(16, activation="relu"),
                                   {"dropout": {"rate": 0.4}}, SIGMOID_HEAD], ADAM, 3, 16, {}),
    "noise_mlp": ("circles", [{"gaussian_noise": {"stddev": 0.1}}, dense(15, kernel_initializer="glorot_normal"),
                            {"gaussian_noise": {"stddev": 0.3}}, {"activation": {"name": "relu"}},
                            SIGMOID_HEAD], ADAM, 3, 16, {}),
    "max_norm": ("circles", [dense(16, activation="relu", max_norm=0.6), {"dropout": {"rate": 0.3}},
                           dense(1, activation="sigmoid", unit_norm=True)], ADAM, 3, 16, {}),
    "weight_noise": ("circles", [dense(16, activation="relu", weight_noise=0.1),
                               dense(1, activation="sigmoid", weight_noise=0.05)], ADAM, 3, 16, {}),
    "gradient_noise": ("circles", [dense(16, activation="tanh"), SIGMOID_HEAD], ADAM, 3, 16,
                       {"gradient_noise": {"eta": 0.01, "gamma": 0.55}}),
    "label_flip": ("circles", [dense(16, activation="relu"), SIGMOID_HEAD], ADAM, 3, 16, {"label_flip": 0.2}),
    "max_norm_sgd": ("circles", [dense(16, activation="relu", max_norm=0.6), {"dropout": {"rate": 0.3}},
                               SIGMOID_HEAD], SGD, 3, 16, {}),
    "gradient_noise_relu": ("circles", [dense(15, activation="relu"), SIGMOID_HEAD], ADAM, 3, 16,
                            {"gradient_noise": {"eta": 0.01, "gamma": 0.55}, "label_flip": 0.1}),
    "label_flip_10_classes": ("digits", [{"flatten": {}}, dense(16, activation="relu"), SOFTMAX_HEAD], ADAM, 2, 16,
                              {"label_flip": 0.3}),
    "cnn_bn_spatial_dropout": ("digits", [conv2d(4, 3, padding="same", activation="relu"), batch_norm(),
                                        {"spatial_dropout2d": {"rate": 0.3}}, conv2d(4, 3, activation="relu"),
                                        {"max_pooling2d": {"pool_size": 2}}, {"dropout": {"rate": 0.25}},
                                        {"flatten": {}}, SOFTMAX_HEAD], ADAM, 2, 16, {}),
    "lstm_variational": ("sequences", [lstm(6, dropout=0.3, recurrent_dropout=0.4), SIGMOID_HEAD], ADAM, 3, 16, {}),
    "lstm_input_dropout_bn": ("sequences", [lstm(6, return_sequences=True, dropout=0.3), batch_norm(),
                                          lstm(5), SIGMOID_HEAD], SGD, 2, 16, {}),
    "lstm_dropouts_2_features": ("sequences_2", [{"dropout": {"rate": 0.2}}, lstm(6, dropout=0.3),
                                               {"dropout": {"rate": 0.4}}, SIGMOID_HEAD], ADAM, 3, 16, {}),
    "lstm_noise_sgd": ("sequences", [{"gaussian_noise": {"stddev": 0.1}}, lstm(5), {"gaussian_noise": {"stddev": 0.2}},
                                     {"activation": {"name": "relu"}}, SIGMOID_HEAD], SGD, 3, 16,
                       {"label_flip": 0.1, "gradient_noise": {"eta": 0.01, "gamma": 0.55}}),
}


def two_features(data: dict) -> dict:
    """Sequences with a second feature per step (the first's square, less 1)."""
    return {k: np.concatenate([v, v * v - 1], axis=-1).astype(np.float32) if k.startswith("x") else v
            for k, v in data.items()}


def make_spec(family: str) -> dict:
    dataset, layers, optimizer, epochs, batch_size, extras = FAMILIES[family]
    dataset = dataset.removesuffix("_2")
    training = {"optimizer": optimizer, "epochs": epochs, "batch_size": batch_size, "label_flip": 0.0,
                "gradient_noise": {"eta": 0.0, "gamma": 0.55}, **extras}
    return {"study": "reference", "variant": family, "dataset": {"name": dataset, **DATASETS[dataset]},
            "training": training, "layers": layers}


# ---- plain torch: Keras initialisers, masks, layers ----


def keras_init(shape, name, fan_in, fan_out, g):
    """Keras' glorot/he uniform (U(+-sqrt(3/fan))) or normal (truncated at 2 std, std sqrt(1/fan)/0.8796...)."""
    fan = (fan_in + fan_out) / 2 if name.startswith("glorot") else fan_in / 2
    if name.endswith("uniform"):
        limit = math.sqrt(3 / fan)
        return torch.empty(shape).uniform_(-limit, limit, generator=g)
    std = math.sqrt(1 / fan) / 0.87962566103423978
    return nn.init.trunc_normal_(torch.empty(shape), 0.0, std, -2 * std, 2 * std, generator=g)


class SplitMixStream:
    """A replica's random stream in the fused engine: its SplitMix64 state, drawn from in order."""

    def __init__(self, seed):
        self.state = noise_states([seed])

    def draw(self, shape, normal: bool) -> torch.Tensor:
        from reglab import fusedkernels

        out = np.empty(math.prod(shape), np.float32)
        (fusedkernels.fill_normal if normal else fusedkernels.fill_uniform)(self.state, 0, out)
        return torch.from_numpy(out).reshape(shape)


def rand(shape, g):
    """Uniforms on [0, 1) from a torch generator or a fused engine stream, in row-major order."""
    return g.draw(tuple(shape), normal=False) if isinstance(g, SplitMixStream) else torch.rand(shape, generator=g)


def randn(shape, g):
    """Standard normals from a torch generator or a fused engine stream, in row-major order."""
    return g.draw(tuple(shape), normal=True) if isinstance(g, SplitMixStream) else torch.randn(shape, generator=g)


def inverted_dropout(shape, rate, g):
    """Keras' dropout mask: kept (uniform < 1 - rate) scaled by 1/(1 - rate), else 0 (the keep
    probability and the scale as the engines take them: 1 - rate and 1/(1 - rate) in float64,
    rounded once to float32)."""
    keep = 1 - rate
    return (rand(shape, g) < np.float32(keep)).float() * np.float32(1 / keep)


class Layer(nn.Module):
    """A plain-torch layer of one seed. ``weights`` lists (parameter, shape of that weight in the
    engine's per-replica layout, map from that layout to the parameter's) in the engine's order."""

    weights = ()

    def init(self, g):
        pass

    def run(self, x, noise, training):
        raise NotImplementedError


class Dense(Layer):
    def __init__(self, in_features, units, activation, kernel_initializer, use_bias, max_norm, unit_norm,
                 weight_noise):
        super().__init__()
        self.linear = nn.Linear(in_features, units, bias=use_bias)
        self.act = {"linear": None, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                    "softmax": lambda z: torch.softmax(z, -1)}[activation]
        self.initializer, self.weight_noise = kernel_initializer, weight_noise
        self.max_norm, self.unit_norm = max_norm, unit_norm
        self.weights = [(self.linear.weight, (in_features, units), lambda w: w.T)]
        if use_bias:
            self.weights.append((self.linear.bias, (1, units), lambda b: b[0]))

    def init(self, g):
        units, fan_in = self.linear.weight.shape
        with torch.no_grad():
            self.linear.weight.copy_(keras_init((fan_in, units), self.initializer, fan_in, units, g).T)
            if self.linear.bias is not None:
                self.linear.bias.zero_()

    def pre_activation(self, x, noise, training):
        w = self.linear.weight
        if training and self.weight_noise > 0:
            w = w + self.weight_noise * torch.randn(w.shape[::-1], generator=noise).T
        return F.linear(x, w, self.linear.bias)

    def run(self, x, noise, training):
        z = self.pre_activation(x, noise, training)
        return z if self.act is None else self.act(z)

    @torch.no_grad()
    def constrain(self):
        """Keras' MaxNorm / UnitNorm over each unit's incoming weights (a row of nn.Linear's weight)."""
        w = self.linear.weight
        norms = w.pow(2).sum(dim=1, keepdim=True).sqrt()
        if self.unit_norm:
            w.copy_(w / (1e-7 + norms))
        elif self.max_norm is not None:
            w.copy_(w * (norms.clamp(0, self.max_norm) / (1e-7 + norms)))


class BatchNorm(Layer):
    """Keras' BatchNormalization over the channel/feature axis: batch mean and biased variance in
    training, moving = moving * momentum + batch * (1 - momentum); moving statistics in inference."""

    def __init__(self, features, axis, momentum, epsilon, center, scale):
        super().__init__()
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.gamma = nn.Parameter(torch.ones(features)) if scale else None
        self.beta = nn.Parameter(torch.zeros(features)) if center else None
        self.moving_mean, self.moving_variance = torch.zeros(features), torch.ones(features)
        self.weights = [(p, (1, features), lambda t: t[0]) for p in (self.gamma, self.beta) if p is not None]

    def run(self, x, noise, training):
        axis = self.axis % x.ndim
        dims = tuple(d for d in range(x.ndim) if d != axis)
        shape = [1] * x.ndim
        shape[axis] = -1
        if training:
            mean = x.mean(dim=dims)
            var = ((x - mean.view(shape)) ** 2).mean(dim=dims)
            with torch.no_grad():
                self.moving_mean = self.moving_mean * self.momentum + mean.detach() * (1 - self.momentum)
                self.moving_variance = self.moving_variance * self.momentum + var.detach() * (1 - self.momentum)
        else:
            mean, var = self.moving_mean, self.moving_variance
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.epsilon)
        if self.gamma is not None:
            y = y * self.gamma.view(shape)
        return y if self.beta is None else y + self.beta.view(shape)


class Dropout(Layer):
    def __init__(self, rate, per_map=False):
        super().__init__()
        self.rate, self.per_map = rate, per_map

    def run(self, x, noise, training):
        if not training or self.rate == 0:
            return x
        shape = (*x.shape[:2], 1, 1) if self.per_map else x.shape  # SpatialDropout2D: per sample and channel
        return x * inverted_dropout(shape, self.rate, noise)


class GaussianNoise(Layer):
    def __init__(self, stddev):
        super().__init__()
        self.stddev = stddev

    def run(self, x, noise, training):
        return x + self.stddev * randn(x.shape, noise) if training and self.stddev > 0 else x


class Plain(Layer):
    """A layer without weights or randomness: activation, pooling, flatten."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def run(self, x, noise, training):
        return self.fn(x)


class Conv2D(Layer):
    def __init__(self, in_channels, filters, kernel_size, padding, activation, kernel_initializer, use_bias):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, kernel_size, padding=padding, bias=use_bias)
        self.act = {"linear": None, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
        self.initializer = kernel_initializer
        self.weights = [(self.conv.weight, tuple(self.conv.weight.shape), lambda w: w)]
        if use_bias:
            self.weights.append((self.conv.bias, (filters,), lambda b: b))

    def init(self, g):
        filters, channels, kh, kw = self.conv.weight.shape
        with torch.no_grad():
            self.conv.weight.copy_(keras_init(self.conv.weight.shape, self.initializer, kh * kw * channels,
                                              kh * kw * filters, g))
            if self.conv.bias is not None:
                self.conv.bias.zero_()

    def run(self, x, noise, training):
        y = self.conv(x)
        return y if self.act is None else self.act(y)


class LSTM(Layer):
    """Keras 3's LSTM written gate by gate (i, f, c, o), Keras' weight layout. In training, masks
    drawn once per batch: with recurrent_dropout (Keras' implementation 1) four input masks (with
    dropout) then four recurrent masks, one per gate; with dropout alone one input mask for all gates."""

    def __init__(self, in_features, units, return_sequences, dropout, recurrent_dropout):
        super().__init__()
        self.units, self.return_sequences = units, return_sequences
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout
        self.kernel = nn.Parameter(torch.empty(in_features, 4 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 4 * units))
        self.bias = nn.Parameter(torch.zeros(4 * units))
        self.weights = [(self.kernel, (in_features, 4 * units), lambda w: w),
                        (self.recurrent_kernel, (units, 4 * units), lambda w: w),
                        (self.bias, (1, 4 * units), lambda b: b[0])]

    def init(self, g):
        fan_in, fan_out = self.kernel.shape
        u = self.units
        with torch.no_grad():
            self.kernel.copy_(keras_init(self.kernel.shape, "glorot_uniform", fan_in, fan_out, g))
            nn.init.orthogonal_(self.recurrent_kernel, generator=g)
            self.bias.copy_(torch.cat([torch.zeros(u), torch.ones(u), torch.zeros(2 * u)]))

    def masks(self, b, f, noise, training):
        u = self.units
        in_masks, rec_masks = torch.ones(4, b, f), torch.ones(4, b, u)
        if training and self.recurrent_dropout > 0:
            if self.dropout > 0:
                in_masks = inverted_dropout((4, b, f), self.dropout, noise)
            rec_masks = inverted_dropout((4, b, u), self.recurrent_dropout, noise)
        elif training and self.dropout > 0:
            in_masks = inverted_dropout((b, f), self.dropout, noise).expand(4, b, f)
        return in_masks, rec_masks

    def run(self, x, noise, training):
        b, t_len, f = x.shape
        in_masks, rec_masks = self.masks(b, f, noise, training)
        kernels = self.kernel.split(self.units, dim=1)
        recurrent = self.recurrent_kernel.split(self.units, dim=1)
        biases = self.bias.split(self.units)
        h = c = torch.zeros(b, self.units)
        outputs = []
        for t in range(t_len):
            z = [(x[:, t] * in_masks[k]) @ kernels[k] + biases[k] + (h * rec_masks[k]) @ recurrent[k] for k in range(4)]
            i, f_gate, o = torch.sigmoid(z[0]), torch.sigmoid(z[1]), torch.sigmoid(z[3])
            c = f_gate * c + i * torch.tanh(z[2])
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1) if self.return_sequences else h


def build(spec: dict, shape: tuple[int, ...]) -> tuple[Layer, tuple[int, ...]]:
    """One plain-torch layer and its per-sample output shape."""
    (kind, p), = spec.items()
    if kind == "dense":
        return Dense(shape[-1], **p), (p["units"],)
    if kind == "batch_norm":
        return BatchNorm(shape[0] if len(shape) == 3 else shape[-1], 1 if len(shape) == 3 else -1, **p), shape
    if kind == "dropout":
        return Dropout(p["rate"]), shape
    if kind == "spatial_dropout2d":
        return Dropout(p["rate"], per_map=True), shape
    if kind == "gaussian_noise":
        return GaussianNoise(p["stddev"]), shape
    if kind == "activation":
        return Plain({"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                      "linear": lambda z: z}[p["name"]]), shape
    if kind == "conv2d":
        layer = Conv2D(shape[0], **p)
        k = p["kernel_size"] - 1 if p["padding"] == "valid" else 0
        return layer, (p["filters"], shape[1] - k, shape[2] - k)
    if kind == "max_pooling2d":
        pool = p.get("pool_size", 2)
        return Plain(nn.MaxPool2d(pool)), (shape[0], shape[1] // pool, shape[2] // pool)
    if kind == "flatten":
        return Plain(nn.Flatten()), (math.prod(shape),)
    if kind == "lstm":
        out = (shape[0], p["units"]) if p["return_sequences"] else (p["units"],)
        return LSTM(shape[1], **p), out
    raise ValueError(kind)


class Reference(nn.Module):
    """One seed's network in plain torch; returns the head's pre-activation (logits)."""

    def __init__(self, layer_specs, input_shape, seed, engine="torch"):
        super().__init__()
        layers, shape = [], tuple(input_shape)
        for spec in layer_specs:
            layer, shape = build(spec, shape)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.binary = shape == (1,)
        init = seed_generator(seed, STREAM_INIT)
        for layer in self.layers:
            layer.init(init)
        self.noise = seed_generator(seed, STREAM_NOISE) if engine == "torch" else SplitMixStream(seed)

    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def forward(self, x, training):
        for layer in self.layers[:-1]:
            x = layer.run(x, self.noise, training)
        z = self.layers[-1].pre_activation(x, self.noise, training)
        return z[:, 0] if self.binary else z

    def loss(self, z, y):
        return F.binary_cross_entropy_with_logits(z, y) if self.binary else F.cross_entropy(z, y.long())

    def correct(self, z, y):
        predicted = (z > 0).float() if self.binary else z.argmax(-1).float()
        return (predicted == y).sum().item()

    @torch.no_grad()
    def evaluate(self, x, y):
        z = self.forward(x, training=False)
        return self.loss(z, y).item(), self.correct(z, y) / len(y)


class KerasAdam:
    """Keras 3's Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps)."""

    def __init__(self, params, lr, beta_1, beta_2, epsilon):
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, beta_1, beta_2, epsilon
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        alpha = self.lr * math.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            m += (p.grad - m) * (1 - self.b1)
            v += (p.grad * p.grad - v) * (1 - self.b2)
            p -= alpha * m / (v.sqrt() + self.eps)


class KerasSGD:
    """Keras 3's SGD with momentum: v = mu v - lr g; w += v."""

    def __init__(self, params, lr, momentum, nesterov):
        assert not nesterov
        self.params, self.lr, self.mu = params, lr, momentum
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        for p, v in zip(self.params, self.v):
            v.copy_(v * self.mu - self.lr * p.grad)
            p += v


def flip_labels(y, rate, n_classes, g):
    """Each label flipped with probability ``rate`` to another class (u < rate; u/rate picks which)."""
    u = rand(y.shape, g)
    other = (y + 1 + torch.floor(u / rate * (n_classes - 1))) % n_classes
    return torch.where(u < rate, other, y)


def reference_training(spec: dict, data: dict, seed: int, engine: str = "torch") -> tuple[dict, dict, Reference]:
    """One seed's training alone: history per epoch, final evaluation and the trained network; its
    random draws from the stream of ``engine``'s replica with this seed."""
    training = spec["training"]
    x, y = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    xt, yt = torch.as_tensor(data["x_test"]), torch.as_tensor(data["y_test"])
    net = Reference(spec["layers"], x.shape[1:], seed, engine)
    params = [w for w, _, _ in net.weights()]
    opt_spec = dict(training["optimizer"])
    opt = {"adam": KerasAdam, "sgd": KerasSGD}[opt_spec.pop("name")](params, **opt_spec)
    dense_layers = [layer for layer in net.layers if isinstance(layer, Dense)]
    eta, gamma = training["gradient_noise"]["eta"], training["gradient_noise"]["gamma"]
    n_classes = 2 if net.binary else net.layers[-1].linear.out_features
    epochs, n = training["epochs"], len(x)
    orders = torch.argsort(torch.rand(epochs, n, generator=seed_generator(seed, STREAM_SHUFFLE)), dim=1)
    history = {m: [] for m in ("train_loss", "train_acc", "test_loss", "test_acc")}
    updates = 0
    for order in orders:
        targets = flip_labels(y, training["label_flip"], n_classes, net.noise) if training["label_flip"] > 0 else y
        loss_sum = correct = 0.0
        for idx in order.split(training["batch_size"]):
            z = net(x[idx], training=True)
            loss = net.loss(z, targets[idx])
            for p in params:
                p.grad = None
            loss.backward()
            if eta > 0:
                std = math.sqrt(eta / (1 + updates) ** gamma)
                with torch.no_grad():
                    for p, shape, to_ref in net.weights():
                        p.grad += std * to_ref(randn(shape, net.noise))
            opt.step()
            for layer in dense_layers:
                layer.constrain()
            updates += 1
            loss_sum += loss.item() * len(idx)
            correct += net.correct(z.detach(), targets[idx])
        history["train_loss"].append(loss_sum / n)
        history["train_acc"].append(correct / n)
        test_loss, test_acc = net.evaluate(xt, yt)
        history["test_loss"].append(test_loss)
        history["test_acc"].append(test_acc)
    final = {}
    for split, (xs, ys) in {"train": (x, y), "test": (xt, yt)}.items():
        final[f"{split}_loss"], final[f"{split}_acc"] = net.evaluate(xs, ys)
    return history, final, net


# ---- the engine, with its trained network kept ----


def train_keeping_the_net(spec, data, seeds, monkeypatch, engine="torch"):
    """``reglab.train.train`` as the workflow calls it, and the ReplicaNet it trained."""
    from reglab import module

    trained = []
    on_fit_start = module.ReplicaClassifier.on_fit_start

    def keep(self):
        trained.append(self.net)
        on_fit_start(self)

    monkeypatch.setattr(module.ReplicaClassifier, "on_fit_start", keep)
    result = train(spec, data, seeds, engine=engine)
    return result, trained[0]


def engine_buffers(net, r):
    """Replica r's BatchNorm moving statistics, in layer order, as 1-D tensors."""
    return [b[r].flatten() for b in net.buffers()]


def reference_buffers(ref):
    """The reference's BatchNorm moving statistics, in layer order."""
    bns = [layer for layer in ref.layers if isinstance(layer, BatchNorm)]
    return [t for bn in bns for t in (bn.moving_mean, bn.moving_variance)]


@pytest.fixture(scope="module")
def datasets():
    made = {name: make_dataset(d) for name, d in DATASETS.items()}
    return {**made, "sequences_2": two_features(made["sequences"])}


def fusable(family: str) -> bool:
    spec = make_spec(family)
    return not isinstance(fused_layout(spec, make_dataset(spec["dataset"])["x_train"].shape[1:]), str)


#: the families the fused engine trains (the others fall back to autograd, tested as torch)
FUSED_FAMILIES = ["dropout_mlp_adam", "noise_mlp", "label_flip", "max_norm_sgd", "gradient_noise_relu",
                  "lstm_dropouts_2_features", "lstm_noise_sgd"]
CASES = [(f, "torch") for f in FAMILIES] + [(f, "fused") for f in FUSED_FAMILIES]


def test_the_fused_families_are_those_the_fused_engine_trains():
    assert [f for f in FAMILIES if fusable(f)] == FUSED_FAMILIES


@pytest.mark.parametrize(("family", "engine"), CASES)
def test_replica_equals_its_independent_plain_torch_training(family, engine, datasets, monkeypatch):
    spec = make_spec(family)
    data = datasets[FAMILIES[family][0]]
    result, net = train_keeping_the_net(spec, data, SEEDS, monkeypatch, engine)
    assert result.engine == engine
    for r in CHECKED:
        history, final, ref = reference_training(spec, data, SEEDS[r], engine)
        for metric, values in history.items():
            tol = dict(atol=1e-6, rtol=0) if metric.endswith("acc") else dict(atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(result.history[metric][:, r], values, **tol, err_msg=f"{metric}, replica {r}")
        for metric, value in final.items():
            tol = dict(atol=1e-6, rtol=0) if metric.endswith("acc") else dict(atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(result.final[metric][r], value, **tol, err_msg=f"final {metric}, replica {r}")
        engine_weights = list(net.parameters())
        assert len(engine_weights) == len(ref.weights())
        for k, (p, (w, _, to_ref)) in enumerate(zip(engine_weights, ref.weights())):
            torch.testing.assert_close(to_ref(p[r].detach()), w.detach(), atol=1e-5, rtol=1e-4,
                                       msg=lambda m, k=k: f"weight {k}, replica {r}: {m}")
        for got, want in zip(engine_buffers(net, r), reference_buffers(ref), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ---- each random layer's draws, against plain torch draws from the replica's noise stream ----


def noise_gens(replicas=3):
    return [seed_generator(s, STREAM_NOISE) for s in range(replicas)]


def test_dropout_draws_one_mask_value_per_element():
    from reglab.layers import Dropout as EngineDropout

    layer = EngineDropout(0.4)
    layer.generators = noise_gens()
    x = torch.randn(3, 20, 7)
    y = layer(x)
    for r, g in enumerate(noise_gens()):
        torch.testing.assert_close(y[r], x[r] * inverted_dropout((20, 7), 0.4, g))


def test_dropout_on_feature_maps_draws_in_logical_order_whatever_the_memory_layout():
    """A replica's mask depends on its seed and the map's shape, not on the channels-last layout a
    convolution leaves its output in: the same mask as on a contiguous copy."""
    from reglab.conv import Conv2D as EngineConv2D
    from reglab.layers import Dropout as EngineDropout

    conv = EngineConv2D(3, 1, 4, 3, padding="same")
    conv.reset_parameters(noise_gens())
    maps = conv(torch.randn(3, 5, 1, 6, 6)).detach()
    assert not maps.is_contiguous()
    layer = EngineDropout(0.5)
    layer.generators = noise_gens()
    y = layer(maps)
    for r, g in enumerate(noise_gens()):
        torch.testing.assert_close(y[r], maps[r] * inverted_dropout((5, 4, 6, 6), 0.5, g))


def test_spatial_dropout_draws_one_mask_value_per_sample_and_channel():
    from reglab.conv import SpatialDropout2D

    layer = SpatialDropout2D(0.3)
    layer.generators = noise_gens()
    x = torch.randn(3, 10, 4, 5, 5)
    y = layer(x)
    for r, g in enumerate(noise_gens()):
        torch.testing.assert_close(y[r], x[r] * inverted_dropout((10, 4, 1, 1), 0.3, g))


def test_gaussian_noise_draws_one_normal_per_element():
    from reglab.layers import GaussianNoise as EngineNoise

    layer = EngineNoise(0.2)
    layer.generators = noise_gens()
    x = torch.randn(3, 20, 7)
    y = layer(x)
    for r, g in enumerate(noise_gens()):
        torch.testing.assert_close(y[r], x[r] + 0.2 * torch.randn((20, 7), generator=g))
