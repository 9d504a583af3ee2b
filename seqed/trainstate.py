"""A training run's bookkeeping: the progress a checkpoint restores, the update the device is still
working on, and the device-side sums between two reports."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    window_loss: float = 0.0    # summed training loss (all ranks) since the last validation
    window_tokens: int = 0      # target tokens behind window_loss
    log_window: list = field(default_factory=list)  # `Window.snapshot()` at the checkpoint: the log line's sums

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
        state = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        state.history = list(state.history)
        return state


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


class Window:
    """Device-side sums of the updates since the last report: no host read per update."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, target tokens
        self.host = [0, 0, 0.0]  # updates, source + target tokens, seconds

    def add(self, p: Pending) -> None:
        self.sums[0] += p.loss
        self.sums[1] += p.n_tgt
        self.host = [self.host[0] + 1, self.host[1] + p.n_all, self.host[2] + p.seconds]

    def snapshot(self, dist: Dist) -> list:
        """The window's sums over ranks [loss, tokens, updates, all tokens, seconds], kept for a checkpoint."""
        loss, tokens = all_reduce_sum(self.sums.clone(), dist).tolist()
        return [loss, tokens, *self.host]

    def restore(self, values: list, dist: Dist) -> None:
        """Continue a window saved by `snapshot` (the sums on rank 0 only: reads add the ranks up)."""
        if values and dist.main:
            self.sums = torch.tensor(values[:2], dtype=torch.float64, device=self.sums.device)
            self.host = [int(values[2]), int(values[3]), float(values[4])]

    def read(self, dist: Dist) -> dict:
        """The window summed over ranks (loss and tokens; the timing is this rank's), then reset."""
        loss, tokens, updates, all_tokens, seconds = self.snapshot(dist)
        self.sums.zero_()
        self.host = [0, 0, 0.0]
        return {"loss": loss, "tokens": int(tokens), "updates": updates, "all_tokens": all_tokens,
                "seconds": seconds}


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
