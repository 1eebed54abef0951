"""An MLP regressor on scikit-learn's bundled diabetes data, written as a train function for the
orchestrator: ``train(hp, trial)`` reports the validation MSE (``val_loss``) and MAE
(``val_mae``) every epoch. The targets stay in their units (a disease-progression score of
25-346), so the MSE is in the thousands: no chance level, no [0, 1] scale.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from torch import nn


def load_data(split_seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Standardised features; train and validation splits (75/25) as float tensors."""
    x, y = load_diabetes(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25, random_state=split_seed)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return (
        as_tensor((x_tr - mean) / std),
        as_tensor(y_tr).unsqueeze(1),
        as_tensor((x_va - mean) / std),
        as_tensor(y_va).unsqueeze(1),
    )


def make_model(hp: dict) -> nn.Module:
    """``depth`` hidden layers of ``width`` units with ReLU, then one output."""
    layers: list[nn.Module] = []
    width_in = 10
    for _ in range(int(hp.get("depth", 2))):
        layers += [nn.Linear(width_in, int(hp["width"])), nn.ReLU()]
        width_in = int(hp["width"])
    layers.append(nn.Linear(width_in, 1))
    return nn.Sequential(*layers)


def train(hp: dict, trial) -> None:
    """Train for ``trial.epochs`` epochs of mini-batches, reporting MSE and MAE on validation."""
    x_tr, y_tr, x_va, y_va = (t.to(trial.device) for t in load_data())
    model = make_model(hp).to(trial.device)
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.0))
    trial.watch(model, opt)
    start = trial.restore(model=model, optimizer=opt)
    batch = int(hp.get("batch_size", 32))
    for epoch in range(start + 1, trial.epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x_tr), device=trial.device).split(batch):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            pred = model(x_va)
            mse = nn.functional.mse_loss(pred, y_va).item()
            mae = (pred - y_va).abs().mean().item()
        trial.report(
            epoch,
            train_loss=total / len(x_tr),
            val_loss=mse,
            val_mae=mae,
            checkpoint={"model": model, "optimizer": opt},
        )
