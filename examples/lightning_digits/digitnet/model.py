"""A LightningModule on scikit-learn's bundled digits (8x8 images, 10 classes): an MLP that logs
``val_loss`` and ``val_acc`` every validation epoch, and the data loaders it trains on."""

from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DigitsNet(L.LightningModule):
    """``depth`` hidden layers of ``width`` ReLU units; Adam with ``lr`` and ``weight_decay``."""

    def __init__(self, lr: float = 1e-3, width: int = 64, depth: int = 1, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width_in = 64
        for _ in range(int(depth)):
            layers += [nn.Linear(width_in, int(width)), nn.ReLU()]
            width_in = int(width)
        self.net = nn.Sequential(*layers, nn.Linear(width_in, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def make_model(hp: dict) -> DigitsNet:
    """The module of a trial's hyperparameters (also the sweep's ``trainable.model_fn``)."""
    return DigitsNet(
        lr=float(hp.get("lr", 1e-3)),
        width=int(hp.get("width", 64)),
        depth=int(hp.get("depth", 1)),
        weight_decay=float(hp.get("weight_decay", 0.0)),
    )


def loaders(batch_size: int = 64, split_seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders (75/25, stratified; pixels scaled to [0, 1])."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x / 16.0, y, test_size=0.25, random_state=split_seed, stratify=y
    )
    as_set = lambda a, b: TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b))  # noqa: E731
    return (
        DataLoader(as_set(x_tr, y_tr), batch_size=batch_size, shuffle=True),
        DataLoader(as_set(x_va, y_va), batch_size=512),
    )
