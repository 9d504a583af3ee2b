"""Training-pair filtering by token length and length ratio, exact-duplicate removal, and one report of what
was dropped.

The ratio rule is the one of Moses' `clean-corpus-n.perl` (Koehn et al., 2007), also used by
fairseq's data preparation: drop a pair when len(src)/len(tgt) or len(tgt)/len(src) exceeds the ratio.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np


@dataclass
class FilterReport:
    """How many pairs each rule dropped; a pair is counted under the first rule it breaks, in the
    order empty, too_short, too_long, bad_ratio, then duplicates (None: duplicates are kept)."""

    total: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    too_short: int = 0
    duplicates: Optional[int] = None

    def __add__(self, other: "FilterReport") -> "FilterReport":
        def add(a, b):
            return None if a is None and b is None else (a or 0) + (b or 0)
        return FilterReport(*(add(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))

    def __str__(self) -> str:
        pct = 100.0 * self.kept / self.total if self.total else 0.0
        return (f"kept {self.kept:,} of {self.total:,} pairs ({pct:.1f}%); dropped {self.empty:,} empty, "
                f"{self.too_short:,} too short, {self.too_long:,} too long, {self.bad_ratio:,} bad length ratio"
                + ("" if self.duplicates is None else f", {self.duplicates:,} duplicates"))


def filter_pairs(src_lens: Sequence[int], tgt_lens: Sequence[int], *, max_len: int = 256, min_len: int = 1,
                 max_ratio: Optional[float] = 3.0) -> tuple[list[int], FilterReport]:
    """Indices of the pairs to train on.

    Args:
        src_lens: (N,) source lengths in tokens (without BOS/EOS).
        tgt_lens: (N,) target lengths in tokens.
        max_len: drop pairs with more tokens than this on either side.
        min_len: drop pairs with fewer tokens than this on either side (an empty side is counted as
            `empty` instead).
        max_ratio: drop pairs whose longer side has more than `max_ratio` times the tokens of the
            shorter one; None keeps every ratio.

    Returns:
        (kept indices in increasing order, report).
    """
    src = np.asarray(src_lens, dtype=np.int64).reshape(-1)
    tgt = np.asarray(tgt_lens, dtype=np.int64).reshape(-1)
    if src.shape != tgt.shape:
        raise ValueError(f"filter_pairs: {src.size} source lengths but {tgt.size} target lengths")
    if max_len < 1 or min_len < 0 or min_len > max_len:
        raise ValueError(f"filter_pairs: need 1 <= max_len and 0 <= min_len <= max_len, got max_len={max_len}, "
                         f"min_len={min_len}")
    if max_ratio is not None and max_ratio < 1.0:
        raise ValueError(f"filter_pairs: max_ratio must be >= 1 (or None to disable), got {max_ratio}")
    empty = (src == 0) | (tgt == 0)
    short = ~empty & ((src < min_len) | (tgt < min_len))
    long = ~empty & ~short & ((src > max_len) | (tgt > max_len))
    ok = ~(empty | short | long)
    bad_ratio = np.zeros_like(ok)
    if max_ratio is not None:
        shorter = np.maximum(np.minimum(src, tgt), 1)
        bad_ratio = ok & (np.maximum(src, tgt) > max_ratio * shorter)
        ok &= ~bad_ratio
    keep = np.flatnonzero(ok)
    report = FilterReport(total=int(src.size), kept=int(keep.size), empty=int(empty.sum()), too_long=int(long.sum()),
                          bad_ratio=int(bad_ratio.sum()), too_short=int(short.sum()))
    return keep.tolist(), report


def pair_hashes(src: Sequence[str], tgt: Sequence[str]) -> np.ndarray:
    """(N,) uint64: an 8-byte BLAKE2b hash of each (source, target) pair, the key of duplicate removal."""
    keys = (f"{s}\0{t}".encode() for s, t in zip(src, tgt))
    return np.fromiter((int.from_bytes(hashlib.blake2b(k, digest_size=8).digest(), "little") for k in keys),
                       dtype=np.uint64, count=len(src))


class SeenPairs:
    """The pair hashes seen so far, as a few sorted arrays whose sizes halve (O(N log N) inserts, 8 bytes each)."""

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
