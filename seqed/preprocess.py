"""Corpus to binarized directory: stream the training corpora, tokenize once on every core, filter, write.

`preprocess(cfg)` trains (on a shuffled sample) or loads the SentencePiece model, then reads the corpora
line by line in chunks, encodes the chunks in worker processes (each loads the model once), applies the
filters of `data` (max_len / min_len / max_ratio as in `seqed.data.filtering`, then exact duplicates
with `data.dedup`) and appends the kept pairs to a `BinarizedWriter` (`seqed.data.binarized`). Memory
stays constant in the corpus size except for duplicate removal, which keeps 8 bytes per distinct pair.

Where the directory is: `data.binarized` (a path), or with `auto` a directory under `$SEQED_CACHE`
(default `~/.cache/seqed`) named by a hash of everything that decides its content, so runs that differ
only in the model or training settings share it. A directory is stale when that recipe or an input
file changed; `preprocess` then rebuilds it, `open_binarized` refuses it with a message.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from seqed.config import Config, ConfigError, CorpusConfig, expand_path
from seqed.data.binarized import (BinarizedData, BinarizedError, BinarizedWriter, changed_inputs, file_fingerprint,
                                  id_dtype, read_manifest, remove_binarized)
from seqed.data.filtering import FilterReport, filter_pairs
from seqed.runtime import Dist, broadcast_object
from seqed.tokenizer import Tokenizer

CHUNK = 8192            # pairs per encoding job
RECIPE_VERSION = 1


class PreprocessError(ValueError):
    """Bad input or a failed write during preprocessing; the message says what and where."""


# ---------------------------------------------------------------------------------------------
# where, and is it fresh


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


def input_files(spec: CorpusConfig, monolingual: bool) -> list[str]:
    """The local files a corpus reads (hub datasets have none to fingerprint)."""
    if spec.format == "text":
        files = [spec.path or spec.src] if (monolingual or (spec.path and not spec.tgt)) else [spec.src, spec.tgt]
    elif spec.format == "tsv":
        files = [spec.path]
    else:
        files = [spec.data_files] if spec.data_files and "*" not in spec.data_files else []
    return [expand_path(f) for f in files if f]


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
    path = Path(expand_path(str(path)))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def open_binarized(cfg: Config, log: Callable[[str], None] = print, *, tokenizer: Optional[Tokenizer] = None,
                   build: bool = True, workers: int = 0) -> BinarizedData:
    """The training data of `cfg` from its binarized directory, preprocessing first when there is none.

    A stale directory is an error here (a run must not change data under its feet): `seqed preprocess`
    rebuilds it.

    Args:
        cfg: the run's config (`data.binarized` set).
        log: progress messages.
        tokenizer: the run's tokenizer (a resumed checkpoint's); it must be the directory's.
        build: preprocess when the directory does not exist (False: error).
        workers: encoding processes when building (0: every core).
    """
    directory = binarized_dir(cfg)
    if not (directory / "manifest.json").is_file():
        if not build:
            raise BinarizedError(f"no preprocessed data at {directory}: run `seqed preprocess CONFIG` (same "
                                 f"overrides) first; with several nodes, on a filesystem they share or on each node")
        preprocess(cfg, log, workers=workers, tokenizer=tokenizer)
    reasons = stale_reasons(directory, cfg)
    if reasons:
        raise BinarizedError(f"{directory} is stale: {'; '.join(reasons)}. Run `seqed preprocess CONFIG` (same "
                             f"overrides) to rebuild it, or point data.binarized elsewhere")
    weights = [c.weight for c in cfg.data.corpora]
    return BinarizedData(directory, weights=weights, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------
# reading: chunks of raw lines


def _open_lines(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}" + (" (it is a directory)" if os.path.isdir(path) else ""))
    return open(path, "rb")


def _count_rest(f) -> int:
    """Lines left in a binary file (a last line without "\\n" counts)."""
    n, last = 0, b"\n"
    for block in iter(lambda: f.read(1 << 20), b""):
        n += block.count(b"\n")
        last = block[-1:]
    return n + (last != b"\n")


def _text_chunks(spec: CorpusConfig, monolingual: bool) -> Iterator[tuple]:
    """(kind, src lines, tgt lines or None, first line number, names) per chunk, lines as raw bytes."""
    files = input_files(spec, monolingual)
    limit = spec.limit if spec.limit and spec.limit > 0 else None
    kind = "tsv" if spec.format == "tsv" else "text"
    handles = [_open_lines(f) for f in files]
    try:
        lines = itertools.zip_longest(*handles)
        start, n = 1, 0
        while True:
            chunk = list(itertools.islice(lines, CHUNK if limit is None else min(CHUNK, limit - n)))
            if not chunk:
                break
            if start == 1:  # drop a UTF-8 byte order mark, as the in-memory reader does
                chunk[0] = tuple(x[3:] if x and x.startswith(b"\xef\xbb\xbf") else x for x in chunk[0])
            short = next((i for i, pair in enumerate(chunk) if None in pair), None)
            if short is not None:  # one file ended before the other
                ended = chunk[short].index(None)
                longer = 1 - ended
                counts = [0, 0]
                counts[ended] = start + short - 1
                counts[longer] = start + short - 1 + (len(chunk) - short) + _count_rest(handles[longer])
                raise PreprocessError(f"parallel files are not aligned: {files[0]} has {counts[0]} lines but "
                                      f"{files[1]} has {counts[1]}: check that they are the two sides of the "
                                      f"same corpus")
            cols = list(zip(*chunk))
            yield kind, list(cols[0]), list(cols[1]) if len(cols) > 1 else None, start, files
            start += len(chunk)
            n += len(chunk)
            if limit is not None and n >= limit:
                break
        if start == 1:
            raise PreprocessError(f"{files[0]} is empty: expected one sentence per line")
    finally:
        for h in handles:
            h.close()


def _hf_chunks(spec: CorpusConfig, src_lang: str, tgt_lang: str, monolingual: bool) -> Iterator[tuple]:
    """Chunks of (str) pairs from a `datasets` source, streamed."""
    import datasets  # lazy: only hf corpora need it

    files = expand_path(spec.data_files) if spec.data_files else None
    if spec.name in ("json", "csv", "parquet", "text"):
        ds = datasets.load_dataset(spec.name, data_files=files, split=spec.split, streaming=True)
    else:
        ds = datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True, data_files=files)
    src_key = spec.src_field or ("text" if spec.name == "text" else src_lang)
    tgt_key = src_key if monolingual else (spec.tgt_field or ("text" if spec.name == "text" else tgt_lang))
    rows = ds if not spec.limit else ds.take(spec.limit)
    where = f"{spec.name}" + (f"/{spec.config}" if spec.config else "") + f" split {spec.split!r}"
    start = 1
    it = iter(rows)
    while True:
        chunk = list(itertools.islice(it, CHUNK))
        if not chunk:
            break
        src, tgt = [], []
        for n, row in enumerate(chunk):
            nested = "translation" in row and spec.src_field is None and spec.tgt_field is None
            pair = row["translation"] if nested else row
            if src_key not in pair or tgt_key not in pair:
                raise PreprocessError(f"{where} row {start + n - 1}: fields {sorted(pair)}, not {src_key!r} and "
                                      f"{tgt_key!r}: set src_lang/tgt_lang or src_field/tgt_field")
            src.append("" if pair[src_key] is None else str(pair[src_key]))
            tgt.append("" if pair[tgt_key] is None else str(pair[tgt_key]))
        yield "str", src, None if monolingual else tgt, start, [where]
        start += len(chunk)


def corpus_chunks(spec: CorpusConfig, cfg: Config) -> Iterator[tuple]:
    d = cfg.data
    if spec.format in ("text", "tsv"):
        if spec.format == "tsv" and not spec.path:
            raise ConfigError("a tsv corpus needs `path`")
        if spec.format == "text" and not input_files(spec, d.monolingual):
            raise ConfigError("a text corpus needs `src` and `tgt` files (or `path` for monolingual data)")
        if spec.format == "text" and not d.monolingual and not spec.path and not (spec.src and spec.tgt):
            raise ConfigError("a parallel text corpus needs both `src` and `tgt` paths")
        return _text_chunks(spec, d.monolingual)
    if not spec.name:
        raise ConfigError("an hf corpus needs `name` (a hub dataset or json/csv/parquet/text)")
    return _hf_chunks(spec, d.src_lang, d.tgt_lang, d.monolingual)


# ---------------------------------------------------------------------------------------------
# decoding and encoding (worker processes)


def _decode_lines(lines: list[bytes], name: str, start: int) -> list[str]:
    out = []
    for i, raw in enumerate(lines):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise PreprocessError(f"{name}:{start + i}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                                  f"{err.start + 1}); convert the file first, e.g. `iconv -f latin1 -t utf-8 "
                                  f"{name} > {Path(name).name}.utf8`") from None
    return out


def sentence_pairs(job: tuple, src_column: int = 0, tgt_column: int = 1,
                   monolingual: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(sources, targets, where) of one chunk, `where` naming the file each side's lines come from."""
    kind, a, b, start, names = job
    if kind == "str":
        return a, (a if b is None else b), [names[0], names[0]]
    if kind == "tsv":
        rows = [line.split("\t") for line in _decode_lines(a, names[0], start)]
        need = src_column + 1 if monolingual else max(src_column, tgt_column) + 1
        for i, row in enumerate(rows):
            if len(row) < need:
                raise PreprocessError(f"{names[0]}:{start + i}: {len(row)} tab-separated field(s), need at least "
                                      f"{need} (src_column={src_column}, tgt_column={tgt_column}): fix or remove the "
                                      f"line, or check the columns")
        src = [r[src_column] for r in rows]
        return src, (src if monolingual else [r[tgt_column] for r in rows]), [names[0], names[0]]
    src = _decode_lines(a, names[0], start)
    if b is None:
        return src, src, [names[0], names[0]]
    return src, _decode_lines(b, names[1], start), names


_WORKER: dict = {}


def _pool_context():
    """Workers start from a fork server that has imported this module once: forking the training
    process itself (torch's threads, a progress bar's monitor thread) can copy a held lock and hang."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["seqed.preprocess"])
    return ctx


def _init_worker(src_proto: bytes, tgt_proto: Optional[bytes]) -> None:
    import sentencepiece as spm

    _WORKER["src"] = spm.SentencePieceProcessor(model_proto=src_proto)
    _WORKER["tgt"] = _WORKER["src"] if tgt_proto is None else spm.SentencePieceProcessor(model_proto=tgt_proto)


def _flat(ids: list[list[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
    return flat, lens


def _encode_job(args: tuple) -> dict:
    """Decode, check, encode and hash one chunk. Returns flat ids, lengths and 8-byte pair hashes."""
    job, opts = args
    src, tgt, names = sentence_pairs(job, opts["src_column"], opts["tgt_column"], opts["monolingual"])
    start = job[3]
    if opts["strict"]:
        for side, texts, name in (("source", src, names[0]), ("target", tgt, names[1])):
            for i, s in enumerate(texts):
                if not s.strip():
                    raise PreprocessError(f"{name}:{start + i}: empty {side} sentence while data.strict is on: "
                                          f"remove it, or set data.strict=false to skip and count such pairs")
    dtype = np.dtype(opts["dtype"])
    out = {"n": len(src)}
    out["src_ids"], out["src_lens"] = _flat(_WORKER["src"].encode(src), dtype)
    if not opts["monolingual"]:
        out["tgt_ids"], out["tgt_lens"] = _flat(_WORKER["tgt"].encode(tgt), dtype)
    if opts["dedup"]:
        keys = (f"{s}\0{t}".encode() for s, t in zip(src, tgt))
        out["hashes"] = np.fromiter((int.from_bytes(hashlib.blake2b(k, digest_size=8).digest(), "little")
                                     for k in keys), dtype=np.uint64, count=len(src))
    return out


class _SeenHashes:
    """A set of uint64 hashes as a few sorted arrays whose sizes halve (O(N log N) inserts, 8 bytes each)."""

    def __init__(self):
        self.levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(a.size for a in self.levels)

    def add_new(self, hashes: np.ndarray) -> np.ndarray:
        """(k,) bool: True where a hash is neither seen before nor earlier in `hashes`; records them."""
        uniq, first = np.unique(hashes, return_index=True)
        fresh = np.ones(uniq.size, dtype=bool)
        for level in self.levels:
            pos = np.minimum(np.searchsorted(level, uniq), level.size - 1)
            fresh &= level[pos] != uniq
        keep = np.zeros(hashes.size, dtype=bool)
        keep[first[fresh]] = True
        self.levels.append(uniq[fresh])
        while len(self.levels) > 1 and self.levels[-2].size <= 2 * self.levels[-1].size:
            top = self.levels.pop()
            self.levels[-1] = np.sort(np.concatenate([self.levels[-1], top]))
        return keep


# ---------------------------------------------------------------------------------------------
# the tokenizer


def _reservoir(cfg: Config, size: int, seed: int) -> tuple[list[str], list[str]]:
    """A uniform sample of `size` training pairs (reservoir sampling over one streaming pass)."""
    rng = np.random.default_rng(seed)
    src: list[str] = []
    tgt: list[str] = []
    seen = 0
    for spec in cfg.data.corpora:
        for job in corpus_chunks(spec, cfg):
            s, t, _ = sentence_pairs(job, spec.src_column, spec.tgt_column, cfg.data.monolingual)
            for i in range(len(s)):
                if len(src) < size:
                    src.append(s[i])
                    tgt.append(t[i])
                else:
                    r = int(rng.integers(0, seen + i + 1))
                    if r < size:
                        src[r], tgt[r] = s[i], t[i]
            seen += len(s)
    return src, tgt


def build_tokenizer(cfg: Config, log: Callable[[str], None]) -> Tokenizer:
    """`tokenizer.model` when given, else SentencePiece trained on a shuffled sample of the training corpora."""
    t = cfg.tokenizer
    if t.model:
        tok = Tokenizer.from_path(expand_path(t.model))
        log(f"tokenizer: reusing {t.model} ({tok})")
        return tok
    size = t.input_sentence_size
    tick = time.perf_counter()
    src, tgt = _reservoir(cfg, size, cfg.train.seed)
    mono = cfg.data.monolingual
    log(f"training a {t.type} SentencePiece model, vocab {t.vocab_size}, on a sample of {len(src):,} "
        f"{'sentences' if mono else 'pairs'} (tokenizer.input_sentence_size={size:,}), "
        f"read in {time.perf_counter() - tick:.1f}s")
    return Tokenizer.train([x for x in src if x], None if mono else [x for x in tgt if x],
                           vocab_size=t.vocab_size, model_type=t.type, joint=t.joint,
                           character_coverage=t.character_coverage, seed=cfg.train.seed,
                           input_sentence_size=size, byte_fallback=t.byte_fallback)


def build_for_ranks(cfg: Config, dist_info: Dist, log: Callable[[str], None] = print, *,
                    tokenizer: Optional[Tokenizer] = None, progress: bool = True) -> None:
    """Under torchrun: rank 0 builds the missing binarized directory while the other ranks wait for it.

    The wait is one broadcast, the first collective of the run, bounded by `train.dist_timeout_minutes`;
    rank 0's error reaches every rank. The other ranks then open the directory and never encode
    anything themselves (no-op in one process: `open_binarized` builds it there).
    """
    if dist_info.world == 1:
        return
    failure = None
    if dist_info.main and not (binarized_dir(cfg) / "manifest.json").is_file():
        try:
            preprocess(cfg, log, tokenizer=tokenizer, progress=progress)
        except (ValueError, OSError) as err:
            failure = err
    message = broadcast_object(None if failure is None else str(failure), dist_info)
    if failure is not None:
        raise failure
    if message is not None:
        raise PreprocessError(f"rank 0 could not preprocess the training data: {message}")


# ---------------------------------------------------------------------------------------------
# the whole step


def preprocess(cfg: Config, log: Callable[[str], None] = print, *, workers: int = 0, progress: bool = True,
               tokenizer: Optional[Tokenizer] = None) -> Path:
    """Build (or rebuild, when stale) the binarized directory of `cfg`; returns it.

    Args:
        cfg: a validated config with `data.binarized` set.
        log: progress messages.
        workers: encoding processes (0: one per core).
        progress: show a tqdm bar (pairs/s).
        tokenizer: use this tokenizer (e.g. a resumed run's) instead of `build_tokenizer`.

    Raises:
        PreprocessError: unaligned files, bad UTF-8, a failed write (the partial output is removed).
    """
    directory = binarized_dir(cfg)
    if (directory / "manifest.json").is_file():
        reasons = stale_reasons(directory, cfg)
        if not reasons:
            log(f"{directory} is up to date")
            return directory
        log(f"{directory} is stale ({'; '.join(reasons)}): rebuilding")
    remove_binarized(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    d = cfg.data
    tick = time.perf_counter()
    inputs = [file_fingerprint(f) for spec in d.corpora for f in input_files(spec, d.monolingual)]
    tok = tokenizer or build_tokenizer(cfg, log)
    dtype = id_dtype(max(tok.src_vocab_size, tok.tgt_vocab_size))
    protos = tok.to_dict()
    workers = workers or os.cpu_count() or 1
    seen = _SeenHashes() if d.dedup else None
    total = FilterReport(0, 0, 0, 0, 0, 0)
    duplicates = 0
    corpora = []
    bar = tqdm(unit="pair", unit_scale=True, desc="encode", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    try:
        with _pool_context().Pool(workers, _init_worker,
                                         (protos["src_model"], None if tok.joint else protos["tgt_model"])) as pool, \
                BinarizedWriter(directory, tok, monolingual=d.monolingual) as writer:
            for spec in d.corpora:
                opts = dict(src_column=spec.src_column, tgt_column=spec.tgt_column, monolingual=d.monolingual,
                            strict=d.strict, dtype=dtype.name, dedup=d.dedup)
                before, report, dup = writer.n, FilterReport(0, 0, 0, 0, 0, 0), 0
                pending: deque = deque()
                chunks = corpus_chunks(spec, cfg)
                while True:  # at most 2 chunks per worker in flight: constant memory
                    while len(pending) < 2 * workers:
                        job = next(chunks, None)
                        if job is None:
                            break
                        pending.append(pool.apply_async(_encode_job, ((job, opts),)))
                    if not pending:
                        break
                    out = pending.popleft().get()
                    r, dropped = _write_chunk(writer, out, d, seen)
                    report = _add_reports(report, r)
                    dup += dropped
                    bar.update(out["n"])
                report.kept -= dup
                corpora.append({"spec": asdict(spec), "pairs": writer.n - before, "report": asdict(report),
                                "duplicates": dup})
                total = _add_reports(total, report)
                duplicates += dup
            bar.close()
            seconds = time.perf_counter() - tick
            manifest = {"recipe": recipe(cfg), "inputs": inputs, "corpora": corpora,
                        "report": dict(asdict(total), duplicates=duplicates), "seconds": round(seconds, 2),
                        "tokenizer_model": file_or_dir_hash(cfg.tokenizer.model) if cfg.tokenizer.model else None}
            if writer.n == 0:
                raise PreprocessError(f"no training pair survived filtering ({total}): check data.max_len/max_ratio")
            writer.finish(manifest)
    except OSError as err:
        if isinstance(err, FileNotFoundError) and not str(err).startswith("["):
            raise
        raise PreprocessError(f"cannot write {directory}: {err.strerror or err}. The partial output was removed: "
                              f"free disk space (the ids need about 2 bytes per piece, 4 with a vocabulary over "
                              f"65,536) or point data.binarized at another disk, then run again") from None
    finally:
        bar.close()
    log(f"preprocessed {total.total:,} pairs into {directory} in {seconds:.1f}s "
        f"({total.total / max(seconds, 1e-9):,.0f} pairs/s): {total}" + (f", {duplicates:,} duplicates" if d.dedup
                                                                         else ""))
    return directory


def _add_reports(a: FilterReport, b: FilterReport) -> FilterReport:
    return FilterReport(*(getattr(a, k) + getattr(b, k) for k in ("total", "kept", "empty", "too_long",
                                                                  "bad_ratio", "too_short")))


def _write_chunk(writer: BinarizedWriter, out: dict, d, seen: Optional[_SeenHashes]) -> tuple[FilterReport, int]:
    """Filter one encoded chunk and append the kept pairs; returns (filter report, duplicates dropped)."""
    src_lens = out["src_lens"]
    tgt_lens = src_lens if d.monolingual else out["tgt_lens"]
    keep, report = filter_pairs(src_lens, tgt_lens, max_len=d.max_len, min_len=d.min_len, max_ratio=d.max_ratio)
    mask = np.zeros(out["n"], dtype=bool)
    mask[keep] = True
    dropped = 0
    if seen is not None:
        fresh = np.zeros_like(mask)
        fresh[mask] = seen.add_new(out["hashes"][mask])
        dropped = int(mask.sum() - fresh.sum())
        mask = fresh
    src = out["src_ids"][np.repeat(mask, src_lens)]
    if d.monolingual:
        writer.append(src, src_lens[mask])
    else:
        writer.append(src, src_lens[mask], out["tgt_ids"][np.repeat(mask, tgt_lens)], tgt_lens[mask])
    return report, dropped
