"""The prior is fixed for the life of a sweep: stored in its directory at start, used on resume.

A sweep with ``scheduler.prior`` writes the model it read to ``<sweep dir>/prior.json``; resuming
it (``read_record`` then ``build_scheduler`` with the sweep's directory, as
:func:`orchestrator.sweep.resume` does) uses that model, not the source again: the source may
have changed (an MLflow experiment that gained runs, the sweep's own among them) or be gone.
"""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from orchestrator import resume
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.policy.prior import PriorModel
from orchestrator.priors import SHIPPED
from orchestrator.resume import PRIOR_FILE, SweepRecord, config_data, read_prior, read_record, write_prior
from orchestrator.scheduling import build_scheduler, keep_prior

NAME = "debug_20260101-000000"


def _model(source: str, shift: float = 0.0) -> PriorModel:
    """The shipped prior under another ``source`` name, its intercepts moved by ``shift``."""
    data = json.loads(SHIPPED.read_text(encoding="utf-8"))
    for model in data["epochs"].values():
        model["coef"][0] += shift
    return PriorModel.from_dict({**data, "source": source})


def _config(prior: str):
    overrides = ["debug=default", "num_samples=9", f"scheduler.prior={prior}"]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    return load_config(OmegaConf.to_container(composed, resolve=True))


def _sweep_dir(tmp_path, cfg):
    """A sweep directory as a sweep leaves it once started (its record, Ray's state files)."""
    record = SweepRecord(NAME, str(tmp_path), str(tmp_path), config_data(cfg), [], "", None, None)
    resume.write_record(record)
    directory = tmp_path / NAME
    (directory / "tuner.pkl").write_bytes(b"\x80\x04N.")
    (directory / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    return directory


def test_a_stored_prior_reads_back_is_none_when_absent_and_refused_when_corrupt(tmp_path) -> None:
    assert read_prior(str(tmp_path)) is None
    model = _model("mlflow earlier")
    path = write_prior(str(tmp_path), model)
    assert path.endswith(f"/{PRIOR_FILE}") and read_prior(str(tmp_path)) == model
    (tmp_path / PRIOR_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"^resume: .*prior\.json cannot be read \("):
        read_prior(str(tmp_path))
    (tmp_path / PRIOR_FILE).unlink()
    (tmp_path / PRIOR_FILE).mkdir()  # there but not a file: refused, not read from the source again
    with pytest.raises(ConfigError, match=r"^resume: .*prior\.json cannot be read \("):
        read_prior(str(tmp_path))


def test_a_sweep_stores_the_prior_it_started_with(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "earlier.json"
    source.write_text(json.dumps(_model("earlier sweeps").to_dict()))
    scheduler = build_scheduler(_config(str(source)), 9)
    keep_prior(scheduler, str(tmp_path / NAME))
    assert read_prior(str(tmp_path / NAME)) == _model("earlier sweeps")
    keep_prior(build_scheduler(_config("null"), 9), str(tmp_path / "none"))  # no prior: nothing stored
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("change", ["changed", "gone"])
def test_a_resumed_sweep_uses_its_stored_prior_not_its_source_again(tmp_path, monkeypatch, change) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "earlier.json"
    source.write_text(json.dumps(_model("earlier sweeps").to_dict()))
    cfg = _config(str(source))
    directory = _sweep_dir(tmp_path, cfg)
    keep_prior(build_scheduler(cfg, 9), str(directory))  # as the sweep starts
    if change == "changed":  # e.g. an mlflow: experiment that gained runs since
        source.write_text(json.dumps(_model("earlier sweeps and this one", shift=3.0).to_dict()))
    else:
        source.unlink()

    record, resumed_cfg = read_record(str(directory))
    assert resumed_cfg.scheduler.prior == str(source)  # the config is the one the sweep started with
    scheduler = build_scheduler(resumed_cfg, 9, record)
    assert scheduler.policy.prior.model == _model("earlier sweeps")
    if change == "changed":  # a new sweep reads the source as it is now
        assert build_scheduler(cfg, 9).policy.prior.model.source == "earlier sweeps and this one"


def test_a_resumed_sweep_without_a_stored_prior_reads_its_source(tmp_path, monkeypatch) -> None:
    """A sweep started before priors were stored: its source, as before."""
    monkeypatch.chdir(tmp_path)
    cfg = _config("shipped")
    directory = _sweep_dir(tmp_path, cfg)
    record, resumed_cfg = read_record(str(directory))
    scheduler = build_scheduler(resumed_cfg, 9, record)
    assert scheduler.policy.prior.model == PriorModel.from_dict(json.loads(SHIPPED.read_text()))
