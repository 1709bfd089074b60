"""Benchmark: the replica engine against one-seed-at-a-time PyTorch and plain Lightning.

``python -m reglab.bench`` trains the dropout study's model (500 hidden units, 30 samples) and the
batch-norm study's model with S seeds three ways in this one process and prints the time per
replica-epoch of each and the engine's speed-up ratios against the two baselines.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reglab import layers as L
from reglab.config import load_config, validate_config, variant_spec
from reglab.data import make_dataset
from reglab.train import configure_process, train

CASES = {"dropout": ("dropout", "dropout_0.4"), "batchnorm": ("batchnorm", "bn_after")}


def torch_model(layer_specs: list[dict], in_features: int, seed: int) -> nn.Sequential:
    """The same network as plain ``torch.nn`` layers (Keras initialisation and BN constants)."""
    gen = torch.Generator().manual_seed(seed)
    mods, width = [], in_features
    for spec in layer_specs:
        (kind, p), = spec.items()
        if kind == "dense":
            lin = nn.Linear(width, p["units"])
            with torch.no_grad():
                L.keras_init_(lin.weight.T, p["kernel_initializer"], width, p["units"], gen)
                lin.bias.zero_()
            mods.append(lin)
            if p["activation"] not in ("linear", "sigmoid"):  # the sigmoid lives in the loss
                mods.append(nn.ReLU() if p["activation"] == "relu" else nn.Tanh())
            width = p["units"]
        elif kind == "batch_norm":
            mods.append(nn.BatchNorm1d(width, eps=p["epsilon"], momentum=1 - p["momentum"]))
        elif kind == "dropout":
            mods.append(nn.Dropout(p["rate"]))
        elif kind == "gaussian_noise":
            raise ValueError("the benchmark models use no noise layer")
        elif kind == "activation":
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def torch_optimizer(params, spec: dict) -> torch.optim.Optimizer:
    """torch's own optimizer closest to the Keras one the study names."""
    if spec["name"] == "adam":
        return torch.optim.Adam(params, lr=spec["lr"], betas=(spec["beta_1"], spec["beta_2"]), eps=spec["epsilon"])
    return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"])


def run_torch_loop(spec: dict, data: dict, seed: int) -> None:
    """A hand-written PyTorch training loop for one seed, evaluating the test set every epoch."""
    torch.manual_seed(seed)
    model = torch_model(spec["layers"], data["x_train"].shape[1], seed)
    opt = torch_optimizer(model.parameters(), spec["training"]["optimizer"])
    x, y = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    xt, yt = torch.as_tensor(data["x_test"]), torch.as_tensor(data["y_test"])
    bs = spec["training"]["batch_size"]
    for _ in range(spec["training"]["epochs"]):
        model.train()
        for idx in torch.randperm(len(x)).split(bs):
            loss = F.binary_cross_entropy_with_logits(model(x[idx]).squeeze(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xt).squeeze(-1)
            F.binary_cross_entropy_with_logits(logits, yt)
            ((logits > 0) == (yt > 0.5)).float().mean()


class PlainLitModel(pl.LightningModule):
    """Straightforward Lightning: automatic optimisation, logged metrics, a validation loop."""

    def __init__(self, spec: dict, in_features: int, seed: int) -> None:
        super().__init__()
        self.model = torch_model(spec["layers"], in_features, seed)
        self.opt_spec = spec["training"]["optimizer"]

    def _step(self, batch, name: str):
        x, y = batch
        logits = self.model(x).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        self.log(f"{name}_loss", loss, on_epoch=True, on_step=False)
        self.log(f"{name}_acc", ((logits > 0) == (y > 0.5)).float().mean(), on_epoch=True, on_step=False)
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
    trainer.fit(PlainLitModel(spec, data["x_train"].shape[1], seed), train_dl, val_dl)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_case(spec: dict, data: dict, seeds: int, lightning_seeds: int) -> dict[str, float]:
    """Seconds per replica-epoch of the three ways of training ``spec``."""
    epochs = spec["training"]["epochs"]
    engine = timed(train, spec, data, list(range(seeds))) / (seeds * epochs)
    loop = sum(timed(run_torch_loop, spec, data, s) for s in range(seeds)) / (seeds * epochs)
    lit = sum(timed(run_plain_lightning, spec, data, s) for s in range(lightning_seeds)) / (lightning_seeds * epochs)
    return {"engine": engine, "torch_loop": loop, "lightning": lit}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m reglab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml", help="config file with the studies")
    parser.add_argument("--seeds", type=int, default=10, help="seeds (replicas) per case")
    parser.add_argument("--lightning-seeds", type=int, default=2, help="seeds for the slow plain-Lightning baseline")
    parser.add_argument("--epochs", type=int, default=300, help="epochs per case (the studies' own are longer)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    configure_process(args.threads)
    config = validate_config(load_config(args.config))
    report = {}
    print(f"{'case':<10} {'engine':>12} {'torch loop':>12} {'lightning':>12} {'vs loop':>8} {'vs L':>8}   (per replica-epoch)")
    for case, (study, variant) in CASES.items():
        spec = variant_spec(config, study, variant)
        spec["training"]["epochs"] = min(args.epochs, spec["training"]["epochs"])
        data = make_dataset(spec["dataset"])
        t = bench_case(spec, data, args.seeds, args.lightning_seeds)
        t["ratio_loop"], t["ratio_lightning"] = t["torch_loop"] / t["engine"], t["lightning"] / t["engine"]
        report[case] = t
        print(f"{case:<10} {t['engine']*1e6:>10.1f}us {t['torch_loop']*1e6:>10.1f}us {t['lightning']*1e6:>10.1f}us"
              f" {t['ratio_loop']:>7.1f}x {t['ratio_lightning']:>7.1f}x")
    return report


if __name__ == "__main__":
    main()
