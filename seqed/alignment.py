"""Source-target alignments read off the decoder's attention: `attention_enabled`, `reading_order`,
`hard_alignment` and the Pharaoh text format (``"0-0 1-2 2-1"``, as fast_align and Moses write it).

Which attention: RNN decoders report their attention weights at every step; a Transformer decoder
reports the last layer's cross-attention averaged over heads while its ``need_attn`` flag is set (the
only layer it exposes: fairseq's default ``alignment_layer`` is the last one too). An ensemble
reports the mean over its members. Hard alignments link each output piece to its most-attended
source piece (fairseq's ``extract_hard_alignment``); attention read this way is only a rough guide to
word alignment (Koehn & Knowles 2017, https://arxiv.org/abs/1706.03872, sec. 3.5).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from torch import Tensor


@contextlib.contextmanager
def attention_enabled(model) -> Iterator[None]:
    """Within the block, a decoder that computes attention only on request (``need_attn``) does so.

    Decoders without the flag (RNN decoders, which always report attention when they have any) are
    left alone; the flag's old value is restored on exit.
    """
    decoder = model.decoder
    if not hasattr(decoder, "need_attn"):
        yield
        return
    old = decoder.need_attn
    decoder.need_attn = True
    try:
        yield
    finally:
        decoder.need_attn = old


def source_reversed(model) -> bool:
    """Whether `model`'s encoder read the source backwards (``reverse_source``), so that memory
    position s of a source of S pieces + EOS holds piece S - s (EOS first)."""
    return bool(getattr(getattr(model, "encoder", None), "reverse_source", False))


def reading_order(attn: Tensor, model) -> Tensor:
    """A hypothesis's attention (T + 1, S + 1) with its columns in source reading order (EOS last).

    Args:
        attn: (T + 1, S + 1) attention over the real source positions in memory order, as
            `seqed.search.Hypothesis.attn` holds it.
        model: the model that produced it (see `source_reversed`).
    """
    return attn.flip(-1) if source_reversed(model) else attn  # (T + 1, S + 1)


def hard_alignment(attn: Tensor) -> list[tuple[int, int]]:
    """The most-attended source piece of every output piece.

    BOS and EOS take no part: the last row (the EOS step) and the last column (the source EOS) are
    dropped, so index i is the i-th SentencePiece piece of the source and j the j-th output piece.

    Args:
        attn: (T + 1, S + 1) attention in reading order (see `reading_order`): T output pieces + EOS,
            S source pieces + EOS.

    Returns:
        T (source index, target index) pairs, target order; [] when T = 0 (or S = 0).
    """
    weights = attn[:-1, :-1]  # (T, S)
    if weights.numel() == 0:
        return []
    return list(zip(weights.argmax(dim=1).tolist(), range(weights.size(0))))


def pharaoh(alignment: Sequence[tuple[int, int]]) -> str:
    """(source, target) pairs -> Pharaoh format ``"0-0 1-2"`` (fast_align's and Moses's)."""
    return " ".join(f"{i}-{j}" for i, j in alignment)
