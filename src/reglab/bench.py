"""Benchmark: the replica engine against its autograd form, one-seed-at-a-time PyTorch and plain Lightning.

``python -m reglab.bench`` trains the dropout study's model (500 hidden units, 30 samples), the
batch-norm study's, the CNN's and the LSTM's with S seeds four ways in this one process and prints
the time per replica-epoch of each and the engine's speed-up ratios against the baselines: the
engine as the workflow runs it (``engine="fused"``: the fused loop where the model allows, see
:mod:`reglab.fused`), the replica engine by autograd alone (``engine="torch"``), a per-seed torch
loop and plain Lightning.

Every figure is the minimum over ``--repeats`` (at least 3) timed runs that follow one untimed
warm-up run: the minimum is the run least disturbed by the rest of the machine, and the warm-up pays
for one-off costs (imports, allocator, thread pools, loading compiled loops) that a long study pays
once. A case's ways of training run in turns, one run of each per round, so that a change in the
machine's load reaches all of them alike. A run of the
per-seed baselines trains all S (or ``--lightning-seeds``) seeds one after another, as one call of
the engine trains all S at once.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reglab import layers as L
from reglab.config import load_config, validate_config, variant_spec
from reglab.data import make_dataset
from reglab.shapes import output_shape
from reglab.train import configure_process, train, train_points

CASES = {
    "dropout": ("dropout", "dropout_0.4"),
    "batchnorm": ("batchnorm", "bn_after"),
    "cnn": ("cnn", "bn"),
    "rnn": ("rnn", "baseline"),
}
#: the fewest timed repeats a figure is the minimum of
MIN_REPEATS = 3


class LastState(nn.Module):
    """``nn.LSTM`` returning its last hidden state (Keras' ``LSTM(return_sequences=False)``).

    Keras' LSTM has one bias vector; torch's adds a second (``bias_hh``), here fixed at zero and not
    trained, so that the baseline trains the same parameters as the engine."""

    def __init__(self, in_features: int, units: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, units, batch_first=True)
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()
        self.lstm.bias_hh_l0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0][:, -1]


def torch_model(layer_specs: list[dict], input_shape: tuple[int, ...], seed: int) -> nn.Sequential:
    """The same network as plain ``torch.nn`` layers (Keras initialisation of dense and conv
    kernels, Keras BN constants); the head's sigmoid/softmax lives in the loss."""
    gen = torch.Generator().manual_seed(seed)
    for spec in layer_specs:  # options the plain layers below would silently leave out
        (kind, p), = spec.items()
        unsupported = [k for k in ("max_norm", "unit_norm", "weight_noise", "dropout", "recurrent_dropout")
                       if kind in ("dense", "lstm") and p.get(k)]
        if unsupported:
            raise ValueError(f"the benchmark's torch models have no {kind} with {', '.join(unsupported)}")
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    mods, shape = [], tuple(input_shape)
    for spec in layer_specs:
        (kind, p), = spec.items()
        out = output_shape(kind, p, shape)
        if kind in ("dense", "conv2d"):
            if kind == "dense":
                mod = nn.Linear(shape[0], p["units"])
                fans = (shape[0], p["units"])
            else:
                k = p["kernel_size"]
                mod = nn.Conv2d(shape[0], p["filters"], k, padding=p["padding"])
                fans = (k * k * shape[0], k * k * p["filters"])
            with torch.no_grad():
                L.keras_init_(mod.weight, p["kernel_initializer"], *fans, gen)
                mod.bias.zero_()
            mods.append(mod)
            if p["activation"] in acts and not (kind == "dense" and spec is layer_specs[-1]):
                mods.append(acts[p["activation"]]())
        elif kind == "batch_norm":
            cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            mods.append(cls(shape[0] if len(shape) == 3 else shape[-1], eps=p["epsilon"], momentum=1 - p["momentum"]))
        elif kind == "dropout":
            mods.append(nn.Dropout(p["rate"]))
        elif kind == "spatial_dropout2d":
            mods.append(nn.Dropout2d(p["rate"]))
        elif kind == "max_pooling2d":
            mods.append(nn.MaxPool2d(p["pool_size"]))
        elif kind == "flatten":
            mods.append(nn.Flatten())
        elif kind == "lstm":
            mods.append(LastState(shape[1], p["units"]))
        elif kind == "activation":
            mods.append(acts[p["name"]]())
        else:
            raise ValueError(f"the benchmark models use no {kind} layer")
        shape = out
    return nn.Sequential(*mods)


def torch_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from logits: binary for one output, categorical for several."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), y)
    return F.cross_entropy(logits, y.long())


def torch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of correct predictions (probability > 0.5, or argmax)."""
    predicted = (logits.squeeze(-1) > 0).float() if logits.shape[-1] == 1 else logits.argmax(-1).float()
    return (predicted == y).float().mean()


def torch_optimizer(params, spec: dict) -> torch.optim.Optimizer:
    """torch's own optimizer closest to the Keras one the study names (trainable ``params`` only)."""
    params = [p for p in params if p.requires_grad]
    if spec["name"] == "adam":
        return torch.optim.Adam(params, lr=spec["lr"], betas=(spec["beta_1"], spec["beta_2"]), eps=spec["epsilon"])
    return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"])


def run_torch_loop(spec: dict, data: dict, seed: int) -> None:
    """A hand-written PyTorch training loop for one seed, evaluating the test set every epoch."""
    torch.manual_seed(seed)
    model = torch_model(spec["layers"], data["x_train"].shape[1:], seed)
    opt = torch_optimizer(model.parameters(), spec["training"]["optimizer"])
    x, y = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    xt, yt = torch.as_tensor(data["x_test"]), torch.as_tensor(data["y_test"])
    bs = spec["training"]["batch_size"]
    for _ in range(spec["training"]["epochs"]):
        model.train()
        for idx in torch.randperm(len(x)).split(bs):
            loss = torch_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xt)
            torch_loss(logits, yt)
            torch_accuracy(logits, yt)


class PlainLitModel(pl.LightningModule):
    """Straightforward Lightning: automatic optimisation, logged metrics, a validation loop."""

    def __init__(self, spec: dict, input_shape: tuple[int, ...], seed: int) -> None:
        super().__init__()
        self.model = torch_model(spec["layers"], input_shape, seed)
        self.opt_spec = spec["training"]["optimizer"]

    def _step(self, batch, name: str):
        x, y = batch
        logits = self.model(x)
        loss = torch_loss(logits, y)
        self.log(f"{name}_loss", loss, on_epoch=True, on_step=False)
        self.log(f"{name}_acc", torch_accuracy(logits, y), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch_optimizer(self.parameters(), self.opt_spec)


def run_plain_lightning(spec: dict, data: dict, seed: int) -> None:
    """Train one seed with textbook Lightning usage (DataLoaders, validation every epoch)."""
    pl.seed_everything(seed, workers=True, verbose=False)
    tensors = {k: torch.as_tensor(v) for k, v in data.items()}
    bs = spec["training"]["batch_size"]
    train_dl = DataLoader(TensorDataset(tensors["x_train"], tensors["y_train"]), batch_size=bs, shuffle=True)
    val_dl = DataLoader(TensorDataset(tensors["x_test"], tensors["y_test"]), batch_size=len(tensors["x_test"]))
    trainer = pl.Trainer(
        max_epochs=spec["training"]["epochs"], accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(PlainLitModel(spec, data["x_train"].shape[1:], seed), train_dl, val_dl)


def best_times(fns: dict[str, Callable[[], object]], repeats: int = MIN_REPEATS,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds of each ``fns[name]()``: the minimum of ``repeats`` timed calls after one untimed
    warm-up call. The calls are interleaved, one of each per round (the warm-ups first), so that a
    change in the machine's load while they run reaches every figure alike, not only the last ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    for fn in fns.values():  # warm-ups, not timed
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: min(t) for name, t in times.items()}


def bench_case(spec: dict, data: dict, seeds: int, lightning_seeds: int, repeats: int = MIN_REPEATS,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per replica-epoch of the four ways of training ``spec``: each the best of ``repeats``
    runs after a warm-up, the four interleaved (:func:`best_times`); a baseline's run trains its
    seeds one after another."""
    epochs = spec["training"]["epochs"]

    def engine():
        train(spec, data, list(range(seeds)), engine="fused")

    def autograd():
        train(spec, data, list(range(seeds)), engine="torch")

    def loop():
        for s in range(seeds):
            run_torch_loop(spec, data, s)

    def lightning():
        for s in range(lightning_seeds):
            run_plain_lightning(spec, data, s)

    t = best_times({"engine": engine, "autograd": autograd, "torch_loop": loop, "lightning": lightning}, repeats, clock)
    return {"engine": t["engine"] / (seeds * epochs), "autograd": t["autograd"] / (seeds * epochs),
            "torch_loop": t["torch_loop"] / (seeds * epochs), "lightning": t["lightning"] / (lightning_seeds * epochs)}


#: the sweep case: a grid (study, grid id) whose points x seeds train three ways
SWEEP = ("dropout_ext", "dropout")


def bench_sweep(specs: list[dict], data: dict, seeds: int, repeats: int = MIN_REPEATS,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per replica-epoch of a sweep (every spec with every seed) trained four ways: as the
    replicas of one model (:func:`reglab.train.train_points`), the same by autograd alone, point
    after point as separate models of ``seeds`` replicas (by autograd: how grid packs trained
    before), and a per-seed torch loop."""
    replica_epochs = len(specs) * seeds * specs[0]["training"]["epochs"]

    def replicas():
        train_points(specs, data, list(range(seeds)), engine="fused")

    def autograd():
        train_points(specs, data, list(range(seeds)), engine="torch")

    def points():
        for spec in specs:
            train(spec, data, list(range(seeds)), engine="torch")

    def loop():
        for spec in specs:
            for s in range(seeds):
                run_torch_loop(spec, data, s)

    t = {name: seconds / replica_epochs for name, seconds in best_times(
        {"replicas": replicas, "autograd": autograd, "points": points, "torch_loop": loop}, repeats, clock).items()}
    for name in ("autograd", "points", "torch_loop"):
        t[f"ratio_{'loop' if name == 'torch_loop' else name}"] = t[name] / t["replicas"]
    return t


def sweep_specs(config: dict, epochs: int) -> list[dict]:
    """The specs of the sweep case's grid points, at most ``epochs`` epochs each."""
    study, grid_id = SWEEP
    grid = next(g for g in config["studies"][study]["grids"] if g["id"] == grid_id)
    specs = [variant_spec(config, study, v) for v in grid["variants"]]
    for spec in specs:
        spec["training"]["epochs"] = min(epochs, spec["training"]["epochs"])
    return specs


def _repeats(text: str) -> int:
    value = int(text)
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_REPEATS} (a figure is the minimum of the repeats)")
    return value


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    parser = argparse.ArgumentParser(prog="python -m reglab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml", help="config file with the studies")
    parser.add_argument("--seeds", type=int, default=10, help="seeds (replicas) per case")
    parser.add_argument("--lightning-seeds", type=int, default=2, help="seeds for the slow plain-Lightning baseline")
    parser.add_argument("--epochs", type=int, default=300, help="epochs per case (the studies' own are longer)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=_repeats, default=MIN_REPEATS,
                        help=f"timed runs per figure, after one warm-up run; the minimum is reported (>= {MIN_REPEATS})")
    parser.add_argument("--cases", nargs="+", choices=[*CASES, "sweep"], default=[*CASES, "sweep"],
                        help="which models to time; sweep: a grid's points x seeds as replicas of one model")
    args = parser.parse_args(argv)
    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    configure_process(args.threads)
    config = validate_config(load_config(args.config))
    report = {}
    print(f"each figure: the minimum of {args.repeats} timed repeats after 1 untimed warm-up run")
    print(f"{'case':<10} {'engine':>12} {'autograd':>12} {'torch loop':>12} {'lightning':>12} {'vs autograd':>11}"
          f" {'vs loop':>8} {'vs L':>8}   (per replica-epoch)")
    for case in (c for c in args.cases if c != "sweep"):
        study, variant = CASES[case]
        spec = variant_spec(config, study, variant)
        spec["training"]["epochs"] = min(args.epochs, spec["training"]["epochs"])
        data = make_dataset(spec["dataset"])
        t = bench_case(spec, data, args.seeds, args.lightning_seeds, args.repeats, clock)
        t["ratio_autograd"] = t["autograd"] / t["engine"]
        t["ratio_loop"], t["ratio_lightning"] = t["torch_loop"] / t["engine"], t["lightning"] / t["engine"]
        t["repeats"] = args.repeats
        report[case] = t
        print(f"{case:<10} {t['engine']*1e6:>10.1f}us {t['autograd']*1e6:>10.1f}us {t['torch_loop']*1e6:>10.1f}us"
              f" {t['lightning']*1e6:>10.1f}us {t['ratio_autograd']:>10.1f}x {t['ratio_loop']:>7.1f}x"
              f" {t['ratio_lightning']:>7.1f}x")
    if "sweep" in args.cases:
        specs = sweep_specs(config, args.epochs)
        t = bench_sweep(specs, make_dataset(specs[0]["dataset"]), args.seeds, args.repeats, clock)
        t["repeats"], t["points_n"] = args.repeats, len(specs)
        report["sweep"] = t
        print(f"\nsweep {SWEEP[0]}/{SWEEP[1]}: {len(specs)} points x {args.seeds} seeds (per replica-epoch)")
        print(f"{'':<10} {'one model':>12} {'autograd':>12} {'point by point':>15} {'torch loop':>12}"
              f" {'vs autograd':>11} {'vs points':>10} {'vs loop':>8}")
        print(f"{'sweep':<10} {t['replicas']*1e6:>10.1f}us {t['autograd']*1e6:>10.1f}us {t['points']*1e6:>13.1f}us"
              f" {t['torch_loop']*1e6:>10.1f}us {t['ratio_autograd']:>10.1f}x {t['ratio_points']:>9.1f}x"
              f" {t['ratio_loop']:>7.1f}x")
    return report


if __name__ == "__main__":
    main()
