"""Epoch-by-epoch training of one built-in model (MLP or CNN) on a classification dataset.

Pure PyTorch: no Ray here, so it is testable in-process. The diagnostics (gradient norm, dead
units, learning rate) are measured by :class:`orchestrator.watch.Watch`, as for any user's
model. Randomness is reseeded at the start of every epoch from (seed, epoch), so a run resumed
from a checkpoint of its model and optimizer (and ``epoch``) continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.data import Dataset
from trainables.hparams import TrialParams
from trainables.models import build_model
from trainables.seeding import derive_seed

EVAL_CHUNK = 4096


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured (the watch adds the diagnostics)."""

    train_loss: float
    val_loss: float
    val_acc: float


def make_optimizer(model: nn.Module, p: TrialParams) -> torch.optim.Optimizer:
    """Build the optimizer; ``gd`` and ``sgd`` are plain SGD, ``weight_decay`` is the L2 term."""
    params = model.parameters()
    if p.optimizer in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "sgd_momentum":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=p.lr, weight_decay=p.weight_decay)
    raise ValueError(f"optimizer: unknown {p.optimizer!r}")


class Trainer:
    """Trains ``model_name`` on ``data`` with hyperparameters ``params`` from a given ``seed``."""

    def __init__(
        self,
        model_name: str,
        data: Dataset,
        params: TrialParams,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.params = params
        self.seed = seed
        self.device = torch.device(device)
        torch.manual_seed(derive_seed(seed, "init"))
        self.model = build_model(model_name, data.input_shape, data.num_classes, params)
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, params)
        self.loss_fn = nn.CrossEntropyLoss()
        self.x_train = torch.from_numpy(data.x_train).to(self.device)
        self.y_train = torch.from_numpy(data.y_train).to(self.device)
        self.x_val = torch.from_numpy(data.x_val).to(self.device)
        self.y_val = torch.from_numpy(data.y_val).to(self.device)
        n = len(self.x_train)
        self.batch_size = n if params.optimizer == "gd" else min(params.batch_size, n)
        self.epoch = 0  # epochs completed

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        """Index batches for ``epoch``: a permutation seeded by (seed, epoch) when shuffling.

        A trailing batch of one sample is dropped (batch norm cannot train on it).
        """
        n = len(self.x_train)
        if self.params.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", epoch))
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        batches = list(torch.split(order, self.batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
        return batches

    def train_epoch(self) -> EpochMetrics:
        """Run one epoch of training, then evaluate on the validation split.

        ``train_loss`` is the mean cross-entropy over the epoch's steps (without the L1 term).
        Non-finite values are reported as they are.
        """
        epoch = self.epoch + 1
        torch.manual_seed(derive_seed(self.seed, "epoch", epoch))  # dropout masks
        self.model.train()
        weights = [p for name, p in self.model.named_parameters() if name.endswith("weight")]
        loss_sum, seen = 0.0, 0
        for idx in self._batches(epoch):
            xb, yb = self.x_train[idx], self.y_train[idx]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(xb), yb)
            total = loss
            if self.params.l1 > 0:
                total = loss + self.params.l1 * sum(w.abs().sum() for w in weights)
            total.backward()
            self.optimizer.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
        self.epoch = epoch
        val_loss, val_acc = self.evaluate()
        return EpochMetrics(train_loss=loss_sum / max(seen, 1), val_loss=val_loss, val_acc=val_acc)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Return (val_loss, val_acc) on the whole validation split, in eval mode."""
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(self.x_val), EVAL_CHUNK):
            xb = self.x_val[start : start + EVAL_CHUNK]
            yb = self.y_val[start : start + EVAL_CHUNK]
            logits = self.model(xb)
            loss_sum += float(self.loss_fn(logits, yb)) * len(xb)
            correct += int((logits.argmax(dim=1) == yb).sum())
        n = len(self.x_val)
        return loss_sum / n, correct / n
