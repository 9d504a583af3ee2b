"""A training run's data: read the corpora (or map the binarized ones), train (or reuse) the tokenizer, encode,
filter, batch."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from seqed.config import Config, expand_path
from seqed.data.batching import ParallelData
from seqed.data.binarized import BinarizedData, epoch_sizes, stored_positions
from seqed.data.filtering import FilterReport, filter_pairs
from seqed.data.sources import load_corpus
from seqed.runtime import TrainingError
from seqed.tokenizer import Tokenizer


@dataclass
class Prepared:
    tokenizer: Tokenizer
    train: Union[ParallelData, BinarizedData]
    valid: Optional[ParallelData]
    valid_src: list[str]
    valid_ref: list[str]
    report: str


def train_tokenizer(cfg: Config, log, corpus: Optional[tuple[list[str], list[str]]] = None) -> Tokenizer:
    """The run's SentencePiece model: `tokenizer.model` when set, else trained on the training corpora (all of
    `data.train`, read here unless given as (sources, targets))."""
    d, tc = cfg.data, cfg.tokenizer
    if tc.model:
        return Tokenizer.from_path(expand_path(tc.model))
    if corpus is None:
        texts = [load_corpus(spec, src_lang=d.src_lang, tgt_lang=d.tgt_lang, strict=d.strict,
                             monolingual=d.monolingual) for spec in d.corpora]
        corpus = ([x for s, _ in texts for x in s], [x for _, t in texts for x in t])
    train_src, train_tgt = corpus
    log(f"training a {tc.type} SentencePiece model, vocab {tc.vocab_size}, "
        f"{'joint' if tc.joint else 'separate'}, on {len(train_src)} pairs")
    return Tokenizer.train([s for s in train_src if s], None if d.monolingual else [t for t in train_tgt if t],
                           vocab_size=tc.vocab_size, model_type=tc.type, joint=tc.joint,
                           character_coverage=tc.character_coverage, seed=cfg.train.seed,
                           input_sentence_size=tc.input_sentence_size, byte_fallback=tc.byte_fallback)


def prepare_data(cfg: Config, tokenizer: Optional[Tokenizer], log, *, build: bool = True) -> Prepared:
    """Read the corpora, train (or reuse) the tokenizer, encode and filter.

    With `data.binarized` set, the training data is the memory-mapped binarized directory
    (`seqed.preprocess.open_binarized`: built first when missing and `build`) and its tokenizer is the run's.
    """
    d = cfg.data
    if d.binarized:
        from seqed.preprocess import open_binarized  # lazy: multiprocessing and the writer only when asked

        train = open_binarized(cfg, log, tokenizer=tokenizer, build=build)
        tokenizer = tokenizer or train.tokenizer
        r = dict(train.manifest["report"])
        dup = r.pop("duplicates")
        report = (f"train: {len(train):,} examples from {train.directory} ({FilterReport(**r)}"
                  + (f", {dup:,} duplicates" if d.dedup else "") + ")")
    else:
        train, tokenizer, report = _in_memory_train(cfg, tokenizer, log)
    valid, valid_src, valid_ref = None, [], []
    if d.valid is not None:
        vs, vt = load_corpus(d.valid, src_lang=d.src_lang, tgt_lang=d.tgt_lang, strict=d.strict,
                             monolingual=d.monolingual)
        pairs = [(s, t) for s, t in zip(vs, vt) if s.strip() and t.strip()]
        valid_src = [s for s, _ in pairs]
        valid_ref = [t for _, t in pairs]
        vsi = tokenizer.encode_src(valid_src)
        vti = tokenizer.encode_tgt(valid_ref)
        cap = cfg.model.max_pieces
        valid = ParallelData([s[:cap] for s in vsi], [t[:cap] for t in vti])
        if d.valid_max_sentences:
            valid_src = valid_src[: d.valid_max_sentences]
            valid_ref = valid_ref[: d.valid_max_sentences]
    return Prepared(tokenizer, train, valid, valid_src, valid_ref, report)


def _in_memory_train(cfg: Config, tokenizer: Optional[Tokenizer], log) -> tuple[ParallelData, Tokenizer, str]:
    """Every training corpus read, encoded and filtered in memory; the same pairs, in the same order and with
    the same weighting, as a binarized directory of the same config holds."""
    d = cfg.data
    texts = []
    for spec in d.corpora:
        s, t = load_corpus(spec, src_lang=d.src_lang, tgt_lang=d.tgt_lang, strict=d.strict,
                           monolingual=d.monolingual)
        if d.strict:
            _check_no_empty("data.train", spec, s, t)
        texts.append((s, t))
    if tokenizer is None:
        all_src, all_tgt = [x for s, _ in texts for x in s], [x for _, t in texts for x in t]
        tokenizer = train_tokenizer(cfg, log, corpus=(all_src, all_tgt))
    src_ids, tgt_ids, counts, reports, seen, duplicates = [], [], [], [], set(), 0
    for s, t in texts:
        si, ti = tokenizer.encode_src(s), tokenizer.encode_tgt(t)
        keep, report = filter_pairs([len(x) for x in si], [len(x) for x in ti],
                                    max_len=d.max_len, min_len=d.min_len, max_ratio=d.max_ratio)
        if d.dedup:  # the 8-byte hash seqed.preprocess uses: the same pairs survive
            fresh = []
            for i in keep:
                h = hashlib.blake2b(f"{s[i]}\0{t[i]}".encode(), digest_size=8).digest()
                if h not in seen:
                    seen.add(h)
                    fresh.append(i)
            duplicates += len(keep) - len(fresh)
            keep = fresh
        src_ids += [si[i] for i in keep]
        tgt_ids += [ti[i] for i in keep]
        counts.append(len(keep))
        reports.append(report)
    report = FilterReport(*(sum(getattr(r, k) for r in reports) for k in ("total", "kept", "empty", "too_long",
                                                                         "bad_ratio", "too_short")))
    report.kept -= duplicates
    if not src_ids:
        raise TrainingError(f"no training pair survived filtering ({report}): check data.max_len/max_ratio")
    weights = [c.weight for c in d.corpora]
    if any(w != 1 for w in weights):
        sizes = epoch_sizes(counts, weights)
        order = stored_positions(np.arange(int(sizes.sum())), counts, sizes).tolist()
        src_ids, tgt_ids = [src_ids[i] for i in order], [tgt_ids[i] for i in order]
    text = f"train: {report}" + (f", {duplicates:,} duplicates" if d.dedup else "")
    return ParallelData(src_ids, tgt_ids), tokenizer, text


def _check_no_empty(name: str, spec, src: list[str], tgt: list[str]) -> None:
    """data.strict: an empty (or blank) sentence is an error that names its file and line."""
    blank = [i for i, (a, b) in enumerate(zip(src, tgt)) if not a.strip() or not b.strip()]
    if not blank:
        return
    i = blank[0]
    if spec.format == "text":
        where = f"{spec.src or spec.path}:{i + 1}" if not src[i].strip() else f"{spec.tgt or spec.path}:{i + 1}"
    elif spec.format == "tsv":
        where = f"{spec.path}:{i + 1}"
    else:
        where = f"{name} ({spec.name}) row {i}"
    raise TrainingError(f"{where}: empty sentence ({len(blank)} pairs with an empty side in {name}) while "
                        f"data.strict is on: remove them, or set data.strict=false to skip and count them")
