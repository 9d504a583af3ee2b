"""Training-pair filtering by token length and length ratio, with a report of what was dropped.

The ratio rule is the one of Moses' `clean-corpus-n.perl` (Koehn et al., 2007), also used by
fairseq's data preparation: drop a pair when len(src)/len(tgt) or len(tgt)/len(src) exceeds the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class FilterReport:
    """How many pairs each rule dropped; a pair is counted under the first rule it breaks, in the
    order empty, too_short, too_long, bad_ratio."""

    total: int
    kept: int
    empty: int
    too_long: int
    bad_ratio: int
    too_short: int = 0

    def __str__(self) -> str:
        pct = 100.0 * self.kept / self.total if self.total else 0.0
        return (f"kept {self.kept:,} of {self.total:,} pairs ({pct:.1f}%); dropped {self.empty:,} empty, "
                f"{self.too_short:,} too short, {self.too_long:,} too long, {self.bad_ratio:,} bad length ratio")


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
