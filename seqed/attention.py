"""Attention for recurrent decoders: Bahdanau's additive score and Luong's dot and general scores.

* ``bahdanau``: score(q, h_j) = v^T tanh(W_q q + W_k h_j) (Bahdanau et al. 2015, "Neural Machine
  Translation by Jointly Learning to Align and Translate", eq. 6 and appendix A.1.2).
* ``dot``: score(q, h_j) = q^T h_j (Luong et al. 2015, "Effective Approaches to Attention-based Neural
  Machine Translation", eq. 8); needs query_size == memory_size.
* ``general``: score(q, h_j) = q^T W h_j (Luong et al. 2015, eq. 8).

The part of the score that depends only on the source (W_k h_j, W h_j, or h_j itself) is computed once
per sentence by `precompute` and reused at every decoding step and across beam reorderings.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

ATTENTIONS = ("bahdanau", "dot", "general")


class Attention(nn.Module):
    """Scores a query against precomputed keys, softmax over the real source positions, weighted sum.

    Args:
        kind: "bahdanau" (additive), "dot" or "general" (multiplicative, Luong).
        query_size: query width Q (the decoder hidden size).
        memory_size: encoder state width M (values and the input of `precompute`).
        attn_size: width A of the additive score's hidden layer ("bahdanau" only; default Q). For
            "dot" the keys are the memory itself (A = M), for "general" they are W h_j (A = Q).
    """

    def __init__(self, *, kind: str, query_size: int, memory_size: int, attn_size: Optional[int] = None):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"Attention: unknown kind {kind!r}; use one of {', '.join(ATTENTIONS)}")
        if kind == "dot" and query_size != memory_size:
            raise ValueError(
                f"Attention(kind='dot'): the query size ({query_size}, decoder hidden) must equal the memory "
                f"size ({memory_size}, encoder output); use kind='general' or 'bahdanau', or match the sizes")
        if kind != "bahdanau" and attn_size is not None:
            raise ValueError(
                f"Attention(kind={kind!r}): attn_size applies only to 'bahdanau' (Luong keys have the "
                f"query's size); leave it None")
        self.kind = kind
        self.query_size = query_size
        self.memory_size = memory_size
        if kind == "bahdanau":
            attn_size = attn_size or query_size
            self.key_proj = nn.Linear(memory_size, attn_size)               # W_k (and the score's bias)
            self.query_proj = nn.Linear(query_size, attn_size, bias=False)  # W_q
            self.energy = nn.Linear(attn_size, 1, bias=False)               # v
            self.attn_size = attn_size
        elif kind == "general":
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)  # W
            self.attn_size = query_size
        else:
            self.attn_size = memory_size

    def precompute(self, memory_states: Tensor) -> Tensor:
        """The query-independent part of the score, once per sentence.

        Args:
            memory_states: (B, S, M) encoder states.

        Returns:
            keys (B, S, A): W_k h_j + b (bahdanau), W h_j (general) or h_j (dot).
        """
        if self.kind == "dot":
            return memory_states
        return self.key_proj(memory_states)  # (B, S, A)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attend one or T queries per sentence over the source.

        Args:
            query: (B, Q) or (B, T, Q).
            keys: (B, S, A) from `precompute`.
            values: (B, S, M) the encoder states.
            mask: (B, S) bool, True at real source tokens. Every row needs at least one True (a fully
                masked row has no distribution and gives NaN).

        Returns:
            context (B, M) or (B, T, M) and weights (B, S) or (B, T, S); weights sum to 1 over S and
            are exactly 0 at padding.
        """
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query  # (B, T, Q)
        if self.kind == "bahdanau":
            hidden = torch.tanh(self.query_proj(q).unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
            scores = self.energy(hidden).squeeze(-1)  # (B, T, S)
        else:
            scores = torch.bmm(q, keys.transpose(1, 2))  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # (B, T, S)
        weights = torch.softmax(scores, dim=-1)  # (B, T, S)
        context = torch.bmm(weights, values)  # (B, T, M)
        if single:
            return context.squeeze(1), weights.squeeze(1)  # (B, M), (B, S)
        return context, weights
