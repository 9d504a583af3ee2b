"""Checkpoints: the versioned format, saving (atomically, through `seqed.files`), safe loads, rotation,
averaging.

A checkpoint is one `torch.save` dict holding only tensors and plain Python values, so it loads with
`torch.load(weights_only=True)`: a file from a stranger cannot run code. It carries the config and
the tokenizer models, so a checkpoint alone can translate. `Checkpoint` names its entries; its
`version` is checked on load.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from seqed.errors import SeqedError
from seqed.files import atomic_open, link_atomic

# The format written here; files of a newer format are refused with a clear message.
CHECKPOINT_VERSION = 1
_STEP_RE = re.compile(r"checkpoint_(\d+)\.pt$")


class CheckpointError(SeqedError, ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


@dataclass
class Checkpoint:
    """What a training checkpoint holds (format `CHECKPOINT_VERSION`).

    Attributes:
        model: the model's state_dict.
        config: the full config as a plain dict (`seqed.config.to_dict`).
        tokenizer: the tokenizer models (`Tokenizer.to_dict`).
        optimizer, scheduler, scaler: training state (None in averaged or exported checkpoints; scaler
            None unless fp16 on CUDA).
        train_state: `TrainState.to_dict()` plus "world", the process count that wrote it.
        rng: random generator states (`runtime.rng_state`), with "per_rank" under DDP.
        versions: library versions that wrote it.
    """

    model: dict
    config: dict
    tokenizer: Optional[dict] = None
    optimizer: Optional[dict] = None
    scheduler: Optional[dict] = None
    scaler: Optional[dict] = None
    train_state: dict = field(default_factory=dict)
    rng: Optional[dict] = None
    versions: dict = field(default_factory=dict)
    version: int = CHECKPOINT_VERSION

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def save_step(ckpt: Checkpoint, directory: str | os.PathLike, step: int, *, is_best: bool,
              keep_last: int) -> Path:
    """Write `checkpoint_<step>.pt` and point `checkpoint_last.pt` (and `_best`) at it; rotate old steps.

    Best is linked before last: a kill in between leaves `last` older, and resuming redoes the step.

    Raises:
        WriteError: the disk is full or not writable; the earlier checkpoints are intact.
    """
    directory = Path(directory)
    step_path = directory / f"checkpoint_{step}.pt"
    save_atomic(ckpt.to_dict(), step_path)
    if is_best:
        link_atomic(step_path, directory / "checkpoint_best.pt")
    link_atomic(step_path, directory / "checkpoint_last.pt")
    rotate(directory, keep_last)
    return step_path


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file in the same directory, fsync, then rename over `path`.

    A crash (even `kill -9`) or a full disk at any moment leaves either the old file or the new one,
    never a truncated file under `path`.

    Raises:
        WriteError: the disk is full or not writable (torch.save's short write included); no temporary
            file is left and `path` is untouched.
    """
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint a path names: the file itself, or a run directory's best, else last.

    Raises:
        FileNotFoundError: no such file, or a directory without either checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no checkpoint_best.pt or checkpoint_last.pt in directory {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> dict:
    """Load a seqed checkpoint safely (`weights_only=True`).

    `mmap`: map the file instead of reading it, so only the tensors used are read from disk (a
    translator reads the model's third of a training checkpoint, not the optimizer's moments).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated, corrupted, not a seqed checkpoint, or containing code objects.
    """
    path = checkpoint_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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
    version = state.get("version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} was written by a newer seqed (this one reads "
                              f"formats up to {CHECKPOINT_VERSION}): upgrade seqed (pip install -U seqed)")
    return state


def resume_checkpoint(out: str | os.PathLike, config: dict, *, resume: bool) -> Optional[dict]:
    """The checkpoint a run in `out` continues from (None for a new run), checked against its config.

    Args:
        out: the run directory.
        config: the new run's full config (`seqed.config.to_dict`).
        resume: --resume was given.

    Raises:
        ValueError: a new run in a directory that holds one, --resume without a checkpoint, or a
            model/tokenizer config that differs from the checkpoint's (train/data/search may change).
    """
    from seqed.config import config_diff, config_from_dict, to_dict

    last = Path(out) / "checkpoint_last.pt"
    if not resume:
        if last.is_file():
            raise ValueError(f"{out} already holds a run (checkpoint_last.pt): add --resume to "
                             f"continue it, or choose another out_dir")
        return None
    if not last.is_file():
        raise ValueError(f"--resume: no {last}; start without --resume or point out_dir at the run")
    ckpt = load_checkpoint(last)
    stored = to_dict(config_from_dict(ckpt["config"]))  # with the defaults of keys added since
    changed = [f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in config_diff(
        {"model": stored.get("model"), "tokenizer": stored.get("tokenizer")},
        {"model": config["model"], "tokenizer": config["tokenizer"]})]
    if changed:
        raise ValueError(f"--resume: the model/tokenizer config differs from the one in {last} "
                         f"({'; '.join(changed)}): resume with the same model and tokenizer "
                         f"(the train, data and search sections may change), or start a new out_dir")
    return ckpt


def restore_weights(ckpt: dict, *, model, optimizer, schedule, scaler) -> None:
    """Load a training checkpoint's model, optimizer, schedule and (fp16) scaler states.

    Raises:
        CheckpointError: the states do not fit the model built from the config.
    """
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint does not match the model: {str(err).splitlines()[0]}") from None
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint's optimizer state does not match the model: {err}") from None
    schedule.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])


def init_weights(parent: dict, path: str | os.PathLike, *, model, tokenizer,
                 tokenizer_from: Optional[str] = None) -> None:
    """`train.init_from`: copy the weights of checkpoint `parent` (loaded from `path`) into `model`
    (fine-tuning; the optimizer, schedule and step stay fresh).

    Args:
        tokenizer: the run's tokenizer.
        tokenizer_from: where it came from (`tokenizer.model`, a binarized directory), named in the error;
            None: the parent's own.

    Raises:
        CheckpointError: the checkpoint's vocabularies are not `tokenizer`'s, or its model is another shape.
    """
    from seqed.tokenizer import Tokenizer

    theirs = Tokenizer.from_dict(parent["tokenizer"])
    ours = f"the tokenizer of {tokenizer_from}" if tokenizer_from else "this run's"
    for side in ("src", "tgt"):
        a, b = theirs.pieces(side), tokenizer.pieces(side)
        if a != b:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise CheckpointError(
                f"train.init_from {path}: its {side} vocabulary ({len(a):,} pieces) is not {ours} ({len(b):,}; "
                f"first difference at id {first}): the weights would not fit. Fine-tune with the checkpoint's "
                f"tokenizer: leave tokenizer.model unset, or set it to the directory `tokenizer` beside the "
                f"checkpoint (preprocess again if data.binarized is set)")
    try:
        model.load_state_dict(parent["model"])
    except RuntimeError as err:
        raise CheckpointError(f"train.init_from {path}: its model does not match this config's model section "
                              f"({str(err).splitlines()[0]}): use the checkpoint's model settings") from None


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
