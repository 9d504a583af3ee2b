"""A training run's data: read the corpora, train (or reuse) the tokenizer, encode, filter, batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from seqed.config import Config
from seqed.data.batching import ParallelData
from seqed.data.filtering import filter_pairs
from seqed.data.sources import load_corpus
from seqed.runtime import TrainingError
from seqed.tokenizer import Tokenizer


@dataclass
class Prepared:
    tokenizer: Tokenizer
    train: ParallelData
    valid: Optional[ParallelData]
    valid_src: list[str]
    valid_ref: list[str]
    report: str


def train_tokenizer(cfg: Config, log, corpus: Optional[tuple[list[str], list[str]]] = None) -> Tokenizer:
    """Train the run's SentencePiece model on the training corpus (read here unless given)."""
    d = cfg.data
    if corpus is None:
        corpus = load_corpus(d.train, src_lang=d.src_lang, tgt_lang=d.tgt_lang, strict=d.strict,
                             monolingual=d.monolingual)
    train_src, train_tgt = corpus
    log(f"training a {cfg.tokenizer.type} SentencePiece model, vocab {cfg.tokenizer.vocab_size}, "
        f"{'joint' if cfg.tokenizer.joint else 'separate'}, on {len(train_src)} pairs")
    return Tokenizer.train([s for s in train_src if s], None if d.monolingual else [t for t in train_tgt if t],
                           vocab_size=cfg.tokenizer.vocab_size, model_type=cfg.tokenizer.type,
                           joint=cfg.tokenizer.joint, character_coverage=cfg.tokenizer.character_coverage,
                           seed=cfg.train.seed)


def prepare_data(cfg: Config, tokenizer: Optional[Tokenizer], log) -> Prepared:
    """Read the corpora, train (or reuse) the tokenizer, encode and filter."""
    d = cfg.data
    train_src, train_tgt = load_corpus(d.train, src_lang=d.src_lang, tgt_lang=d.tgt_lang, strict=d.strict,
                                       monolingual=d.monolingual)
    if d.strict:
        _check_no_empty("data.train", d.train, train_src, train_tgt)
    if tokenizer is None:
        tokenizer = train_tokenizer(cfg, log, corpus=(train_src, train_tgt))
    src_ids = tokenizer.encode_src(train_src)
    tgt_ids = tokenizer.encode_tgt(train_tgt)
    keep, report = filter_pairs([len(s) for s in src_ids], [len(t) for t in tgt_ids],
                                max_len=d.max_len, min_len=d.min_len, max_ratio=d.max_ratio)
    if not keep:
        raise TrainingError(f"no training pair survived filtering ({report}): check data.max_len/max_ratio")
    train = ParallelData([src_ids[i] for i in keep], [tgt_ids[i] for i in keep])
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
    return Prepared(tokenizer, train, valid, valid_src, valid_ref, f"train: {report}")


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
