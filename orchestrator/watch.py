"""What the framework measures of a watched model: the gradient norm and the dead ReLU units.

:class:`Watch` hooks a user's model and optimizer and measures, between two :meth:`Watch.take`
calls (one epoch):

- ``grad_norm``: the mean over optimizer steps of the global L2 norm of the gradients the step
  is about to apply (an optimizer step pre-hook, so it sees every gradient the user's loop
  produced, clipping included; a framework that computes the gradients inside ``step`` (a
  closure, as Lightning does) passes ``step_hook=False`` and calls :meth:`Watch.add_step`
  when the gradients are ready);
- ``dead_frac``: the share of ReLU-family units (channels for convolutions) whose output was
  not positive for any sample the model saw in eval mode (forward hooks that record only when
  the module is not training, i.e. during validation);
- ``lr``: the optimizer's first learning rate.

It also keeps the first two rows of the model's first eval-mode input (:attr:`Watch.example`):
the input example that gives a logged MLflow model its signature.

A value the watch could not measure (no optimizer, no step, no eval-mode forward) is left out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Modules whose units can die (output never positive).
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, nn.ReLU6)


class Watch:
    """Hooks on ``model`` (and ``optimizer`` when given); :meth:`take` reads and resets them."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, step_hook: bool = True
    ) -> None:
        self.optimizer = optimizer
        self._grad_sum, self._steps = 0.0, 0
        self._alive: dict[int, torch.Tensor] = {}
        self._evaluated = False
        self.example: torch.Tensor | None = None  # the first two rows of an eval-mode input
        self._units = [m for m in model.modules() if isinstance(m, RELU_FAMILY)]
        self._handles = [m.register_forward_hook(self._on_forward) for m in self._units]
        self._handles += [model.register_forward_hook(self._on_model_forward)]
        if optimizer is not None and step_hook:
            self._handles.append(optimizer.register_step_pre_hook(self._on_step))

    def _on_step(self, optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        self.add_step(optimizer)

    def add_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Count one optimizer step: the global L2 norm of the gradients ``optimizer`` is about to
        apply enters the epoch's mean ``grad_norm`` (a step without gradients is not counted)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self._grad_sum += float(nn.utils.get_total_norm(grads))
            self._steps += 1

    def _on_model_forward(self, module: nn.Module, inp: Any, _out: Any) -> None:
        if module.training:
            return
        self._evaluated = True
        if self.example is None and inp and isinstance(inp[0], torch.Tensor) and inp[0].dim() > 0:
            self.example = inp[0][:2].detach().cpu().clone()

    def _on_forward(self, module: nn.Module, _inp: Any, out: Any) -> None:
        if module.training or not isinstance(out, torch.Tensor) or out.dim() == 0:
            return
        with torch.no_grad():
            dims = [0, *range(2, out.dim())]
            active = (out > 0).any(dim=dims) if out.dim() > 1 else (out > 0)
        key = id(module)
        self._alive[key] = self._alive[key] | active if key in self._alive else active

    def take(self) -> dict[str, float]:
        """``grad_norm``, ``dead_frac`` and ``lr`` since the last call (those it could measure)."""
        out: dict[str, float] = {}
        if self._steps:
            out["grad_norm"] = self._grad_sum / self._steps
        if self._evaluated or self._alive:
            units = sum(a.numel() for a in self._alive.values())
            dead = sum(int((~a).sum()) for a in self._alive.values())
            out["dead_frac"] = dead / units if units else 0.0
        if self.optimizer is not None and self.optimizer.param_groups:
            out["lr"] = float(self.optimizer.param_groups[0]["lr"])
        self._grad_sum, self._steps, self._alive, self._evaluated = 0.0, 0, {}, False
        return out

    def close(self) -> None:
        """Remove every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
