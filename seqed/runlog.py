"""What a training run writes for people and tools to watch: messages, `train.log.jsonl`, TensorBoard.

`train.log.jsonl` holds one JSON object per line: `{"event": "train", ...}` every `train.log_every`
updates (training loss, learning rate, tokens/s) and `{"event": "valid", ...}` at each validation
(validation loss, BLEU, chrF, the resolved `train.precision`, ...); every line has `time`, the wall clock
when it was written (Unix seconds). With `train.tensorboard: true` the same numbers go to
`out_dir/tensorboard` through `torch.utils.tensorboard` (`pip install 'seqed[tensorboard]'`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from seqed.files import append_text, write_atomic

LOG_NAME = "train.log.jsonl"


def read_records(path: str | os.PathLike, event: Optional[str] = "valid") -> list[dict]:
    """The records of a `train.log.jsonl` (only `event`'s; all with None). Logs from before the "event"
    key hold validation records only."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if event is None or r.get("event", "valid") == event]


class RunLog:
    """Rank 0's logs of one run directory.

    Args:
        out: the run directory.
        enabled: False on ranks other than 0 (every method is then a no-op).
        tensorboard: also write TensorBoard event files to `out/tensorboard`.
        env: written to `out/env.json` (with argv) for a fresh run.
        fresh: a new run (not a resume).
    """

    def __init__(self, out: Path, *, enabled: bool = True, tensorboard: bool = False,
                 env: Optional[dict] = None, fresh: bool = True):
        self.path = Path(out) / LOG_NAME
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if fresh and env is not None:
            write_atomic(Path(out) / "env.json", json.dumps(dict(env, argv=sys.argv), indent=2))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("train.tensorboard=true needs the tensorboard package: "
                                 "pip install 'seqed[tensorboard]'") from None
            self.writer = SummaryWriter(log_dir=str(Path(out) / "tensorboard"))

    @staticmethod
    def message(msg: str) -> None:
        """One line for the person watching (stderr, above the progress bar)."""
        tqdm.write(f"[seqed] {msg}", file=sys.stderr)

    def truncate(self, step: int) -> None:
        """Keep only the lines of steps up to `step`: a resumed run redoes the later ones."""
        if not self.enabled or not self.path.is_file():
            return
        rows = read_records(self.path, event=None)
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= step))

    def _append(self, record: dict) -> None:
        append_text(self.path, json.dumps(dict(record, time=round(time.time(), 3))) + "\n")

    def train(self, record: dict) -> None:
        """A training line: step, train_loss (label-smoothed, per target token), lr, tokens_per_s."""
        if not self.enabled:
            return
        self._append({"event": "train", **record})
        if self.writer is not None:
            for key in ("train_loss", "lr", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", record[key], record["step"])

    def validation(self, result: dict) -> None:
        """A validation line (and the message people see)."""
        if not self.enabled:
            return
        self._append({"event": "valid", **result})
        if self.writer is not None:
            for key in ("valid_nll", "valid_ppl", "valid_bleu", "valid_chrf", "valid_kl", "train_loss"):
                if key in result:
                    self.writer.add_scalar(f"valid/{key}", result[key], result["step"])
            self.writer.flush()
        shown = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in result.items()}
        self.message(f"validation {shown}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
