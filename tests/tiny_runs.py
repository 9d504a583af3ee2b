"""A tiny reversal task and config shared by the reliability and distributed tests (not a test module).

The model (1+1-layer Transformer, d 32, ~20 BPE pieces) trains at a few ms per step on one CPU
thread, so tests can afford many short runs through the real CLI.
"""

import os
import random
import sys
from pathlib import Path

import torch

ALPHABET = "a b c d e f g h i j k l".split()


def write_task(directory: Path, n_train: int = 300, n_valid: int = 20, seed: int = 0) -> Path:
    """train.{src,tgt} and valid.{src,tgt}: random letter strings and their reversals."""
    rng = random.Random(seed)
    rows = [[rng.choice(ALPHABET) for _ in range(rng.randint(3, 8))] for _ in range(n_train + n_valid)]
    for name, part in (("train", rows[:n_train]), ("valid", rows[n_train:])):
        (directory / f"{name}.src").write_text("".join(" ".join(r) + "\n" for r in part))
        (directory / f"{name}.tgt").write_text("".join(" ".join(reversed(r)) + "\n" for r in part))
    return directory


def write_config(path: Path, data: Path, out_dir: Path, *, train: str = "", valid: bool = True) -> Path:
    """A YAML config for the tiny model; `train` adds flow-style keys to the train section."""
    valid_line = f"  valid: {{format: text, src: {data}/valid.src, tgt: {data}/valid.tgt}}\n" if valid else ""
    path.write_text(
        f"out_dir: {out_dir}\n"
        f"data:\n  train: {{format: text, src: {data}/train.src, tgt: {data}/train.tgt}}\n{valid_line}"
        "  max_len: 20\n"
        "tokenizer: {vocab_size: 20, type: bpe}\n"
        "model:\n"
        "  encoder: {hidden: 32, ffn: 64, layers: 1, heads: 2, dropout: 0.1}\n"
        "  decoder: {hidden: 32, ffn: 64, layers: 1, heads: 2, dropout: 0.1}\n"
        "  max_positions: 64\n"
        "train: {max_tokens: 256, valid_every: 10, max_steps: 40, log_every: 10, device: cpu, warmup: 20, threads: 1"
        + (f", {train}" if train else "") + "}\n")
    return path


def seqed_argv(*args) -> list[str]:
    return [sys.executable, "-m", "seqed", *map(str, args)]


def child_env(**extra) -> dict:
    """One intra-op thread in child processes (two tests' children share the 2-core CI machine)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def load_state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict, what: str = "") -> None:
    """Every tensor of two nested state dicts bit-identical (torch.equal)."""
    assert set(a) == set(b), f"{what}: keys differ"
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), f"{what}{k} differs"
        elif isinstance(a[k], dict):
            assert_same_tensors(a[k], b[k], f"{what}{k}.")
        elif isinstance(a[k], list) and a[k] and isinstance(a[k][0], dict):
            for i, (x, y) in enumerate(zip(a[k], b[k])):
                assert_same_tensors(x, y, f"{what}{k}[{i}].")
