"""`Ensemble`: several trained models decoding as one, behind the interface search already uses.

``Ensemble.encode(src)`` gives an `EnsembleMemory` (one `Memory` per member); its ``decoder`` has
``init_state`` / ``step`` returning an `EnsembleState` (one state per member), so greedy, sampling and
beam search run it unchanged. Each step combines the members' next-token distributions by the log of
their mean probability (fairseq's ``EnsembleModel``):

    log p(y) = logsumexp_i(log p_i(y)) - log N

i.e. a mixture of the N models, not the mean of their log-probabilities (a product of experts). The
members must share one vocabulary (`seqed.loading.load_ensemble` checks the tokenizers); they may
differ in anything else, architecture included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from seqed.alignment import source_reversed
from seqed.layers import reverse_padded
from seqed.memory import Memory, select_beams
from seqed.vocab import PAD_ID


@dataclass
class EnsembleMemory:
    """One `Memory` per member, over the same source batch.

    Attributes:
        members: the members' memories, member order.
        mask: (B, S) bool, True at real source tokens (a member's own mask may be narrower: a code
            bottleneck's memory is one slot).
    """

    members: list[Memory]
    mask: Tensor

    def index_select(self, idx: Tensor) -> "EnsembleMemory":
        """Rows `idx` (N,) of every member's memory."""
        return EnsembleMemory([m.index_select(idx) for m in self.members], self.mask.index_select(0, idx))

    @property
    def batch_size(self) -> int:
        return self.mask.size(0)

    @property
    def lengths(self) -> Tensor:
        """Number of real source tokens per sequence, (B,)."""
        return self.mask.sum(dim=1)


@dataclass
class EnsembleState:
    """One decoder state per member.

    Attributes:
        members: the members' states, member order.
        attn: (B, S) the last step's attention over the source averaged over the members that report
            one, with every member's columns in source reading order; None when no member does. (A
            member that attends a code bottleneck's single slot, not the source positions, is left out.)
    """

    members: list[Any]
    attn: Optional[Tensor] = None

    def index_select(self, idx: Tensor) -> "EnsembleState":
        """Rows `idx` (N,) of every member's state."""
        return EnsembleState([s.index_select(idx) for s in self.members],
                             None if self.attn is None else self.attn.index_select(0, idx))

    def select_beams(self, rows: Tensor, kept: Optional[Tensor], width: int) -> "EnsembleState":
        """Beam search's selection (`seqed.memory.select_beams`) of every member's state."""
        return EnsembleState([select_beams(s, rows, kept, width) for s in self.members],
                             None if self.attn is None else self.attn.index_select(0, rows))


class EnsembleDecoder(nn.Module):
    """The members' decoders stepping together; ``step`` returns the mixture's log-probabilities.

    Args:
        decoders: one decoder per member.
        reversed_sources: per member, whether its encoder read the source backwards (its attention
            is flipped back into reading order before averaging).
    """

    def __init__(self, decoders: Sequence[nn.Module], reversed_sources: Sequence[bool]):
        super().__init__()
        self.decoders = nn.ModuleList(decoders)
        self.reversed_sources = list(reversed_sources)

    @property
    def need_attn(self) -> bool:
        """Whether the members that compute attention only on request do so (see `seqed.alignment`)."""
        return any(getattr(d, "need_attn", False) for d in self.decoders)

    @need_attn.setter
    def need_attn(self, value: bool) -> None:
        for d in self.decoders:
            if hasattr(d, "need_attn"):
                d.need_attn = value

    def init_state(self, memory: EnsembleMemory) -> EnsembleState:
        return EnsembleState([d.init_state(m) for d, m in zip(self.decoders, memory.members)])

    def step(self, tokens: Tensor, memory: EnsembleMemory, state: EnsembleState) -> tuple[Tensor, EnsembleState]:
        """One step of every member.

        Args:
            tokens: (B,) long, the previous tokens (BOS at the first step).
            memory: the members' memories.
            state: the members' states.

        Returns:
            (B, V) float32 log-probabilities of the mixture (already normalised: a log_softmax over them
            changes nothing), and the new state.
        """
        lprobs, states, attns = [], [], []
        for decoder, mem, st, reverse in zip(self.decoders, memory.members, state.members, self.reversed_sources):
            logits, st = decoder.step(tokens, mem, st)
            lprobs.append(torch.log_softmax(logits.float(), dim=-1))  # (B, V)
            states.append(st)
            attn = getattr(st, "attn", None)
            if attn is not None and attn.shape == memory.mask.shape:
                attns.append(reverse_padded(attn, mem.lengths) if reverse else attn)  # (B, S) reading order
        if len(lprobs) == 1:
            mixed = lprobs[0]
        else:
            mixed = torch.logsumexp(torch.stack(lprobs), dim=0) - math.log(len(lprobs))  # (B, V)
        attn = None if not attns else (attns[0] if len(attns) == 1 else torch.stack(attns).mean(dim=0))  # (B, S)
        return mixed, EnsembleState(states, attn)


class Ensemble(nn.Module):
    """Models that decode as one (see the module docstring): ``encode`` and ``decoder`` as search uses them.

    Its attention (``state.attn``) is already in source reading order, whatever the members' encoders do.

    Args:
        models: `EncoderDecoder`s over one vocabulary (at least one).
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("Ensemble: give at least one model")
        self.models = nn.ModuleList(models)
        self.decoder = EnsembleDecoder([m.decoder for m in models], [source_reversed(m) for m in models])

    def encode(self, src: Tensor) -> EnsembleMemory:
        """src (B, S) long, PAD padded -> every member's memory."""
        return EnsembleMemory([m.encode(src) for m in self.models], src != PAD_ID)

    def __len__(self) -> int:
        return len(self.models)
