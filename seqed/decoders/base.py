"""The decoder contract every decoder follows, so search never asks which architecture it runs.

A decoder is an ``nn.Module`` with three methods:

* ``forward(tokens, memory) -> DecoderOutput`` — teacher forcing over a whole prefix.
  ``tokens`` (B, T) start with BOS; ``logits`` (B, T, V) predict the next token at each position.
* ``init_state(memory) -> state`` — the state before the first step.
* ``step(tokens, memory, state) -> (logits, state)`` — one incremental step: ``tokens`` (B,) are the
  previous tokens (BOS at the first step), ``logits`` (B, V). Running ``step`` over a prefix gives the
  same logits as ``forward`` on it (to ~1e-5 in fp32; tested for every decoder).

States implement ``index_select(idx) -> state`` (idx (N,) long, rows of the batch) for beam
reordering and for dropping finished sentences (`seqed.memory.DecoderState`), and expose ``attn`` (B, S) or None: the last
step's attention over the source, used by plots and alignments (`seqed.alignment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class DecoderOutput:
    """Teacher-forced decoder output.

    Attributes:
        logits: (B, T, V) unnormalised scores for the next token; (N, V) for the N kept positions
            (row-major) when the decoder was given `keep`.
        attn: (B, T, S) attention over source positions (averaged over heads/layers as the decoder
            defines it), or None for decoders without attention.
    """

    logits: Tensor
    attn: Optional[Tensor] = None
