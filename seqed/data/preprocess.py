"""Corpus to token ids: the one tokenizer trainer, and the encoding of the training corpora into a store.

`encode_corpora` reads every training corpus through `seqed.data.corpus` chunk by chunk, decodes and encodes
each chunk (in worker processes that load the SentencePiece model once, or in this process), applies the
filters of `data` (max_len / min_len / max_ratio, then exact duplicates with `data.dedup`) and appends the kept
pairs to a store: a `BinarizedWriter` (`preprocess`, memory-mapped training data) or a `MemoryStore` (the
in-memory training data). Both paths therefore hold the same pairs and ids. Memory stays constant in the
corpus size except for duplicate removal, which keeps 8 bytes per distinct pair.

`preprocess(cfg)` builds (or rebuilds, when stale) the binarized directory of `cfg`; `open_binarized` maps it.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np
from tqdm import tqdm

from seqed.config import Config, expand_path
from seqed.data.corpus import Chunk, DataError, corpus_chunks, decode_chunk
from seqed.data.filtering import FilterReport, SeenPairs, filter_pairs, pair_hashes
from seqed.data.store import (BinarizedData, BinarizedError, BinarizedWriter, MemoryStore, binarized_dir,
                              file_or_dir_hash, id_dtype, input_fingerprints, recipe, remove_binarized, stale_reasons)
from seqed.errors import SeqedError
from seqed.tokenizer import Tokenizer

Store = Union[BinarizedWriter, MemoryStore]


def _chunks(cfg: Config, streaming: bool = True) -> Iterator[tuple[int, Chunk]]:
    """(corpus index, chunk) over every training corpus, in order."""
    d = cfg.data
    for c, spec in enumerate(d.corpora):
        name = f"data.train[{c}]" if isinstance(d.train, list) else "data.train"
        for chunk in corpus_chunks(spec, src_lang=d.src_lang, tgt_lang=d.tgt_lang, monolingual=d.monolingual,
                                   name=name, streaming=streaming):
            yield c, chunk


# ---------------------------------------------------------------------------------------------
# the tokenizer


def _reservoir(cfg: Config, size: int, seed: int) -> tuple[list[str], list[str]]:
    """A uniform sample of `size` training pairs (reservoir sampling over one streaming pass); all of them, in
    order, when there are no more than `size`."""
    rng = np.random.default_rng(seed)
    src: list[str] = []
    tgt: list[str] = []
    seen = 0
    for c, chunk in _chunks(cfg):
        spec = cfg.data.corpora[c]
        s, t, _ = decode_chunk(chunk, spec.src_column, spec.tgt_column, cfg.data.monolingual)
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


def train_tokenizer(cfg: Config, log: Callable[[str], None] = print) -> Tokenizer:
    """The run's SentencePiece model: `tokenizer.model` when set, else trained on a uniform sample of at most
    `tokenizer.input_sentence_size` training pairs (all of `data.train` when it is smaller)."""
    t = cfg.tokenizer
    if t.model:
        tok = Tokenizer.from_path(expand_path(t.model))
        log(f"tokenizer: reusing {t.model} ({tok})")
        return tok
    size = t.input_sentence_size
    tick = time.perf_counter()
    src, tgt = _reservoir(cfg, size, cfg.train.seed)
    mono = cfg.data.monolingual
    log(f"training a {t.type} SentencePiece model, vocab {t.vocab_size}, {'joint' if t.joint else 'separate'}, on "
        f"a sample of {len(src):,} {'sentences' if mono else 'pairs'} (tokenizer.input_sentence_size={size:,}), "
        f"read in {time.perf_counter() - tick:.1f}s")
    return Tokenizer.train([x for x in src if x], None if mono else [x for x in tgt if x],
                           vocab_size=t.vocab_size, model_type=t.type, joint=t.joint,
                           character_coverage=t.character_coverage, seed=cfg.train.seed,
                           input_sentence_size=size, byte_fallback=t.byte_fallback)


# ---------------------------------------------------------------------------------------------
# encoding one chunk (in a worker process or in this one)


def _flat(ids: list[list[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
    return flat, lens


def encode_chunk(chunk: Chunk, opts: dict, encode_src: Callable, encode_tgt: Callable) -> dict:
    """Decode, encode and hash one chunk.

    Returns:
        {"n": pairs, "src_ids": flat ids, "src_lens": (n,) pieces, "tgt_ids", "tgt_lens" (not monolingual),
        "hashes": (n,) uint64 (with dedup), "blank": (pairs with an empty side, "file:line" of the first)
        (with strict)}.
    """
    src, tgt, names = decode_chunk(chunk, opts["src_column"], opts["tgt_column"], opts["monolingual"])
    out = {"n": len(src), "corpus": opts["corpus"]}
    if opts["strict"]:
        blank = [i for i, (s, t) in enumerate(zip(src, tgt)) if not s.strip() or not t.strip()]
        if blank:
            i = blank[0]
            out["blank"] = (len(blank), f"{names[0] if not src[i].strip() else names[1]}:{chunk.start + i}")
    dtype = np.dtype(opts["dtype"])
    out["src_ids"], out["src_lens"] = _flat(encode_src(src), dtype)
    if not opts["monolingual"]:
        out["tgt_ids"], out["tgt_lens"] = _flat(encode_tgt(tgt), dtype)
    if opts["dedup"]:
        out["hashes"] = pair_hashes(src, tgt)
    return out


def _pool_context():
    """Workers start from a fork server that has imported this module once: forking the training
    process itself (torch's threads, a progress bar's monitor thread) can copy a held lock and hang."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["seqed.data.preprocess"])
    return ctx


def _worker_main(jobs: Connection, results: Connection, src_proto: bytes, tgt_proto: Optional[bytes]) -> None:
    """One encoding process: jobs in, results (or the job's exception) out, in order, until a None job.

    A thread takes jobs off the pipe as they come, so the parent never blocks sending a job while this
    process blocks sending a result (a chunk's job and result are each larger than a pipe's buffer)."""
    import sentencepiece as spm

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle: it kills the workers
    src = spm.SentencePieceProcessor(model_proto=src_proto)
    tgt = src if tgt_proto is None else spm.SentencePieceProcessor(model_proto=tgt_proto)
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def take() -> None:
        try:
            while (job := jobs.recv()) is not None:
                inbox.put(job)
        except EOFError:
            pass
        inbox.put(None)

    threading.Thread(target=take, daemon=True).start()
    while (job := inbox.get()) is not None:
        chunk, opts = job
        try:
            results.send((True, encode_chunk(chunk, opts, src.encode, tgt.encode)))
        except Exception as err:  # the parent raises it: a DataError names the file and line
            try:
                results.send((False, err))
            except Exception:  # an exception that does not pickle
                results.send((False, RuntimeError(f"{type(err).__name__}: {err}")))


class WorkerDied(SeqedError, RuntimeError):
    """An encoding process ended without a result (killed, out of memory)."""


class EncodePool:
    """`workers` encoding processes, job i on process i % workers, results read back in job order.

    Each process has a pipe in and a pipe out of its own and nothing is shared, so stopping is kill and join,
    at any point. (`multiprocessing.Pool` shares one result queue and its lock among the workers: its
    `terminate()` can hang for good when it kills a worker that holds the lock mid-write, CPython gh-96995;
    an error in the middle of preprocessing hit that.) A worker that dies is an error, not a wait.

    `map` keeps at most 2 jobs per process in flight (constant memory); `close` when done or failed.
    """

    def __init__(self, workers: int, src_proto: bytes, tgt_proto: Optional[bytes]):
        ctx = _pool_context()
        self.procs, self.jobs, self.results = [], [], []
        try:
            for _ in range(workers):
                job_r, job_w = ctx.Pipe(duplex=False)
                res_r, res_w = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker_main, args=(job_r, res_w, src_proto, tgt_proto), daemon=True,
                                   name="seqed-encode")
                proc.start()
                job_r.close()
                res_w.close()  # the parent holds no write end: a dead worker is an EOFError, not a wait
                self.procs.append(proc)
                self.jobs.append(job_w)
                self.results.append(res_r)
        except BaseException:
            self.close()
            raise

    def map(self, jobs: Iterable) -> Iterator[dict]:
        """`encode_chunk` over `jobs` ((chunk, opts) pairs), in order."""
        jobs, n = iter(jobs), len(self.procs)
        sent = done = 0
        while True:
            while sent < done + 2 * n and (job := next(jobs, None)) is not None:
                try:
                    self.jobs[sent % n].send(job)
                except (BrokenPipeError, ConnectionResetError):
                    raise self._died(sent % n) from None
                sent += 1
            if done == sent:
                return
            try:
                ok, out = self.results[done % n].recv()
            except (EOFError, ConnectionResetError):
                raise self._died(done % n) from None
            if not ok:
                raise out
            done += 1
            yield out

    def _died(self, w: int) -> "WorkerDied":
        self.procs[w].join(1)
        return WorkerDied(f"encoding worker {self.procs[w].pid} died (exit code {self.procs[w].exitcode}; killed "
                            f"for memory?): run again with fewer workers (--workers)")

    def close(self) -> None:
        """Stop every worker now (idle or not) and wait for it: nothing is left running."""
        for proc in self.procs:
            if proc.exitcode is None:
                proc.kill()
        for proc in self.procs:
            proc.join()
        for conn in self.jobs + self.results:
            conn.close()


# ---------------------------------------------------------------------------------------------
# the training corpora into a store


def _write_chunk(store: Store, out: dict, d, seen: Optional[SeenPairs]) -> FilterReport:
    """Filter one encoded chunk and append the kept pairs; returns its report."""
    src_lens = out["src_lens"]
    tgt_lens = src_lens if d.monolingual else out["tgt_lens"]
    keep, report = filter_pairs(src_lens, tgt_lens, max_len=d.max_len, min_len=d.min_len, max_ratio=d.max_ratio)
    mask = np.zeros(out["n"], dtype=bool)
    mask[keep] = True
    if seen is not None:
        fresh = np.zeros_like(mask)
        fresh[mask] = seen.add_new(out["hashes"][mask])
        report.duplicates = int(mask.sum() - fresh.sum())
        report.kept -= report.duplicates
        mask = fresh
    src = out["src_ids"][np.repeat(mask, src_lens)]
    if d.monolingual:
        store.append(src, src_lens[mask])
    else:
        store.append(src, src_lens[mask], out["tgt_ids"][np.repeat(mask, tgt_lens)], tgt_lens[mask])
    return report


def encode_corpora(cfg: Config, tokenizer: Tokenizer, store: Store, *, workers: int = 1,
                   progress: bool = False, streaming: bool = True) -> list[dict]:
    """Encode, filter and append every training corpus of `cfg` to `store`.

    Args:
        cfg: the run's config (`data.train` and the filters of `data`).
        tokenizer: the run's tokenizer.
        store: where the kept pairs go.
        workers: encoding processes (1: encode in this process).
        progress: show a tqdm bar (pairs/s).
        streaming: stream `datasets` sources (constant memory).

    Returns:
        one {"spec", "pairs", "report"} per corpus; `report` a `FilterReport`.

    Raises:
        DataError: bad input (file and line), an empty sentence with `data.strict`, no pair left.
    """
    d = cfg.data
    dtype = id_dtype(max(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size))
    opts = [dict(corpus=c, src_column=s.src_column, tgt_column=s.tgt_column, monolingual=d.monolingual,
                 strict=d.strict, dtype=dtype.name, dedup=d.dedup) for c, s in enumerate(d.corpora)]
    jobs = ((chunk, opts[c]) for c, chunk in _chunks(cfg, streaming))
    seen = SeenPairs() if d.dedup else None
    corpora = [{"spec": asdict(s), "pairs": 0, "report": FilterReport(duplicates=0 if d.dedup else None),
                "blank": (0, "")} for s in d.corpora]
    bar = tqdm(unit="pair", unit_scale=True, desc="encode", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    pool = None
    try:
        if workers > 1:
            protos = tokenizer.to_dict()
            pool = EncodePool(workers, protos["src_model"], None if tokenizer.joint else protos["tgt_model"])
            outs = pool.map(jobs)
        else:
            outs = (encode_chunk(chunk, o, tokenizer.encode_src, tokenizer.encode_tgt) for chunk, o in jobs)
        for out in outs:
            corpus, before = corpora[out["corpus"]], store.n
            corpus["report"] += _write_chunk(store, out, d, seen)
            corpus["pairs"] += store.n - before
            if "blank" in out:
                corpus["blank"] = (corpus["blank"][0] + out["blank"][0], corpus["blank"][1] or out["blank"][1])
            bar.update(out["n"])
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    for c, corpus in enumerate(corpora):
        n, where = corpus.pop("blank")
        if n:
            name = f"data.train[{c}]" if isinstance(d.train, list) else "data.train"
            raise DataError(f"{where}: empty sentence ({n} pairs with an empty side in {name}) while data.strict "
                            f"is on: remove them, or set data.strict=false to skip and count them")
    if store.n == 0:
        total = total_report(corpora)
        raise DataError(f"no training pair survived filtering ({total}): check data.max_len/max_ratio")
    return corpora


def total_report(corpora: list[dict]) -> FilterReport:
    """The sum of the corpora's reports."""
    return sum((c["report"] for c in corpora[1:]), corpora[0]["report"])


# ---------------------------------------------------------------------------------------------
# the binarized directory


def preprocess(cfg: Config, log: Callable[[str], None] = print, *, workers: int = 0, progress: bool = True,
               tokenizer: Optional[Tokenizer] = None) -> Path:
    """Build (or rebuild, when stale) the binarized directory of `cfg`; returns it.

    Args:
        cfg: a validated config with `data.binarized` set.
        log: progress messages.
        workers: encoding processes (0: one per core).
        progress: show a tqdm bar (pairs/s).
        tokenizer: use this tokenizer (e.g. a resumed run's) instead of `train_tokenizer`.

    Raises:
        DataError: unaligned files, bad UTF-8, ...; a failed write (the partial output is removed).
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
    tick = time.perf_counter()
    fingerprints = input_fingerprints(cfg)
    tok = tokenizer or train_tokenizer(cfg, log)
    try:
        with BinarizedWriter(directory, tok, monolingual=cfg.data.monolingual) as writer:
            corpora = encode_corpora(cfg, tok, writer, workers=workers or os.cpu_count() or 1,
                                     progress=progress)
            total = total_report(corpora)
            seconds = time.perf_counter() - tick
            writer.finish({"recipe": recipe(cfg), "inputs": fingerprints,
                           "corpora": [dict(c, report=asdict(c["report"])) for c in corpora],
                           "report": asdict(total), "seconds": round(seconds, 2),
                           "tokenizer_model": file_or_dir_hash(cfg.tokenizer.model) if cfg.tokenizer.model else None})
    except OSError as err:
        if isinstance(err, FileNotFoundError) and not str(err).startswith("["):
            raise
        raise DataError(f"cannot write {directory}: {err.strerror or err}. The partial output was removed: free "
                        f"disk space (the ids need about 2 bytes per piece, 4 with a vocabulary over 65,536) or "
                        f"point data.binarized at another disk, then run again") from None
    log(f"preprocessed {total.total:,} pairs into {directory} in {seconds:.1f}s "
        f"({total.total / max(seconds, 1e-9):,.0f} pairs/s): {total}")
    return directory


def build_missing(cfg: Config, log: Callable[[str], None] = print, *, tokenizer: Optional[Tokenizer] = None,
                  progress: bool = True) -> Optional[Exception]:
    """Preprocess when the binarized directory of `cfg` does not exist; returns the error instead of raising it
    (the rank that builds passes it on to the ranks that wait)."""
    if (binarized_dir(cfg) / "manifest.json").is_file():
        return None
    try:
        preprocess(cfg, log, tokenizer=tokenizer, progress=progress)
    except (ValueError, OSError) as err:
        return err
    return None


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
    return BinarizedData(directory, weights=[c.weight for c in cfg.data.corpora], tokenizer=tokenizer)

