"""The LightningModule that trains S replicas of one variant at once.

One Lightning training step is a block of Keras epochs (about 5% of the schedule: Lightning's
per-step bookkeeping is then paid 20 times a fit, not once an epoch). In each epoch every replica
walks its own shuffled order of the training set in mini-batches (``batch_size``, last partial batch
kept), then the test set is evaluated in inference mode. After each block the module reports to its
``progress`` callback (:class:`reglab.train.Progress`: the job's log line and per-epoch CSV). The
loss is the sum of the replicas' mean losses, so each replica's weights receive exactly the gradient
of its own independent training. On the CPU, a network of the fused engine's family
(:func:`reglab.fused.fused_layout`) trains its blocks in that engine's compiled loop instead
(:class:`reglab.fused.FusedBlocks`), with the same shuffles, history and progress reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from reglab.contract import HISTORY_METRICS
from reglab.fused import ENGINES, FusedBlocks, Layout, fused_layout
from reglab.layers import PerReplica, draw_per_replica
from reglab.model import STREAM_SHUFFLE, ReplicaNet, seed_generator
from reglab.optim import make_optimizer
from reglab.shapes import output_shape

#: the most floats (4 MB) the widest activation of one chunk of an inference pass may hold: the
#: CNN's test pass (10 replicas, 700 samples, 14 MB of first-layer maps) took 15-16 ms in one piece,
#: 12-13.5 ms in chunks of 175 samples, whose maps stay in the cache between layers
EVAL_CHUNK_FLOATS = 1 << 20
#: the fewest samples of a chunk (more chunks only pay per-op overhead again: a wide grid of MLP
#: replicas with a small test set stays in one piece)
EVAL_MIN_CHUNK = 128


def shuffle_orders(seeds: list, epochs: int, n: int) -> torch.Tensor:
    """Each seed's own permutation of ``range(n)`` for every epoch: ``[epochs, S, n]`` (a replica's
    seed: an int, or seeds per source whose ``order`` seeds the shuffles)."""
    orders = [
        torch.argsort(torch.rand(epochs, n, generator=seed_generator(s, STREAM_SHUFFLE)), dim=1)
        for s in seeds
    ]
    return torch.stack(orders, dim=1)


class ReplicaClassifier(pl.LightningModule):
    """S replicas of a classifier trained together with Keras' ``fit`` semantics.

    ``data`` holds the arrays every replica shares (``x_train`` ``[N, ...]``, ``y_train`` ``[N]``,
    ``x_test``, ``y_test``) or, with ``data["per_replica"]`` true, each replica's own (``[S, N, ...]``,
    ``[S, N]``: a variance decomposition's split replicas), gathered per replica in each batch.
    """

    def __init__(self, spec: dict, seeds: list, data: dict,
                 progress: Callable[[ReplicaClassifier, int, int], None] | None = None, blocks: int = 20,
                 engine: str = "fused") -> None:
        super().__init__()
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
        self.progress = progress
        self.automatic_optimization = False
        self.spec = spec
        training = spec["training"]
        self.epochs = int(training["epochs"])
        self.block = max(1, math.ceil(self.epochs / blocks))  # epochs per Lightning step
        self.batch_size = int(training["batch_size"])
        self.label_flip = PerReplica(training.get("label_flip", 0.0))
        gradient_noise = training.get("gradient_noise") or {}
        self.gradient_noise_eta = PerReplica(gradient_noise.get("eta", 0.0))
        self.gradient_noise_gamma = float(gradient_noise.get("gamma", 0.55))
        self.updates = 0
        x_train = torch.as_tensor(data["x_train"], dtype=torch.float32)
        per_replica = bool(data.get("per_replica", False))
        sample_shape = tuple(x_train.shape[2:] if per_replica else x_train.shape[1:])
        self.net = ReplicaNet(spec["layers"], sample_shape, seeds)
        s = self.net.replicas
        # the fused engine's layout of this network (reglab.fused), or why it cannot train it
        self.fused_layout = fused_layout(spec, sample_shape) if engine == "fused" else "the torch engine was asked for"
        self.fused: FusedBlocks | None = None  # set at fit start, on the CPU
        self.register_buffer("x_train", x_train, persistent=False)
        self.register_buffer("y_train", torch.as_tensor(data["y_train"], dtype=torch.float32), persistent=False)
        x_test = torch.as_tensor(data["x_test"], dtype=torch.float32)
        y_test = torch.as_tensor(data["y_test"], dtype=torch.float32)
        if per_replica:  # each replica's own data [S, N, ...]: a batch gathers row r of replica r's
            if x_train.shape[0] != s or x_test.shape[0] != s:
                raise ValueError(f"per-replica data for {x_train.shape[0]} replicas, but the model has {s}")
            self.register_buffer("replica_rows", torch.arange(s).unsqueeze(1), persistent=False)
        else:
            self.replica_rows = None
            x_test, y_test = x_test.expand(s, *x_test.shape).contiguous(), y_test.expand(s, -1)
        self.register_buffer("x_test", x_test, persistent=False)
        self.register_buffer("y_test", y_test, persistent=False)
        self.register_buffer("orders", shuffle_orders(seeds, self.epochs, self.y_train.shape[-1]), persistent=False)
        self.history = {m: torch.full((self.epochs, s), float("nan")) for m in HISTORY_METRICS}
        # the current block's epochs' HISTORY_METRICS on the training device (row: epoch % block),
        # moved to the history once a block
        self.register_buffer("epoch_metrics", torch.full((self.block, len(HISTORY_METRICS), s), float("nan")),
                             persistent=False)
        self.epoch_time = torch.full((self.epochs,), float("nan"), dtype=torch.float64)
        # the 1-based epoch at which each replica's training loss stopped being finite; 0 = never
        self.diverged_epoch = torch.zeros(s, dtype=torch.int64)
        self._widest: int | None = None  # the widest per-sample activation (evaluation_chunk)

    def configure_optimizers(self):
        return make_optimizer(self.net.parameters(), self.spec["training"]["optimizer"])

    def train_dataloader(self) -> DataLoader:
        """The first epoch of each block, in order."""
        return DataLoader(range(0, self.epochs, self.block), batch_size=None, shuffle=False)

    @property
    def engine(self) -> str:
        """The engine that trains (or will train, on the CPU) this model: ``fused`` or ``torch``."""
        return "fused" if isinstance(self.fused_layout, Layout) and self.device.type == "cpu" else "torch"

    def on_fit_start(self) -> None:
        self.net.reset_noise(self.device)
        if self.engine == "fused":
            self.fused = FusedBlocks(self, self.fused_layout)

    def training_step(self, first: torch.Tensor, batch_idx: int) -> None:
        """Train the block of epochs from ``first``, then report progress."""
        first = int(first)
        last = min(first + self.block, self.epochs)
        if self.fused is not None:
            seconds = self.fused.run(first, last, self.updates)
            self.updates += (last - first) * math.ceil(self.y_train.shape[-1] / self.batch_size)
            self.epoch_time[first:last] = seconds / (last - first)
        else:
            opt = self.optimizers(use_pl_optimizer=False)
            for epoch in range(first, last):
                self.train_epoch(epoch, opt)
        self.record_block(first, last)
        if self.progress is not None:
            self.progress(self, first, last)

    def train_epoch(self, epoch: int, opt: torch.optim.Optimizer) -> None:
        """One Keras epoch of every replica, then its test evaluation; fills row ``epoch % block`` of
        :attr:`epoch_metrics` (:meth:`record_block` moves a block's rows into the history)."""
        start = time.perf_counter()
        self.net.set_training(True)
        order = self.orders[epoch]
        n = order.shape[1]
        targets = self.epoch_targets()
        loss_sum = torch.zeros(self.net.replicas, device=self.device)
        correct = torch.zeros_like(loss_sum)
        for lo in range(0, n, self.batch_size):
            idx = order[:, lo : lo + self.batch_size]
            if self.replica_rows is None:  # index_select: a third of advanced indexing's time
                xb = self.x_train.index_select(0, idx.reshape(-1)).view(*idx.shape, *self.x_train.shape[1:])
            else:
                xb = self.x_train[self.replica_rows, idx]
            yb = targets.gather(1, idx)
            logits = self.net(xb)
            losses = self.net.losses(logits, yb)
            opt.zero_grad(set_to_none=False)
            self.manual_backward(losses.sum())
            if self.gradient_noise_eta.any():
                # Neelakantan et al. (2015): variance eta / (1 + t)^gamma at update t
                variance = self.gradient_noise_eta.values / (1 + self.updates) ** self.gradient_noise_gamma
                self.net.add_gradient_noise_(variance.sqrt(), self.gradient_noise_eta)
            opt.step()
            self.net.constrain_()
            self.updates += 1
            with torch.no_grad():
                loss_sum += losses.detach() * idx.shape[1]
                correct += self.net.correct(logits, yb)
        test_loss, test_acc = self.evaluate(self.test_inputs(), self.y_test)
        torch.stack([loss_sum.div_(n), correct.div_(n), test_loss, test_acc],
                    out=self.epoch_metrics[epoch % self.block])
        self.epoch_time[epoch] = time.perf_counter() - start

    def record_block(self, first: int, last: int) -> None:
        """Move epochs ``first`` to ``last - 1`` into the history and flag replicas whose training
        loss became NaN/inf there: their metrics are NaN from that epoch on (``diverged_epoch``).

        The other replicas are untouched: each replica's gradient depends on its own loss only.
        """
        block = self.epoch_metrics[: last - first].cpu()  # [epochs, metric, S]; blocks start at multiples of block
        for i, metric in enumerate(HISTORY_METRICS):
            self.history[metric][first:last] = block[:, i]
        bad = ~torch.isfinite(self.history["train_loss"][first:last])
        newly = bad.any(dim=0) & (self.diverged_epoch == 0)
        if newly.any():
            self.diverged_epoch[newly] = first + 1 + bad.int().argmax(dim=0)[newly]
        after = torch.arange(first + 1, last + 1).unsqueeze(1) >= self.diverged_epoch.unsqueeze(0)
        after &= self.diverged_epoch.unsqueeze(0) > 0
        if after.any():
            for metric in HISTORY_METRICS:
                self.history[metric][first:last][after] = float("nan")

    def epoch_targets(self) -> torch.Tensor:
        """Training labels ``[S, N]`` for one epoch: each flipped with probability ``label_flip``, afresh
        (to the other class; with K classes, to one of the K - 1 others at random)."""
        y = self.y_train.expand(self.net.replicas, -1)
        if not self.label_flip.any():
            return y
        u = draw_per_replica(y, self.net.noise_generators, "uniform_", self.label_flip)
        p = self.label_flip.view(y)
        flips = u < p  # never where a replica's label_flip is 0 (its u is 0, drawn nothing)
        k = self.net.n_classes
        # u / label_flip is uniform on [0, 1) given a flip: it picks the new class
        other = (y + 1 + torch.floor(u / torch.where(p > 0, p, 1.0) * (k - 1))) % k
        return torch.where(flips, other, y)

    def test_inputs(self) -> torch.Tensor:
        """The test inputs ``[S, N, ...]``: with shared data, replica 0's rows expanded over the replica
        axis (a view of stride 0 there), which tells layers that every replica sees the same inputs
        (:class:`reglab.conv.Conv2D` then convolves them once with all replicas' kernels)."""
        return self.x_test if self.replica_rows is not None else self.x_test[:1].expand_as(self.x_test)

    def evaluation_chunk(self, x: torch.Tensor) -> int:
        """Samples per chunk of an inference pass over ``x`` ``[S, N, ...]``: the fewest equal chunks
        whose widest activation (all replicas) holds at most :data:`EVAL_CHUNK_FLOATS` floats, but
        at least :data:`EVAL_MIN_CHUNK` samples."""
        if self._widest is None:  # the widest per-sample activation, input included
            shape, widest = tuple(x.shape[2:]), math.prod(x.shape[2:])
            for layer in self.spec["layers"]:
                (kind, params), = layer.items()
                shape = output_shape(kind, params, shape)
                widest = max(widest, math.prod(shape))
            self._widest = widest
        n = x.shape[1]
        pieces = max(1, math.ceil(n * x.shape[0] * self._widest / EVAL_CHUNK_FLOATS))
        return max(EVAL_MIN_CHUNK, math.ceil(n / pieces))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-replica loss and accuracy ``[S]`` in inference mode; ``x`` is ``[S, N, in]``, passed
        through the network in chunks of samples (:meth:`evaluation_chunk`; in inference mode every
        sample's output depends on that sample alone)."""
        was_training = self.net.training
        self.net.set_training(False)
        chunk = self.evaluation_chunk(x)
        logits = torch.cat([self.net(part) for part in x.split(chunk, dim=1)], dim=1)
        self.net.set_training(was_training)
        return self.net.losses(logits, y), self.net.correct(logits, y) / y.shape[1]
