"""Real PyTorch training on real data: metrics, diagnostics (the watch), determinism, resume."""

import io

import pytest
import torch

from orchestrator.watch import Watch
from trainables.data import load_dataset
from trainables.hparams import TrialParams
from trainables.seeding import derive_seed
from trainables.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_mlp_learns_digits(digits):
    trainer = Trainer("mlp", digits, TrialParams(optimizer="adam", lr=3e-3, epochs=5), seed=1)
    watch = Watch(trainer.model, trainer.optimizer)
    first = trainer.train_epoch()
    for _ in range(4):
        last = trainer.train_epoch()
    seen = watch.take()
    assert trainer.epoch == 5
    assert last.val_acc > 0.9 and last.val_loss < first.val_loss
    assert seen["grad_norm"] > 0 and 0.0 <= seen["dead_frac"] <= 1.0 and seen["lr"] == 3e-3
    assert watch.example is not None and watch.example.shape[0] == 2  # an eval-mode input


def test_same_seed_same_run_other_seed_other_run(digits):
    p = TrialParams(dropout=0.2, epochs=2)
    a, b, c = (Trainer("mlp", digits, p, seed=s) for s in (7, 7, 8))
    ma, mb, mc = a.train_epoch(), b.train_epoch(), c.train_epoch()
    assert ma == mb
    assert ma != mc


def test_resume_from_checkpoint_continues_with_the_same_weights(digits):
    p = TrialParams(optimizer="sgd_momentum", lr=0.05, dropout=0.2, batch_norm=True, epochs=4)
    straight = Trainer("mlp", digits, p, seed=3)
    history = [straight.train_epoch() for _ in range(4)]

    first = Trainer("mlp", digits, p, seed=3)
    first.train_epoch(), first.train_epoch()
    buffer = io.BytesIO()
    torch.save({"model": first.model.state_dict(), "optimizer": first.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    resumed = Trainer("mlp", digits, p, seed=3)
    state = torch.load(buffer, weights_only=True)
    resumed.model.load_state_dict(state["model"])
    resumed.optimizer.load_state_dict(state["optimizer"])
    resumed.epoch = 2
    later = [resumed.train_epoch() for _ in range(2)]
    assert later == history[2:]
    for key, value in _weights(straight).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_full_batch_gd_takes_one_step_per_epoch(digits):
    trainer = Trainer("mlp", digits, TrialParams(optimizer="gd", lr=0.5), seed=0)
    assert trainer.batch_size == len(digits.x_train)
    trainer.train_epoch()
    assert trainer.optimizer.__class__ is torch.optim.SGD
    assert trainer.optimizer.param_groups[0]["momentum"] == 0


def test_dead_relus_are_measured_and_other_activations_report_zero(digits):
    trainer = Trainer("mlp", digits, TrialParams(activation="relu", hidden_layers=1, width=16), seed=0)
    watch = Watch(trainer.model, trainer.optimizer)
    with torch.no_grad():
        trainer.model[1].bias.fill_(-1e6)  # every hidden unit negative for every input
    trainer.evaluate()
    assert watch.take()["dead_frac"] == 1.0
    with torch.no_grad():
        trainer.model[1].bias.fill_(1e6)
    trainer.evaluate()
    assert watch.take()["dead_frac"] == 0.0
    trainer.model.train()
    trainer.model(torch.from_numpy(digits.x_val[:8]))  # training-mode forwards do not count
    assert "dead_frac" not in watch.take()
    tanh = Trainer("mlp", digits, TrialParams(activation="tanh"), seed=0)
    tanh_watch = Watch(tanh.model, tanh.optimizer)
    tanh.train_epoch()
    assert tanh_watch.take()["dead_frac"] == 0.0
    watch.close()
    trainer.evaluate()
    assert watch.take() == {"lr": trainer.optimizer.param_groups[0]["lr"]}  # hooks removed


def test_divergence_is_reported_not_hidden(digits):
    trainer = Trainer("mlp", digits, TrialParams(optimizer="sgd", lr=1e6, init_scale=3.0), seed=0)
    metrics = [trainer.train_epoch() for _ in range(3)]
    assert any(m.val_loss != m.val_loss or m.val_loss > 1e3 for m in metrics)  # NaN or huge


def test_l1_and_weight_decay_shrink_the_weights(digits):
    def norm(**kw):
        t = Trainer("mlp", digits, TrialParams(optimizer="sgd", lr=0.05, **kw), seed=0)
        for _ in range(3):
            t.train_epoch()
        return sum(p.abs().sum().item() for n, p in t.model.named_parameters() if n.endswith("weight"))

    plain = norm()
    assert norm(l1=1e-3) < plain
    assert norm(weight_decay=1e-1) < plain


@pytest.mark.parametrize("init", ["default", "kaiming", "xavier", "orthogonal"])
def test_init_schemes_and_scale(digits, init):
    small = Trainer("mlp", digits, TrialParams(init=init, init_scale=0.1), seed=0)
    big = Trainer("mlp", digits, TrialParams(init=init, init_scale=1.0), seed=0)
    w_small = small.model[1].weight.abs().mean().item()
    w_big = big.model[1].weight.abs().mean().item()
    assert w_small == pytest.approx(0.1 * w_big, rel=1e-5)


def test_cnn_trains_on_images_and_on_1d_signals(digits):
    cnn = Trainer("cnn", digits, TrialParams(width=8, hidden_layers=2, batch_norm=True), seed=0)
    assert cnn.train_epoch().val_acc > 0.2
    signals = load_dataset("mnist1d", max_samples=500)
    cnn1d = Trainer("cnn", signals, TrialParams(width=8, hidden_layers=2), seed=0)
    watch = Watch(cnn1d.model, cnn1d.optimizer)
    m = cnn1d.train_epoch()
    assert m.val_loss == m.val_loss and 0 <= watch.take()["dead_frac"] <= 1


def test_derive_seed_is_stable_and_spread():
    assert derive_seed(0, 5, 1) == derive_seed(0, 5, 1)
    assert len({derive_seed(0, i, a) for i in range(50) for a in range(3)}) == 150
    assert all(0 <= derive_seed(i) < 2**31 for i in range(20))


def test_every_model_the_config_allows_is_built():
    """``trainable.model``'s allowed values (trainables.hparams.MODELS) are the models there are."""
    from trainables.hparams import MODELS, TrialParams
    from trainables.models import build_model

    params = TrialParams.from_config({"hidden_layers": 1, "width": 8})
    for name in MODELS:
        model = build_model(name, (1, 8, 8), 10, params)
        assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(ValueError, match="trainable.model: unknown model 'rnn'"):
        build_model("rnn", (64,), 10, params)
