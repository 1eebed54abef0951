"""Warm start (``trainable.init_from``): the loading rule on real torch models and real checkpoint
files, the sources (file, checkpoint directory, Ray trial directory), and ``Trial.init_weights``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.trial import CHECKPOINT_VERSION, Trial
from orchestrator.warmstart import InitError, check, checkpoint_path, read_state
from trainables.hparams import TrialParams
from trainables.models import build_model

SHAPE, CLASSES = (1, 8, 8), 10


def mlp(seed: int, **hp) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        "mlp", SHAPE, CLASSES, TrialParams.from_config({"hidden_layers": 2, "width": 32, **hp})
    )


def save(path: Path, model: torch.nn.Module) -> Path:
    """A checkpoint file as Trial.report writes it (the model's state dict under ``model``)."""
    saved = {"version": CHECKPOINT_VERSION, "attempt": 0, "seed": 1, "epoch": 3, "metrics": {},
             "state": {"model": model.state_dict(), "optimizer": {}}}  # fmt: skip
    torch.save(saved, path)
    return path


def trial(source: Path | str | None, seed: int = 0, attempt: int = 0, sent: list | None = None) -> Trial:
    init = {"source": str(source), "tracking_uri": None} if source is not None else None
    return Trial(seed=seed, attempt=attempt, epochs=2, hp={}, init_from=init,
                 sink=lambda r, d: (sent if sent is not None else []).append(r))  # fmt: skip


def test_matching_tensors_load_and_the_rest_keep_their_seeded_values(tmp_path: Path) -> None:
    source = mlp(seed=1, width=32)
    path = save(tmp_path / "checkpoint.pt", source)
    # one hidden layer more than the source
    target = mlp(seed=2, hidden_layers=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    result = trial(path).init_weights(target)
    after, src = target.state_dict(), source.state_dict()
    for name in result.loaded:
        assert torch.equal(after[name], src[name]), name
    for name in result.skipped:
        assert torch.equal(after[name], before[name]), name
    # the first two Linear layers (1, 3) match; 5 is the source's head ([10, 32]) but the target's
    # third hidden layer ([32, 32]); the target's head 7 is not in the source
    assert result.loaded == ("1.weight", "1.bias", "3.weight", "3.bias")
    assert result.skipped == ("5.weight", "5.bias", "7.weight", "7.bias")
    assert result.counts() == {"init_loaded": 4, "init_skipped": 4}


def test_a_shape_mismatch_is_skipped_not_loaded(tmp_path: Path) -> None:
    path = save(tmp_path / "checkpoint.pt", mlp(seed=1, width=32))
    target = mlp(seed=2, width=32, batch_norm=True)  # BN shifts the names: 1 Linear, 2 BN, 4 Linear...
    result = trial(path).init_weights(target)
    assert "1.weight" in result.loaded and "2.running_mean" in result.skipped
    assert len(result.loaded) + len(result.skipped) == len(target.state_dict())


def cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", SHAPE, CLASSES, TrialParams.from_config({"hidden_layers": 2, "width": 8}))


def test_nothing_matching_is_one_line_error(tmp_path: Path) -> None:
    path = save(tmp_path / "checkpoint.pt", cnn(seed=1))
    with pytest.raises(InitError) as err:
        trial(path).init_weights(mlp(seed=2, width=16))
    message = str(err.value)
    assert "\n" not in message and "none of the 6 tensors" in message and "another architecture" in message
    # another width matches the head's bias alone ([10]): a (poor) warm start, not an error
    narrow = trial(save(tmp_path / "w.pt", mlp(seed=1))).init_weights(mlp(seed=2, width=16))
    assert narrow.loaded == ("5.bias",)


def test_a_restart_reinitialises_what_was_not_loaded_with_its_new_seed(tmp_path: Path) -> None:
    path = save(tmp_path / "checkpoint.pt", mlp(seed=1))
    first, second = mlp(seed=10, hidden_layers=3), mlp(seed=11, hidden_layers=3)
    a = trial(path, seed=10).init_weights(first)
    b = trial(path, seed=11, attempt=1).init_weights(second)
    assert a.loaded == b.loaded
    assert all(torch.equal(first.state_dict()[n], second.state_dict()[n]) for n in a.loaded)
    assert not torch.equal(first.state_dict()["7.weight"], second.state_dict()["7.weight"])


def test_counts_go_with_the_next_report_only(tmp_path: Path) -> None:
    sent: list[dict] = []
    t = trial(save(tmp_path / "c.pt", mlp(seed=1)), sent=sent)
    t.init_weights(mlp(seed=2))
    t.report(1, val_loss=1.0)
    t.report(2, val_loss=0.5)
    assert sent[0]["init_loaded"] == 6 and sent[0]["init_skipped"] == 0
    assert "init_loaded" not in sent[1]


def test_without_a_source_nothing_changes() -> None:
    model = mlp(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trial(None).init_weights(model)
    assert result.source is None and result.loaded == () and len(result.skipped) == 6
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_sources_file_directory_and_ray_trial_directory(tmp_path: Path) -> None:
    trial_dir = tmp_path / "train_abc"
    for n, seed in ((1, 1), (4, 4), (10, 10)):
        (trial_dir / f"checkpoint_{n:06d}").mkdir(parents=True)
        save(trial_dir / f"checkpoint_{n:06d}" / "checkpoint.pt", mlp(seed=seed))
    (trial_dir / "checkpoint_000011").mkdir()  # an empty (unfinished) one is passed over
    latest = trial_dir / "checkpoint_000010" / "checkpoint.pt"
    assert checkpoint_path(str(trial_dir)) == str(latest)
    assert checkpoint_path(str(latest.parent)) == str(latest)
    assert torch.equal(read_state(str(trial_dir))["1.weight"], mlp(seed=10).state_dict()["1.weight"])
    torch.save(mlp(seed=3).state_dict(), tmp_path / "bare.pt")  # a bare state dict also loads
    assert len(read_state(str(tmp_path / "bare.pt"))) == 6


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "no file or directory"),
        (lambda p: p.mkdir(), "no checkpoint.pt in"),
        (lambda p: p.write_bytes(b"<html>not a checkpoint</html>"), "cannot read"),
        (lambda p: torch.save({"version": 2, "state": {"optimizer": {}}}, p), "holds no 'model' state dict"),
        (lambda p: torch.save({"a": 1}, p), "holds no tensors"),
    ],
    ids=["missing", "empty-dir", "malformed", "no-model", "no-tensors"],
)
def test_bad_sources_are_one_line(tmp_path: Path, make, says: str) -> None:
    path = tmp_path / "source"
    make(path)
    with pytest.raises(InitError) as err:
        read_state(str(path))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_check_builds_the_candidate_models(tmp_path: Path) -> None:
    path = str(save(tmp_path / "c.pt", cnn(seed=1)))
    candidates = [{"width": 16}, {"width": 8, "hidden_layers": 2}]
    check({"source": path, "builtin": {"model": "cnn", "dataset": "digits", "candidates": candidates}})
    with pytest.raises(InitError, match="another architecture"):
        check({"source": path, "builtin": {"model": "mlp", "dataset": "digits", "candidates": candidates}})
