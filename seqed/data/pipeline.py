"""A run's data: the training pairs (encoded in memory, or mapped from the binarized directory), the tokenizer
and the validation set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from seqed.config import Config
from seqed.data.batching import ParallelData
from seqed.data.corpus import load_corpus
from seqed.data.filtering import FilterReport
from seqed.data.preprocess import encode_corpora, open_binarized, total_report, train_tokenizer
from seqed.data.store import BinarizedData, MemoryStore
from seqed.tokenizer import Tokenizer


@dataclass
class Prepared:
    tokenizer: Tokenizer
    train: Union[ParallelData, BinarizedData]
    valid: Optional[ParallelData]
    valid_src: list[str]
    valid_ref: list[str]
    report: str


def prepare_data(cfg: Config, tokenizer: Optional[Tokenizer], log, *, build: bool = True) -> Prepared:
    """Train (or reuse) the tokenizer, encode and filter the training corpora, read the validation set.

    With `data.binarized` set, the training data is the memory-mapped binarized directory (`open_binarized`:
    built first when missing and `build`) and its tokenizer is the run's; otherwise the same chunks are
    encoded here into a `MemoryStore`.
    """
    d = cfg.data
    if d.binarized:
        train = open_binarized(cfg, log, tokenizer=tokenizer, build=build)
        tokenizer = tokenizer or train.tokenizer
        report = f"train: {len(train):,} examples from {train.directory} ({FilterReport(**train.manifest['report'])})"
    else:
        tokenizer = tokenizer or train_tokenizer(cfg, log)
        store = MemoryStore(monolingual=d.monolingual)
        corpora = encode_corpora(cfg, tokenizer, store, streaming=False)
        train = store.data([c["pairs"] for c in corpora], [c.weight for c in d.corpora])
        report = f"train: {total_report(corpora)}"
    valid, valid_src, valid_ref = None, [], []
    if d.valid is not None:
        vs, vt = load_corpus(d.valid, src_lang=d.src_lang, tgt_lang=d.tgt_lang, monolingual=d.monolingual,
                             name="data.valid")
        pairs = [(s, t) for s, t in zip(vs, vt) if s.strip() and t.strip()]
        valid_src = [s for s, _ in pairs]
        valid_ref = [t for _, t in pairs]
        cap = cfg.model.max_pieces
        valid = ParallelData([s[:cap] for s in tokenizer.encode_src(valid_src)],
                             [t[:cap] for t in tokenizer.encode_tgt(valid_ref)])
        if d.valid_max_sentences:
            valid_src = valid_src[: d.valid_max_sentences]
            valid_ref = valid_ref[: d.valid_max_sentences]
    return Prepared(tokenizer, train, valid, valid_src, valid_ref, report)
