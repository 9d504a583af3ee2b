"""Synthetic monolingual corpora and parallel CLI training for the autoencoder tests (not a test module).

Two corpora over the letters a..l, one SentencePiece piece per letter (BPE, 29 pieces):

* `letters`: uniformly random letter strings. Nothing in one letter predicts another, so what a
  model reconstructs it must have carried from the source (the bottleneck tests).
* `walks`: cyclic walks over the alphabet with steps of +1 or +2 ("c d f g i"). A corrupted letter
  can be inferred from its neighbours, so denoising has something to learn (the noise tests).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

ALPHABET = "a b c d e f g h i j k l".split()


def letters(n: int, seed: int, lo: int = 2, hi: int = 6) -> list[str]:
    """n distinct random letter strings of lo..hi letters."""
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n:
        s = " ".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))
        if s not in seen:
            seen.add(s)
            rows.append(s)
    return rows


def walks(n: int, seed: int, lo: int = 3, hi: int = 8) -> list[str]:
    """n cyclic walks of lo..hi letters with random steps of +1 or +2 (repeats allowed)."""
    rng, rows = random.Random(seed), []
    for _ in range(n):
        i = rng.randrange(len(ALPHABET))
        walk = [i]
        for _ in range(rng.randint(lo, hi) - 1):
            i = (i + rng.choice((1, 2))) % len(ALPHABET)
            walk.append(i)
        rows.append(" ".join(ALPHABET[j] for j in walk))
    return rows


def write_corpus(directory: Path, kind: str, n_train: int = 2000, n_test: int = 200, seed: int = 0) -> Path:
    """`train.txt` and `test.txt` of the `letters` or `walks` corpus; the test sentences differ from the
    training ones for `letters` (distinct strings)."""
    make = {"letters": letters, "walks": walks}[kind]
    rows = make(n_train + n_test, seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.txt").write_text("".join(r + "\n" for r in rows[:n_train]))
    (directory / "test.txt").write_text("".join(r + "\n" for r in rows[n_train:]))
    return directory


def write_config(path: Path, data: Path, out_dir: Path) -> Path:
    """An autoencoder config on `data`/{train,test}.txt: a 1+1-layer d32 Transformer, no dropout; tests
    override the rest on the command line."""
    path.write_text(
        f"out_dir: {out_dir}\n"
        "data:\n"
        f"  train: {{format: text, path: {data}/train.txt}}\n"
        f"  valid: {{format: text, path: {data}/test.txt}}\n"
        "  monolingual: true\n"
        "  max_len: 20\n"
        "tokenizer: {vocab_size: 29, type: bpe}\n"
        "model:\n"
        "  encoder: {type: transformer, layers: 1, hidden: 32, heads: 2, ffn: 64, dropout: 0.0}\n"
        "  decoder: {type: transformer, layers: 1, hidden: 32, heads: 2, ffn: 64, dropout: 0.0}\n"
        "  max_positions: 64\n"
        "train: {max_tokens: 1024, label_smoothing: 0.0, lr: 0.005, warmup: 50, schedule: constant,\n"
        "        max_steps: 400, valid_every: 200, log_every: 100, device: cpu, threads: 1}\n"
        "search: {beam: 1}\n")
    return path


def child_env() -> dict:
    """One intra-op thread per child: the trainings run side by side on the 2-core CI machine."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def seqed(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m seqed ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "seqed", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(), **kwargs)


def train_all(jobs: dict[str, list], log_dir: Path, *, parallel: int = 2, timeout: float = 300) -> dict[str, str]:
    """Run `seqed train ARGS --no-progress` for every job, `parallel` at a time.

    Args:
        jobs: name -> arguments after `train` (config file and overrides).
        log_dir: where each job's stderr goes (`NAME.stderr`).

    Returns:
        name -> "" when the run succeeded, else the tail of its stderr (tests report it).
    """
    pending, running, results = list(jobs.items()), {}, {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            name, args = pending.pop(0)
            with open(log_dir / f"{name}.stderr", "w") as err:
                running[name] = subprocess.Popen(
                    [sys.executable, "-m", "seqed", "train", *map(str, args), "--no-progress"],
                    stdout=subprocess.DEVNULL, stderr=err, env=child_env())
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                err = (log_dir / f"{name}.stderr").read_text()
                results[name] = "" if proc.returncode == 0 else f"seqed train failed ({name}):\n{err[-3000:]}"
                del running[name]
        if time.monotonic() > deadline:
            for proc in running.values():
                proc.kill()
            raise TimeoutError(f"trainings {sorted(running)} still running after {timeout} s")
        time.sleep(0.05)
    return results
