"""A training run's bookkeeping: the progress a checkpoint restores, the budget it may spend, the update
the device is still working on, and the device-side sums between two reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import Tensor

from seqed.runtime import Dist, all_reduce_sum


@dataclass
class TrainState:
    """Everything about training progress that a checkpoint must restore for an exact resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0     # batches of this epoch already consumed (this rank's shard, after epoch_start)
    epoch_start: int = 0        # global batches of this epoch consumed before a resume with another world size
    best: Optional[float] = None
    bad_validations: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)
    skipped_steps: int = 0      # updates skipped for a non-finite loss or gradient
    oom_skipped: int = 0        # updates skipped for CUDA out-of-memory (train.skip_oom)
    loss_since_validation: float = 0.0  # summed training loss (all ranks) since the last validation
    tokens_since_validation: int = 0    # target tokens behind loss_since_validation
    since_report: dict = field(default_factory=dict)  # `Window.total()` at the checkpoint, as a dict

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def reshard(self, saved_world: int, world: int) -> Optional[str]:
        """Continue a checkpoint written by `saved_world` processes with `world`; returns a note, or None.

        Every rank of the saved run took `batch_in_epoch` of the global batches after `epoch_start`, so
        the new run starts its shards at global batch `epoch_start + batch_in_epoch * saved_world`.
        """
        if saved_world == world:
            return None
        self.epoch_start += self.batch_in_epoch * saved_world
        self.batch_in_epoch = 0
        return (f"the checkpoint was written by {saved_world} process(es), this run has {world}: continuing "
                f"after global batch {self.epoch_start} of epoch {self.epoch}; the run will not be "
                f"bit-identical to an uninterrupted one")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        d = dict(d)
        for old, new in _RENAMED.items():  # checkpoints written before the names said which span they cover
            if old in d:
                d.setdefault(new, d.pop(old))
        if isinstance(d.get("since_report"), list):  # the same five sums, stored as a list then
            d["since_report"] = dict(zip(("loss", "tokens", "updates", "all_tokens", "seconds"), d["since_report"]))
        state = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        state.history = list(state.history)
        return state


_RENAMED = {"window_loss": "loss_since_validation", "window_tokens": "tokens_since_validation",
            "log_window": "since_report"}


@dataclass
class Budget:
    """What a run may spend: updates, epochs, training minutes (0 = no limit of that kind).

    `exhausted(state)` says whether `state` has spent it and sets `reason` to the limit it reached.
    """

    max_steps: int = 0
    max_epochs: int = 0
    max_minutes: float = 0.0
    reason: Optional[str] = None

    @property
    def seconds(self) -> float:
        return self.max_minutes * 60

    def steps_spent(self, state: TrainState) -> bool:
        return bool(self.max_steps) and state.step >= self.max_steps

    def time_spent(self, state: TrainState) -> bool:
        return bool(self.max_minutes) and state.train_seconds >= self.seconds

    def epochs_spent(self, state: TrainState) -> bool:
        return bool(self.max_epochs) and state.epoch >= self.max_epochs

    def exhausted(self, state: TrainState, *, time_spent: Optional[bool] = None) -> bool:
        """True when a limit is reached (`reason` names it); `time_spent` replaces this process's clock
        by the ranks' agreed answer."""
        limits = ((self.steps_spent(state), "max_steps", self.max_steps),
                  (self.time_spent(state) if time_spent is None else time_spent, "max_minutes", self.max_minutes),
                  (self.epochs_spent(state), "max_epochs", self.max_epochs))
        self.reason = next((f"reached train.{key}={value}" for hit, key, value in limits if hit), None)
        return self.reason is not None


@dataclass
class Pending:
    """An update queued on the device whose outcome the host has not read yet.

    Attributes:
        status: "ok" or "oom" (known on the host at once); "ok" may still turn out non-finite.
        loss: () device tensor, this rank's summed label-smoothed loss.
        finite: () bool device tensor, False when the update was skipped for a non-finite value.
        n_tgt, n_all: this rank's target tokens, and source + target tokens.
        seconds: host time the update took to queue.
    """

    status: str
    loss: Optional[Tensor] = None
    finite: Optional[Tensor] = None
    n_tgt: int = 0
    n_all: int = 0
    seconds: float = 0.0


@dataclass
class Sums:
    """The updates since the last report, summed: loss and tokens over all ranks, the timing this rank's."""

    loss: float = 0.0       # summed label-smoothed training loss
    tokens: int = 0         # target tokens behind `loss`
    updates: int = 0
    all_tokens: int = 0     # source + target tokens (throughput)
    seconds: float = 0.0    # host time spent queueing the updates


class Window:
    """The sums of the updates since the last report; loss and tokens add up on the device (no host read
    per update), the rest on the host."""

    def __init__(self, device: torch.device):
        self.on_device = torch.zeros(2, dtype=torch.float64, device=device)  # loss, target tokens
        self.updates, self.all_tokens, self.seconds = 0, 0, 0.0

    def add(self, p: Pending) -> None:
        self.on_device[0] += p.loss
        self.on_device[1] += p.n_tgt
        self.updates += 1
        self.all_tokens += p.n_all
        self.seconds += p.seconds

    def total(self, dist: Dist) -> Sums:
        """The sums so far, loss and tokens added up over ranks (every rank joins)."""
        loss, tokens = all_reduce_sum(self.on_device.clone(), dist).tolist()
        return Sums(loss, int(tokens), self.updates, self.all_tokens, self.seconds)

    def restore(self, saved: dict, dist: Dist) -> None:
        """Continue the sums a checkpoint saved (`asdict(total())`), on rank 0 only: reads add the ranks up."""
        if saved and dist.main:
            s = Sums(**saved)
            self.on_device = torch.tensor([s.loss, s.tokens], dtype=torch.float64, device=self.on_device.device)
            self.updates, self.all_tokens, self.seconds = int(s.updates), int(s.all_tokens), float(s.seconds)

    def read(self, dist: Dist) -> Sums:
        """The sums so far (`total`), then start again from zero."""
        sums = self.total(dist)
        self.on_device.zero_()
        self.updates, self.all_tokens, self.seconds = 0, 0, 0.0
        return sums

    def saved(self, dist: Dist) -> dict:
        """`total()` as the plain dict a checkpoint stores."""
        return asdict(self.total(dist))


def diverged(bad_in_row: int, t) -> str:
    """Why training stopped after `bad_in_row` non-finite updates, and what to try (`t`: the train config)."""
    return (f"{bad_in_row} non-finite losses in a row (train.max_bad_steps): training diverged. "
            f"Likely causes: learning rate too high (train.lr={t.lr}), too short warmup "
            f"(train.warmup={t.warmup}), fp16 overflow (try train.precision=bf16 or fp32), no "
            f"gradient clipping (train.clip={t.clip}), or corrupt data. Lower train.lr and start "
            f"again, or continue from the last checkpoint (before the divergence) with --resume "
            f"and a lower train.lr")


def oom_message(batch, step: int, max_tokens: int) -> str:
    """What ran out of memory and what to lower."""
    return (f"out of memory at step {step} on a batch of {len(batch)} sentences: source {tuple(batch.src.shape)}, "
            f"target {tuple(batch.tgt_in.shape)} (sentences x padded tokens). Lower train.max_tokens (now "
            f"{max_tokens}; raise train.accum to keep the tokens per update)")
