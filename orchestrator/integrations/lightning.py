"""Lightning adapter: :class:`ConvergenceCallback` reports a ``lightning.Trainer``'s epochs to the
orchestrator's :class:`~orchestrator.trial.Trial` and checkpoints and resumes through Lightning.

In a train function ``train(hp, trial)`` (``trainable=function trainable.fn=module:train``)::

    callback = ConvergenceCallback({"val_acc": "val/acc", "val_loss": "val/loss"})
    trainer = lightning.Trainer(max_epochs=trial.epochs, callbacks=[callback],
                                accelerator=trial.device.type, devices=1,
                                enable_checkpointing=False, logger=False)
    trainer.fit(model, train_loader, val_loader, ckpt_path=callback.ckpt_path)

Rules:

- One report per validated epoch, at the end of the training epoch (``on_train_epoch_end``,
  after its validation, when values logged with ``on_epoch=True`` in ``training_step`` are this
  epoch's means too; at ``on_validation_end`` they would still be the previous epoch's). The
  sanity check is never reported. ``epoch`` is ``trainer.current_epoch + 1``; the metrics are
  read from ``trainer.callback_metrics`` as floats under the names ``metrics`` maps them to
  (reported name -> logged name), or, without ``metrics``, every scalar there under its own
  name ("/" kept: MLflow and Ray Tune accept it). A mapped name missing at the first report is
  an error naming it and the names logged; later, a missing value is left out (never filled in).
  Values the module logs in its own ``on_train_epoch_end`` come after this callback's report.
- ``grad_norm`` is the mean over the epoch's optimizer steps of the global L2 norm of the
  gradients (read in ``on_before_optimizer_step``: after Lightning's closure ran the backward
  pass and unscaled them, before Lightning's gradient clipping); ``dead_frac`` comes from the
  LightningModule's ReLU-family modules during validation (eval mode; the sanity check does not
  count); ``lr`` from the first optimizer.
- The trial's budget wins: a Trainer whose ``max_epochs`` is not ``trial.epochs`` is set to it
  (a warning says so). Validation must run every epoch (``check_val_every_n_epoch=1``).
- On the epochs the trial checkpoints (every ``checkpoint_every``-th and the last) the
  checkpoint directory holds ``checkpoint.pt`` (the module's weights, for the sweep's model
  export) and ``lightning.ckpt`` (``trainer.save_checkpoint``: the whole training state).
  :attr:`ConvergenceCallback.ckpt_path` is this attempt's ``lightning.ckpt`` for
  ``trainer.fit(..., ckpt_path=...)`` (None: start fresh; an older attempt's is refused), and
  its epoch is reported again marked ``replayed``, as :meth:`Trial.restore` does.
- Device: run the Trainer where the trial runs, ``accelerator=trial.device.type, devices=1``
  (Ray gives a trial at most its GPUs; one process per trial, no multi-device strategy).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from orchestrator.trial import Trial, current
from orchestrator.watch import Watch

logger = logging.getLogger(__name__)

#: The Lightning checkpoint's name in a trial's checkpoint directory.
LIGHTNING_CKPT = "lightning.ckpt"

_NO_TRIAL = (
    "ConvergenceCallback: no orchestrator trial in this process; run the training through "
    "python -m orchestrator trainable=function trainable.fn=module:function (or pass trial=)"
)
_UNSET = object()


def resume_path(trial: Trial) -> str | None:
    """This attempt's Lightning checkpoint for ``trainer.fit(ckpt_path=...)``, or None to start
    fresh (no checkpoint, or one of an older attempt or another seed: refused).

    The checkpoint's epoch is reported again, marked ``replayed`` (:meth:`Trial.restore`); call
    it once per attempt.

    Raises:
        ValueError: the trial's checkpoint has no ``lightning.ckpt`` (it was not written by
            this callback), so training could not continue where it was reported.
    """
    epoch = trial.restore()
    if epoch == 0:
        return None
    path = trial.restored_files.get(LIGHTNING_CKPT)
    if path is None:
        raise ValueError(
            f"ConvergenceCallback: the checkpoint of epoch {epoch} has no {LIGHTNING_CKPT} "
            f"(files: {', '.join(sorted(trial.restored_files)) or 'only checkpoint.pt'})"
        )
    return path


class ConvergenceCallback(pl.Callback):
    """Report each epoch's validation metrics, gradient norm, dead units and lr to the trial.

    Args:
        metrics: reported name -> the name the LightningModule logs (``self.log(name, ...)``);
            None reports every scalar in ``trainer.callback_metrics`` under its own name.
        trial: the trial to report to; None is the one running in this process
            (:func:`orchestrator.trial.current`), looked up when fitting starts.
    """

    def __init__(self, metrics: Mapping[str, str] | None = None, trial: Trial | None = None) -> None:
        super().__init__()
        if metrics is not None:
            bad = [f"{k!r}: {v!r}" for k, v in metrics.items() if not (_name(k) and _name(v))]
            if bad:
                raise ValueError(f"ConvergenceCallback: metrics maps names to names; got {'; '.join(bad)}")
        self.metrics = dict(metrics) if metrics is not None else None
        self._trial = trial
        self._watch: Watch | None = None
        self._checked = False
        self._reported_epoch = self._validated_epoch = 0
        self._ckpt_path: Any = _UNSET

    @property
    def trial(self) -> Trial:
        """The trial this callback reports to.

        Raises:
            RuntimeError: none was given and none runs in this process.
        """
        if self._trial is None:
            self._trial = current()
            if self._trial is None:
                raise RuntimeError(_NO_TRIAL)
        return self._trial

    @property
    def ckpt_path(self) -> str | None:
        """:func:`resume_path` of the trial, computed once (the replay is reported once)."""
        if self._ckpt_path is _UNSET:
            self._ckpt_path = resume_path(self.trial)
            if self._ckpt_path is not None:
                self._reported_epoch = int(self.trial.last["epoch"])
        return self._ckpt_path

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the trial, give the Trainer its budget, watch the module and the first optimizer."""
        trial = self.trial
        if trainer.check_val_every_n_epoch != 1:
            raise ValueError(
                "ConvergenceCallback: the orchestrator needs a validation every epoch; got "
                f"check_val_every_n_epoch={trainer.check_val_every_n_epoch}"
            )
        if trainer.max_epochs != trial.epochs:
            logger.warning(
                "ConvergenceCallback: Trainer(max_epochs=%s) set to the trial's budget, %d epochs",
                trainer.max_epochs,
                trial.epochs,
            )
            trainer.fit_loop.max_epochs = trial.epochs
        if trial.device.type != trainer.strategy.root_device.type:
            logger.warning(
                "ConvergenceCallback: the trial runs on %s but the Trainer on %s "
                "(pass accelerator=trial.device.type, devices=1)",
                trial.device,
                trainer.strategy.root_device,
            )
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self._watch = trial.watch(pl_module, optimizer, step_hook=False)
        self._validated_epoch = 0

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Forget what the sanity check's forward passes showed: they are no epoch's."""
        if self._watch is not None:
            self._watch.take()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Count the step's gradient norm (its gradients are computed and unscaled by now)."""
        if self._watch is not None:
            self._watch.add_step(optimizer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note that this epoch was validated (the sanity check does not count)."""
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch + 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report a validated epoch once (its training and validation values are final now)."""
        epoch = trainer.current_epoch + 1
        if self._validated_epoch != epoch or epoch <= self._reported_epoch:
            return
        values = self._read(trainer.callback_metrics)
        self._reported_epoch = epoch
        self.trial.report(
            epoch,
            checkpoint={"model": pl_module},
            files={LIGHTNING_CKPT: functools.partial(trainer.save_checkpoint, weights_only=False)},
            **values,
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop watching (the hooks are removed)."""
        self._unwatch()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Stop watching when training fails."""
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watch is not None and self._trial is not None:
            self._trial.unwatch()
        self._watch = None

    def _read(self, logged: Mapping[str, Any]) -> dict[str, float]:
        """The epoch's metrics as floats, under their reported names.

        Raises:
            ValueError: at the first report, a mapped name the module did not log.
        """
        if self.metrics is None:
            return {name: v for name, value in logged.items() if (v := _scalar(value)) is not None}
        if not self._checked:
            missing = [f"{name!r}" for name in self.metrics.values() if name not in logged]
            if missing:
                raise ValueError(
                    f"ConvergenceCallback: {', '.join(missing)} not logged (logged: "
                    f"{', '.join(sorted(logged)) or 'nothing'}); log it with self.log in validation_step"
                )
            self._checked = True
        out = {}
        for reported, name in self.metrics.items():
            value = _scalar(logged[name]) if name in logged else None
            if value is not None:
                out[reported] = value
        return out


def _scalar(value: Any) -> float | None:
    """A logged value as a float (NaN and inf kept), or None when it is not one number."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu().item()) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
