"""The process a training run lives in: errors, torch.distributed, device, random state, versions."""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from seqed import __version__


def cpu_lacks_native(dtype: torch.dtype) -> bool:
    """True when oneDNN has no native kernels for `dtype` (bf16, fp16) on this CPU.

    On such CPUs (e.g. AVX2 without AVX512-BF16) bf16 autocast is emulated (the Multi30k Transformer
    recipe's first update took 84 s in bf16, its fp32 updates 3.7 s, torch 2.13) and oneDNN's bf16 LSTM fails for many shapes with "could not
    create a primitive descriptor for the LSTM forward propagation primitive" (seen with torch 2.13).
    """
    try:
        if dtype == torch.bfloat16:
            return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        if dtype == torch.float16:
            return not torch.ops.mkldnn._is_mkldnn_fp16_supported()
    except (AttributeError, RuntimeError):
        return True
    return False


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to try."""


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device_kind == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, dist_info: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"train.device={name} but CUDA is not available: use train.device=cpu")
        if name == "cuda":
            name = f"cuda:{dist_info.local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


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
