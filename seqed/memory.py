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
