"""Optimizers and learning-rate schedules: warmup + inverse square root (noam), plateau, constant,
warmup-stable-decay (wsd)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("noam", "plateau", "constant", "wsd")  # see Schedule


def build_optimizer(params, *, name: str = "adamw", lr: float = 1e-3, betas=(0.9, 0.98), eps: float = 1e-9,
                    weight_decay: float = 0.0, fused: bool | None = None) -> torch.optim.Optimizer:
    """Adam or AdamW; `fused` (default: when all parameters share one CPU or CUDA device) uses the
    fused kernel: 2.9x faster than the per-tensor loop on this CPU for a 3+3-layer d256 Transformer."""
    params = list(params)
    if fused is None:
        fused = bool(params) and len({p.device.type for p in params}) == 1 and params[0].device.type in ("cpu", "cuda")
    cls = OPTIMIZERS[name]
    kwargs = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if fused:
        kwargs["fused"] = True
    return cls(params, **kwargs)


class Schedule:
    """Sets the optimizer's learning rate each step; state is a plain dict for checkpoints.

    * ``noam``: lr * min(step / warmup, sqrt(warmup / step)) — linear warmup to the peak `lr`, then
      inverse square root decay (Vaswani et al. 2017, in fairseq's peak-lr form).
    * ``plateau``: linear warmup, then multiply by `factor` after `patience` validations without
      improvement of the monitored loss, down to `min_lr`.
    * ``constant``: linear warmup, then `lr`.
    * ``wsd``: warmup-stable-decay: linear warmup, `lr` until the last `decay_fraction` of `total`
      steps, then linear decay to `min_lr` at step `total` (the "cooldown" of Hu et al. 2024, MiniCPM,
      https://arxiv.org/abs/2404.06395): a fixed budget's last steps settle in a minimum instead of
      bouncing around it at the peak rate. `total` is `train.max_steps`; when it is 0, the decay takes
      the last `decay_fraction` of `seconds` (`train.max_minutes`) instead, read from the training
      seconds given to `set_step`: the same cool-down on a fast or a slow machine, but the learning rate
      of an update then depends on the machine's speed, so such a run is not reproducible update for update.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str = "noam", lr: float = 1e-3,
                 warmup: int = 0, factor: float = 0.5, patience: int = 2, min_lr: float = 1e-6,
                 total: int = 0, seconds: float = 0.0, decay_fraction: float = 0.2):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}: use one of {', '.join(SCHEDULES)}")
        if kind == "wsd" and ((total <= 0 and seconds <= 0) or not 0.0 < decay_fraction <= 1.0):
            raise ValueError(f"schedule wsd needs total > 0 steps or seconds > 0, and 0 < decay_fraction <= 1, got "
                             f"total={total}, seconds={seconds}, decay_fraction={decay_fraction}")
        self.optimizer = optimizer
        self.kind, self.peak, self.warmup = kind, lr, warmup
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.total, self.decay_steps = total, max(1, round(decay_fraction * total))  # wsd only
        self.seconds, self.decay_fraction = seconds, decay_fraction  # wsd by the clock (total == 0) only
        self.by_clock = kind == "wsd" and total <= 0
        self.scale = 1.0  # plateau reductions so far
        self.best = math.inf
        self.bad = 0
        self.set_step(0)

    def lr_at(self, step: int, elapsed: float = 0.0) -> float:
        """The learning rate of update `step` (1-based), `elapsed` training seconds into the run."""
        step = max(step, 1)
        warm = min(1.0, step / self.warmup) if self.warmup > 0 else 1.0
        if self.kind == "noam":
            decay = math.sqrt(self.warmup / step) if self.warmup > 0 and step > self.warmup else 1.0
            if self.warmup == 0:
                decay = 1.0 / math.sqrt(step)
            return self.peak * min(warm, decay) if self.warmup > 0 else self.peak * decay
        if self.by_clock:
            left = max(self.seconds - elapsed, 0.0) / self.seconds  # fraction of the budget still to come
            frac = min(left / self.decay_fraction, 1.0)
            return self.min_lr + (self.peak - self.min_lr) * frac * warm if frac < 1.0 else self.peak * warm
        if self.kind == "wsd":
            left = self.total - step  # steps after this one; 0 at the last
            if left < self.decay_steps:
                frac = max(left, 0) / self.decay_steps
                return self.min_lr + (self.peak - self.min_lr) * frac * warm
            return self.peak * warm
        return max(self.peak * self.scale, self.min_lr) * warm

    def set_step(self, step: int, elapsed: float = 0.0) -> float:
        """Set (and return) the learning rate of update `step`; `elapsed`: training seconds (wsd by the clock)."""
        lr = self.lr_at(step, elapsed)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_note(self, step: int, elapsed: float) -> Optional[str]:
        """What to say when training stops at `step` after `elapsed` seconds before the wsd decay ended."""
        if self.kind != "wsd":
            return None
        lr = f"learning rate {self.optimizer.param_groups[0]['lr']:.2e}"
        if self.by_clock:
            if elapsed >= self.seconds:
                return None
            start = (1 - self.decay_fraction) * self.seconds / 60
            return (f"note: the wsd schedule decays over minutes {start:.1f}-{self.seconds / 60:g} of training, but "
                    f"training stopped after {elapsed / 60:.1f} minutes ({lr})")
        if step >= self.total:
            return None
        return (f"note: the wsd schedule decays over steps {self.total - self.decay_steps}-{self.total}, but training "
                f"stopped at step {step} ({lr}): set train.max_steps to the updates your budget reaches, or to 0 "
                f"to decay over the end of train.max_minutes")

    def on_validation(self, loss: float) -> None:
        if self.kind != "plateau":
            return
        if loss < self.best:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale *= self.factor
                self.bad = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad = state["scale"], state["best"], state["bad"]


def grad_norm_clip(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (no-op when max_norm is 0); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.norm(torch.stack([p.grad.detach().norm() for p in params])) if params else torch.zeros(())


def skip_on_device(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """Apply the update only when `finite` (a () bool tensor) is true, without reading it on the host.

    Fused Adam/AdamW take a `found_inf` tensor (the hook `torch.amp.GradScaler` uses): when it is 1 the
    kernel leaves parameters and moments untouched and the step counters are put back, exactly as if
    `step()` had not been called. Other optimizers read the flag (one host synchronisation).
    """
    if optimizer.defaults.get("fused") and getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale = None
        optimizer.found_inf = (~finite).float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif bool(finite):
        optimizer.step()
