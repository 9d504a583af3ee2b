"""Checkpoints: atomic writes, safe loads, rotation, averaging.

A checkpoint is one `torch.save` dict holding only tensors and plain Python values, so it loads with
`torch.load(weights_only=True)`: a file from a stranger cannot run code. It carries the config and
the tokenizer models, so a checkpoint alone can translate.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_VERSION = 1
_STEP_RE = re.compile(r"checkpoint_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A crash (even `kill -9`) or a full disk at any moment leaves either the old file or the new one,
    never a truncated file under `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a seqed checkpoint safely (`weights_only=True`).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated, corrupted, not a seqed checkpoint, or containing code objects.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"no checkpoint_best.pt or checkpoint_last.pt in directory {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((line.strip() for line in str(err).splitlines() if "Unpickler error" in line),
                      str(err).splitlines()[0])
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain values "
            f"(possibly malicious, or not written by seqed). {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError,
            TypeError, struct.error) as err:  # what torch.load raises on bytes that are not a checkpoint
        raise CheckpointError(
            f"{path}: cannot read the checkpoint (truncated or corrupted?): {str(err).splitlines()[0]}. "
            f"Use an earlier checkpoint from the same directory.") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a seqed checkpoint (no 'model'/'config' entries)")
    return state


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a killed `save_atomic` (or link) left behind in `directory`.

    Only call this when no other process writes checkpoints there.

    Returns:
        the deleted paths.
    """
    stale = [p for p in Path(directory).glob(".checkpoint_*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def step_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """`checkpoint_<step>.pt` files in `directory`, oldest step first."""
    found = []
    for p in Path(directory).glob("checkpoint_*.pt"):
        m = _STEP_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def rotate(directory: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (best/last are kept apart)."""
    files = step_checkpoints(directory)
    for p in files[: max(0, len(files) - keep_last)]:
        p.unlink(missing_ok=True)


def average_checkpoints(paths: list[str | os.PathLike]) -> dict:
    """Average the model parameters of several checkpoints of one architecture.

    Returns the first checkpoint's dict with averaged `model` weights and no optimizer state.
    """
    if not paths:
        raise ValueError("average needs at least one checkpoint")
    states = [load_checkpoint(p) for p in paths]
    keys = set(states[0]["model"])
    for p, s in zip(paths[1:], states[1:]):
        if set(s["model"]) != keys:
            raise CheckpointError(f"{p}: parameters differ from {paths[0]}: cannot average different models")
    avg = {}
    for k in states[0]["model"]:
        tensors = [s["model"][k] for s in states]
        if tensors[0].is_floating_point():
            avg[k] = torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)
        else:
            avg[k] = tensors[-1]
    out = {k: v for k, v in states[0].items() if k not in ("optimizer", "scheduler", "scaler", "rng", "sampler")}
    out["model"] = avg
    out["averaged_from"] = [str(p) for p in paths]
    return out
