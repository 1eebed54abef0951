"""Epoch-by-epoch training of one model, with the diagnostics of the metric contract.

Pure PyTorch: no Ray here, so it is testable in-process. Randomness is reseeded at the start
of every epoch from (seed, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainables.data import Dataset
from trainables.hparams import TrialParams
from trainables.models import RELU_FAMILY, build_model
from trainables.seeding import derive_seed

EVAL_CHUNK = 4096
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured (the trainer's part of the metric contract)."""

    train_loss: float
    val_loss: float
    val_acc: float
    grad_norm: float
    dead_frac: float
    lr: float


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

        ``train_loss`` is the mean cross-entropy over the epoch's steps (without the L1 term);
        ``grad_norm`` the mean over steps of the global L2 norm of the gradient. Non-finite
        values are reported as they are.
        """
        epoch = self.epoch + 1
        torch.manual_seed(derive_seed(self.seed, "epoch", epoch))  # dropout masks
        self.model.train()
        weights = [p for name, p in self.model.named_parameters() if name.endswith("weight")]
        loss_sum, grad_sum, steps, seen = 0.0, 0.0, 0, 0
        for idx in self._batches(epoch):
            xb, yb = self.x_train[idx], self.y_train[idx]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(xb), yb)
            total = loss
            if self.params.l1 > 0:
                total = loss + self.params.l1 * sum(w.abs().sum() for w in weights)
            total.backward()
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            grad_sum += nn.utils.get_total_norm(grads).item()
            self.optimizer.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            steps += 1
        self.epoch = epoch
        val_loss, val_acc, dead_frac = self.evaluate()
        return EpochMetrics(
            train_loss=loss_sum / max(seen, 1),
            val_loss=val_loss,
            val_acc=val_acc,
            grad_norm=grad_sum / max(steps, 1),
            dead_frac=dead_frac,
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Return (val_loss, val_acc, dead_frac) on the whole validation split.

        ``dead_frac`` is the fraction of ReLU-family units (channels for convolutions) whose
        output is not positive for any validation sample; 0 when the model has none.
        """
        self.model.eval()
        alive: dict[int, torch.Tensor] = {}

        def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            dims = [0, *range(2, out.dim())]
            active = (out > 0).any(dim=dims) if out.dim() > 1 else (out > 0)
            key = id(module)
            alive[key] = alive[key] | active if key in alive else active

        handles = [m.register_forward_hook(hook) for m in self.model.modules() if isinstance(m, RELU_FAMILY)]
        try:
            loss_sum, correct = 0.0, 0
            for start in range(0, len(self.x_val), EVAL_CHUNK):
                xb = self.x_val[start : start + EVAL_CHUNK]
                yb = self.y_val[start : start + EVAL_CHUNK]
                logits = self.model(xb)
                loss_sum += float(self.loss_fn(logits, yb)) * len(xb)
                correct += int((logits.argmax(dim=1) == yb).sum())
        finally:
            for h in handles:
                h.remove()
        n = len(self.x_val)
        units = sum(a.numel() for a in alive.values())
        dead = sum(int((~a).sum()) for a in alive.values())
        return loss_sum / n, correct / n, (dead / units if units else 0.0)

    def state_dict(self, attempt: int) -> dict[str, Any]:
        """Everything needed to continue: weights, optimizer, epoch, seed, attempt."""
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "seed": self.seed,
            "attempt": attempt,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; refuses a checkpoint of another seed or version."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint: version {state.get('version')!r} is not {CHECKPOINT_VERSION}")
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint: seed {state.get('seed')!r} does not match the trial's {self.seed}")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(f"checkpoint: does not match the model ({first})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
