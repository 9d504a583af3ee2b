"""What flows between the parts: the encoder's `Memory`, handed to any decoder, and the `DecoderState`
protocol every decoder's incremental state follows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Protocol

from torch import Tensor


@dataclass
class Memory:
    """What an encoder hands to a decoder.

    Attributes:
        states: per-token encoder states, (B, S, H).
        mask: padding mask, (B, S) bool, True at real tokens.
        code: one fixed vector per sequence, (B, C): the hourglass chokepoint. Never None.
    """

    states: Tensor
    mask: Tensor
    code: Tensor

    def index_select(self, idx: Tensor) -> "Memory":
        """Rows `idx` (N,) of the batch: used to expand for beams and to drop finished sentences."""
        return replace(
            self,
            states=self.states.index_select(0, idx),
            mask=self.mask.index_select(0, idx),
            code=self.code.index_select(0, idx),
        )

    @property
    def batch_size(self) -> int:
        return self.states.size(0)

    @property
    def lengths(self) -> Tensor:
        """Number of real tokens per sequence, (B,)."""
        return self.mask.sum(dim=1)


class DecoderState(Protocol):
    """What search needs of a decoder's incremental state (see `seqed/decoders/base.py`).

    Attributes:
        attn: (B, S) the last step's attention over the source, or None for decoders without attention.
    """

    attn: Optional[Tensor]

    def index_select(self, idx: Tensor) -> "DecoderState":
        """Rows `idx` (N,) of the batch: beam reordering and dropping finished sentences."""
        ...

    # Optional: ``select_beams(rows, kept, width) -> state``, beam search's selection, where rows move
    # only within their sentence (see `select_beams` below); without it search calls `index_select`.


def select_beams(state, rows: Tensor, kept: Optional[Tensor], width: int):
    """Beam search's selection of decoder-state rows: ``state.select_beams`` where the state has one
    (states that keep per-sentence tensors once, not per beam), else ``state.index_select(rows)``.

    Args:
        state: a `DecoderState`.
        rows: (A' * width,) long, sentence-major: the `width` rows of kept sentence j all come from the
            rows of sentence j (beams move only within their sentence).
        kept: (A',) long, the sentences kept among the current ones, or None when all stay.
        width: rows per sentence after the selection.
    """
    method = getattr(state, "select_beams", None)
    return state.index_select(rows) if method is None else method(rows, kept, width)
