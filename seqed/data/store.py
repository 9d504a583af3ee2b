"""The binarized corpus: token ids in one flat array on disk, read back by memory map; its in-memory twin; and
whether a directory is fresh for a config.

A binarized directory holds

    ids.bin              every sentence's piece ids, one after the other: uint16, or uint32 when a
                         vocabulary has more than 65,535 pieces (no BOS/EOS)
    src.offsets.npy      (N,) int64: where sentence i's source starts in ids.bin
    src.lengths.npy      (N,) uint16: its length as batched, i.e. pieces + 1 (the EOS)
    tgt.offsets.npy      (N,) int64, tgt.lengths.npy (N,) uint16: the same for the target, whose
                         batched length is pieces + 1 (BOS + target = target + EOS)
    tokenizer/           the SentencePiece model(s) that produced the ids (`Tokenizer.save`)
    manifest.json        format, dtype, counts per corpus, the inputs' fingerprints, the tokenizer's
                         hash, the filters and their report; written last

`BinarizedWriter` fills `<dir>.partial` and renames it to `<dir>` only when complete, so a reader never
sees a half-written directory; `BinarizedData` maps the files with `np.load(mmap_mode="r")` and builds
batches with array operations, keeping no per-sentence Python object. Every process (every DDP rank)
maps the same files, so the operating system's page cache holds one copy.

Corpus weights are applied when reading, not stored: a corpus of n pairs with weight w contributes
round(w * n) examples to an epoch: floor(w) full copies plus an evenly spaced sample of the rest
(w = 0.5 takes every other pair). So weights change without preprocessing again.

Where the directory is: `data.binarized` (a path), or with `auto` a directory under `$SEQED_CACHE`
(default `~/.cache/seqed`) named by a hash of everything that decides its content (`recipe`), so runs
that differ only in the model or training settings share it. A directory is stale when that recipe or an
input file changed (`stale_reasons`).

`MemoryStore` takes the same appends as `BinarizedWriter` and keeps them as Python lists: the in-memory
training data are the same chunks, filtered the same way, written to memory instead of disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from seqed.config import Config, ConfigError, expand_path
from seqed.data.batching import Batch, ParallelData, _round_up
from seqed.data.corpus import input_files
from seqed.errors import SeqedError
from seqed.tokenizer import Tokenizer
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID

FORMAT = "seqed.binarized/1"
MANIFEST = "manifest.json"
FULL_HASH_BYTES = 64 << 20   # files up to this size are hashed whole; bigger ones by size, mtime, head and tail
EDGE_BYTES = 1 << 20
_COPY_BLOCK = 1 << 24        # elements per block when converting raw arrays to .npy
RECIPE_VERSION = 1


class BinarizedError(SeqedError, ValueError):
    """A binarized directory that is missing, incomplete, stale or does not match; the message says what to do."""


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the model proto(s): two tokenizers with the same hash encode identically."""
    d = tokenizer.to_dict()
    h = hashlib.sha256(d["src_model"])
    if not d["joint"]:
        h.update(b"\0")
        h.update(d["tgt_model"])
    return h.hexdigest()


def file_fingerprint(path) -> dict:
    """Size and sha256 of a file; a file over 64 MiB is fingerprinted cheaply by its size, mtime and the
    sha256 of its first and last MiB (reading 36M lines to check freshness would take minutes)."""
    path = Path(path)
    st = path.stat()
    fp = {"path": str(path.resolve()), "size": st.st_size}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            fp["sha256"] = h.hexdigest()
        else:
            h.update(f.read(EDGE_BYTES))
            f.seek(st.st_size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
            fp.update(mtime_ns=st.st_mtime_ns, edges_sha256=h.hexdigest())
    return fp


def changed_inputs(recorded: list[dict]) -> list[str]:
    """Human-readable differences between recorded fingerprints and the files now on disk."""
    out = []
    for fp in recorded:
        path = Path(fp["path"])
        if not path.is_file():
            out.append(f"{path} no longer exists")
            continue
        now = file_fingerprint(path)
        if now["size"] != fp["size"]:
            out.append(f"{path} is now {now['size']:,} bytes, was {fp['size']:,}")
        elif any(now.get(k) != fp.get(k) for k in ("sha256", "mtime_ns", "edges_sha256")):
            out.append(f"{path} changed since it was preprocessed (content or modification time)")
    return out


def recipe(cfg: Config) -> dict:
    """Everything that decides a binarized directory's content (corpus weights do not: they apply when reading)."""
    d, t = cfg.data, cfg.tokenizer
    corpora = [{k: v for k, v in asdict(c).items() if k != "weight"} for c in d.corpora]
    tok = asdict(t)
    if t.model:  # a given model: its bytes matter, not the training options
        tok = {"model": t.model}
    else:
        tok["seed"] = cfg.train.seed
    return {"version": RECIPE_VERSION, "corpora": corpora, "src_lang": d.src_lang, "tgt_lang": d.tgt_lang,
            "monolingual": d.monolingual, "strict": d.strict,
            "filters": {"max_len": d.max_len, "min_len": d.min_len, "max_ratio": d.max_ratio, "dedup": d.dedup},
            "tokenizer": tok}


def binarized_dir(cfg: Config) -> Path:
    """The directory `data.binarized` names (`auto`: under $SEQED_CACHE, keyed by the recipe)."""
    b = cfg.data.binarized
    if not b:
        raise ConfigError("data.binarized is not set: give a directory, or auto")
    if b != "auto":
        return Path(expand_path(b))
    key = hashlib.sha256(json.dumps(recipe(cfg), sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(expand_path(os.environ.get("SEQED_CACHE") or "~/.cache/seqed"))
    return cache / "binarized" / key


def input_fingerprints(cfg: Config) -> list[dict]:
    """The fingerprints of every local file the training corpora read."""
    return [file_fingerprint(f) for spec in cfg.data.corpora for f in input_files(spec, cfg.data.monolingual)]


def stale_reasons(directory: Path, cfg: Config) -> list[str]:
    """Why `directory` does not hold `cfg`'s training data now (empty when it does)."""
    m = read_manifest(directory)
    reasons = []
    want = recipe(cfg)
    for key in want:
        if m.get("recipe", {}).get(key) != want[key]:
            reasons.append(f"{key} differs: {m.get('recipe', {}).get(key)!r} when preprocessed, {want[key]!r} now")
    reasons += changed_inputs(m.get("inputs", []))
    if cfg.tokenizer.model and m.get("tokenizer_model") != file_or_dir_hash(cfg.tokenizer.model):
        reasons.append(f"tokenizer.model {cfg.tokenizer.model} changed")
    return reasons


def file_or_dir_hash(path) -> str:
    """sha256 over a file, or over the names and bytes of every file under a directory."""
    path = Path(expand_path(str(path)))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# writing


def _write_npy(raw: Path, out: Path, dtype: np.dtype) -> None:
    """Turn a raw array file into .npy (header + data), copying in blocks: constant memory."""
    n = raw.stat().st_size // dtype.itemsize
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=(n,))
    src = np.memmap(raw, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    for i in range(0, n, _COPY_BLOCK):
        arr[i: i + _COPY_BLOCK] = src[i: i + _COPY_BLOCK]
    arr.flush()
    del arr, src
    raw.unlink()


class BinarizedWriter:
    """Appends encoded pairs, chunk by chunk, into `<directory>.partial`; `finish` makes it `<directory>`.

    Used as a context manager: leaving the block with an exception (Ctrl-C, a full disk) removes the
    partial directory, so the next run starts clean. A `.partial` left by a killed process is removed by
    the next writer.
    """

    def __init__(self, directory, tokenizer: Tokenizer, *, monolingual: bool = False):
        """
        Args:
            directory: the final directory; it must not exist yet (`remove_binarized` a stale one first).
            tokenizer: the tokenizer the ids come from (saved into the directory).
            monolingual: target = source; the target arrays then point at the source ids (stored once).
        """
        self.directory = Path(directory)
        self.tmp = self.directory.with_name(self.directory.name + ".partial")
        self.tokenizer = tokenizer
        self.monolingual = monolingual
        self.dtype = id_dtype(max(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size))
        self.n = 0
        self.n_ids = 0
        self._files: dict = {}

    def __enter__(self) -> "BinarizedWriter":
        if self.directory.exists():
            raise BinarizedError(f"{self.directory} already exists: remove it first (seqed preprocess does)")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)  # left by an interrupted run
        self.tmp.mkdir(parents=True)
        for name in ("ids.bin", "src.offsets", "src.lengths", "tgt.offsets", "tgt.lengths"):
            self._files[name] = open(self.tmp / name, "wb")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files.values():
            f.close()
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def append(self, src_ids: np.ndarray, src_lens: np.ndarray, tgt_ids: Optional[np.ndarray] = None,
               tgt_lens: Optional[np.ndarray] = None) -> None:
        """Append a chunk of k pairs.

        Args:
            src_ids: (sum of src_lens,) the sources' piece ids, concatenated.
            src_lens: (k,) pieces per source (no EOS).
            tgt_ids, tgt_lens: the same for the targets; None when monolingual.
        """
        src_lens = np.asarray(src_lens, dtype=np.int64)
        sides = [(src_ids, src_lens, "src")]
        if not self.monolingual:
            sides.append((tgt_ids, np.asarray(tgt_lens, dtype=np.int64), "tgt"))
        for ids, lens, side in sides:
            if int(lens.sum()) != len(ids):
                raise ValueError(f"BinarizedWriter.append: {side} lengths sum to {int(lens.sum())} but "
                                 f"{len(ids)} ids were given")
            if lens.size and int(lens.max()) >= 1 << 16:
                raise ValueError(f"BinarizedWriter.append: a {side} sentence of {int(lens.max())} pieces; "
                                 f"lengths are stored as uint16: filter with data.max_len")
            offsets = self.n_ids + np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)  # (k,)
            self._files["ids.bin"].write(np.asarray(ids, dtype=self.dtype).tobytes())
            self._files[f"{side}.offsets"].write(offsets.tobytes())
            self._files[f"{side}.lengths"].write((lens + 1).astype(np.uint16).tobytes())  # + EOS (or BOS)
            self.n_ids += len(ids)
        self.n += len(src_lens)

    def finish(self, manifest: dict) -> Path:
        """Write the .npy files, the tokenizer and the manifest, then rename into place; returns the directory."""
        for f in self._files.values():
            f.close()
        for side in ("src",) if self.monolingual else ("src", "tgt"):
            _write_npy(self.tmp / f"{side}.offsets", self.tmp / f"{side}.offsets.npy", np.dtype(np.int64))
            _write_npy(self.tmp / f"{side}.lengths", self.tmp / f"{side}.lengths.npy", np.dtype(np.uint16))
        if self.monolingual:
            for name in ("tgt.offsets", "tgt.lengths"):
                (self.tmp / name).unlink()
        self.tokenizer.save(self.tmp / "tokenizer")
        manifest = dict(manifest, format=FORMAT, complete=True, pairs=self.n, ids=self.n_ids,
                        dtype=self.dtype.name, monolingual=self.monolingual,
                        tokenizer_sha256=tokenizer_hash(self.tokenizer))
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(self.tmp, self.directory)
        return self.directory


class MemoryStore:
    """`BinarizedWriter`'s appends kept in memory, one id list per sentence; `data` gives the `ParallelData`."""

    def __init__(self, *, monolingual: bool = False):
        self.monolingual = monolingual
        self.src: list[list[int]] = []
        self.tgt: list[list[int]] = []
        self.n = 0

    @staticmethod
    def _split(ids: np.ndarray, lens: np.ndarray) -> list[list[int]]:
        flat = np.asarray(ids).tolist()
        ends = np.cumsum(lens).tolist()
        return [flat[e - n: e] for e, n in zip(ends, np.asarray(lens).tolist())]

    def append(self, src_ids: np.ndarray, src_lens: np.ndarray, tgt_ids: Optional[np.ndarray] = None,
               tgt_lens: Optional[np.ndarray] = None) -> None:
        """Append a chunk of k pairs, given as for `BinarizedWriter.append`."""
        src = self._split(src_ids, src_lens)
        self.src += src
        self.tgt += src if self.monolingual else self._split(tgt_ids, tgt_lens)
        self.n += len(src)

    def data(self, counts: Sequence[int], weights: Sequence[float]) -> ParallelData:
        """The stored pairs in epoch order: corpus c (`counts[c]` pairs, in order) weighted by `weights[c]`."""
        if all(w == 1 for w in weights):
            return ParallelData(self.src, self.tgt)
        sizes = epoch_sizes(counts, weights)
        order = stored_positions(np.arange(int(sizes.sum())), counts, sizes).tolist()
        return ParallelData([self.src[i] for i in order], [self.tgt[i] for i in order])


def remove_binarized(directory) -> None:
    """Delete a binarized directory (and a partial one beside it)."""
    directory = Path(directory)
    for p in (directory, directory.with_name(directory.name + ".partial")):
        if p.exists():
            shutil.rmtree(p)


# ---------------------------------------------------------------------------------------------
# corpus weights


def epoch_sizes(counts: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """(C,) examples each corpus contributes to an epoch: round(weight * pairs)."""
    return np.array([int(round(float(w) * int(c))) for w, c in zip(weights, counts)], dtype=np.int64)


def stored_positions(v: np.ndarray, counts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """(k,) stored pair positions of epoch positions `v` (k,).

    Corpus c holds stored pairs [start_c, start_c + counts[c]) and epoch positions
    [vstart_c, vstart_c + sizes[c]): its first floor(sizes / counts) * counts positions are whole copies,
    the rest an evenly spaced sample of the corpus.
    """
    counts = np.asarray(counts, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]  # (C,)
    vstarts = np.concatenate([[0], np.cumsum(sizes)])  # (C + 1,)
    c = np.searchsorted(vstarts, v, side="right") - 1  # (k,) corpus of each position
    k = v - vstarts[c]  # (k,) position within the corpus' share
    n = np.maximum(counts[c], 1)  # (k,)
    full = (sizes[c] // n) * n  # (k,) positions covered by whole copies
    rest = np.maximum(sizes[c] - full, 1)
    local = np.where(k < full, k % n, (k - full) * n // rest)  # (k,)
    return starts[c] + local


# ---------------------------------------------------------------------------------------------
# reading


def read_manifest(directory) -> dict:
    """The manifest of a complete binarized directory; BinarizedError otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        partial = directory.with_name(directory.name + ".partial")
        hint = f" ({partial} is an interrupted preprocessing: run it again)" if partial.exists() else ""
        raise BinarizedError(f"{directory} is not a binarized corpus (no {MANIFEST}){hint}: run `seqed preprocess "
                             f"CONFIG` first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise BinarizedError(f"{path}: format {manifest.get('format')!r}, complete={manifest.get('complete')}; "
                             f"expected a complete {FORMAT}: run `seqed preprocess CONFIG` again")
    return manifest


class BinarizedData:
    """A binarized corpus as the trainer iterates it: `lengths()` and `batch(indices)`, like `ParallelData`.

    Example indices are positions in the weighted epoch (see the module docstring): with all weights 1
    they are the stored pairs' positions.
    """

    def __init__(self, directory, *, weights: Optional[Sequence[float]] = None,
                 tokenizer: Optional[Tokenizer] = None):
        """
        Args:
            directory: a complete binarized directory.
            weights: one per corpus of the manifest (None: all 1).
            tokenizer: when given, it must be the one that wrote the directory.
        """
        self.directory = Path(directory)
        self.manifest = m = read_manifest(self.directory)
        if tokenizer is not None and tokenizer_hash(tokenizer) != m["tokenizer_sha256"]:
            raise BinarizedError(f"{self.directory} was encoded with another tokenizer (sha256 "
                                 f"{m['tokenizer_sha256'][:12]}, this run's is {tokenizer_hash(tokenizer)[:12]}): "
                                 f"preprocess again with this tokenizer (tokenizer.model) or train with the "
                                 f"directory's own ({self.directory / 'tokenizer'})")

        def load(name):
            return np.load(self.directory / name, mmap_mode="r")

        self.ids = np.memmap(self.directory / "ids.bin", dtype=np.dtype(m["dtype"]), mode="r",
                             shape=(m["ids"],)) if m["ids"] else np.zeros(0, np.dtype(m["dtype"]))
        self.src_offsets, self._src_lens = load("src.offsets.npy"), load("src.lengths.npy")
        if m["monolingual"]:
            self.tgt_offsets, self._tgt_lens = self.src_offsets, self._src_lens
        else:
            self.tgt_offsets, self._tgt_lens = load("tgt.offsets.npy"), load("tgt.lengths.npy")
        counts = [c["pairs"] for c in m["corpora"]]
        weights = [1.0] * len(counts) if weights is None else [float(w) for w in weights]
        if len(weights) != len(counts):
            raise BinarizedError(f"{len(weights)} corpus weights for {self.directory}, which holds "
                                 f"{len(counts)} corpora: give one weight per data.train entry")
        if any(w < 0 for w in weights):
            raise BinarizedError(f"corpus weights must be >= 0, got {weights}")
        self.sizes = epoch_sizes(counts, weights)  # (C,)
        self.virtual_starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)  # (C + 1,)
        self.counts = np.array(counts, dtype=np.int64)
        self.identity = bool(np.array_equal(self.sizes, self.counts))
        if self.virtual_starts[-1] == 0:
            raise BinarizedError(f"{self.directory}: no example to train on (weights {weights}, pairs {counts})")
        self._lengths: Optional[tuple[np.ndarray, np.ndarray]] = None

    def __len__(self) -> int:
        return int(self.virtual_starts[-1])

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.directory / "tokenizer")

    def stored_index(self, indices) -> np.ndarray:
        """(k,) stored pair positions of epoch positions `indices` (weights applied)."""
        v = np.asarray(indices, dtype=np.int64).reshape(-1)  # (k,)
        return v if self.identity else stored_positions(v, self.counts, self.sizes)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) source lengths with EOS and (N,) target lengths with BOS, as batched (uint16).

        With all weights 1 these are the memory-mapped files themselves (no copy)."""
        if self.identity:
            return self._src_lens, self._tgt_lens
        if self._lengths is None:
            parts = ([], [])
            for start in range(0, len(self), 1 << 22):  # chunked: no (N,) int64 temporary
                idx = self.stored_index(np.arange(start, min(start + (1 << 22), len(self))))
                parts[0].append(self._src_lens[idx])
                parts[1].append(self._tgt_lens[idx])
            self._lengths = (np.concatenate(parts[0]), np.concatenate(parts[1]))
        return self._lengths

    def _gather(self, offsets: np.ndarray, lens: np.ndarray, width: int, shift: int) -> torch.Tensor:
        """(B, width) long: each row's ids from column `shift`, PAD elsewhere."""
        cols = np.arange(width - shift)  # (W,)
        mask = cols[None, :] < lens[:, None]  # (B, W)
        pos = np.where(mask, offsets[:, None] + cols[None, :], 0)  # (B, W) positions in ids.bin
        out = np.full((len(lens), width), PAD_ID, dtype=np.int64)  # (B, width)
        out[:, shift:] = np.where(mask, self.ids[pos] if self.ids.size else 0, PAD_ID)
        return torch.from_numpy(out)

    def batch(self, indices: Sequence[int], pad_to_multiple: int = 1) -> Batch:
        """The examples at `indices`, padded exactly as `ParallelData.batch` pads them."""
        if pad_to_multiple < 1:
            raise ValueError(f"batch: pad_to_multiple must be >= 1, got {pad_to_multiple}")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
        stored = self.stored_index(idx)  # (B,)
        s_len = self._src_lens[stored].astype(np.int64) - 1  # (B,) pieces
        t_len = self._tgt_lens[stored].astype(np.int64) - 1  # (B,)
        rows = torch.arange(len(idx))  # (B,)
        s_width = _round_up(int(s_len.max(initial=0)) + 1, pad_to_multiple)
        t_width = _round_up(int(t_len.max(initial=0)) + 1, pad_to_multiple)
        src = self._gather(self.src_offsets[stored], s_len, s_width, 0)  # (B, S)
        src[rows, torch.from_numpy(s_len)] = EOS_ID
        tgt_off = self.tgt_offsets[stored]
        tgt_out = self._gather(tgt_off, t_len, t_width, 0)  # (B, T): target, then EOS
        tgt_out[rows, torch.from_numpy(t_len)] = EOS_ID
        tgt_in = self._gather(tgt_off, t_len, t_width, 1)  # (B, T): BOS, then target
        tgt_in[:, 0] = BOS_ID
        return Batch(src=src, tgt_in=tgt_in, tgt_out=tgt_out, indices=torch.from_numpy(idx.copy()))
