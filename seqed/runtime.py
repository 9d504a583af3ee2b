"""The process a run lives in: the device, torch.distributed helpers, stop signals, random state, the CPU's
name, versions."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from seqed import __version__


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str, timeout_minutes: float = 30.0) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1).

    Args:
        device_kind: "cuda" (NCCL) or "cpu" (gloo).
        timeout_minutes: how long a collective may wait for the slowest rank (`train.dist_timeout_minutes`;
            NCCL's own default is 10 minutes).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    from datetime import timedelta

    import torch.distributed as dist

    backend = "nccl" if device_kind == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def device_kind(name: str) -> str:
    """"cuda" or "cpu": the kind of device `name` ("auto", "cpu", "cuda", "cuda:N") resolves to here."""
    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The one device resolver (training and inference).

    Args:
        name: "auto" (CUDA when available), "cpu", "cuda" (this process's GPU: `local_rank`) or "cuda:N".
        local_rank: the process's GPU under torchrun.

    Raises:
        ValueError: CUDA asked for but not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name} asked for (train.device or --device) but CUDA is not available "
                             f"here: use cpu")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def all_reduce_sum(t: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    """`t` summed over all processes, in place and without a host read (identity in one process)."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def broadcast_object(obj: Any, dist_info: Dist) -> Any:
    """Rank 0's `obj` on every rank (identity in one process)."""
    if dist_info.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rng(device: torch.device, dist_info: Dist) -> dict:
    """This rank's RNG state, with every rank's under "per_rank" when distributed (all ranks must call)."""
    rng = rng_state(device)
    if dist_info.world > 1:
        import torch.distributed as dist

        gathered = [None] * dist_info.world
        dist.all_gather_object(gathered, rng)
        rng = dict(rng, per_rank=gathered)
    return rng


class StopSignals:
    """SIGINT/SIGTERM ask a run to finish its current step, save and stop; a second one stops at once.

    `received` holds the first signal's number, or None.
    """

    def __init__(self):
        self.received: Optional[int] = None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    @contextlib.contextmanager
    def installed(self, *, announce: bool = True) -> Iterator[None]:
        """Handle the signals inside the block (main thread only: elsewhere Python cannot)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.received is not None:
                raise KeyboardInterrupt
            self.received = signum
            if announce:  # os.write: printing through sys.stderr from a handler can be reentrant
                os.write(2, f"[seqed] got {signal.Signals(signum).name}: finishing this step, then saving a "
                            f"checkpoint (send it again to stop at once, without saving)\n".encode())

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for results files."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import sacrebleu
    import sentencepiece

    return {"seqed": __version__, "torch": str(torch.__version__), "sentencepiece": str(sentencepiece.__version__),
            "sacrebleu": str(sacrebleu.__version__), "python": platform.python_version(),
            "platform": platform.platform()}
