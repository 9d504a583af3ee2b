"""Transformer encoder (Vaswani et al. 2017) with pre-norm layers (shared layers: `seqed/layers.py`).

Pre-norm (LayerNorm before each sublayer, one final LayerNorm) follows Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture": it trains without a long warm-up.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqed.dropout import Dropout
from seqed.embeddings import TokenEmbedding
from seqed.layers import FeedForward, MultiHeadAttention, check_heads, key_mask
from seqed.memory import Memory
from seqed.vocab import PAD_ID

CODES = ("mean", "token")


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward, each with a residual connection and dropout."""

    def __init__(self, *, d_model: int, heads: int, ffn_size: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model=d_model, heads=heads, dropout=attention_dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model=d_model, ffn_size=ffn_size, dropout=dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), mask (B, 1, 1, S) bool True at real keys -> (B, S, D)."""
        x = x + self.dropout(self.attn(self.attn_norm(x), mask=mask)[0])
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class TransformerEncoder(nn.Module):
    """Stack of pre-norm Transformer layers over the source.

    The fixed code (Memory.code) is either the masked mean of the final states (`code="mean"`) or, with
    `code="token"`, the final state of a learned summary vector prepended to the sequence (like BERT's
    [CLS], Devlin et al. 2019). The summary vector carries no position encoding and is dropped from
    `Memory.states`/`Memory.mask`, which cover exactly the source tokens.

    Args:
        embedding: source token table (V, E); E may differ from d_model (a projection is added).
        d_model: model width D.
        heads: attention heads (divides D).
        ffn_size: feed-forward inner width.
        layers: number of layers.
        dropout: dropout on embeddings, residual branches and feed-forward activations.
        attention_dropout: dropout on attention weights.
        positions: "sinusoidal" or "learned".
        max_positions: longest source the position table covers.
        code: "mean" or "token".
    """

    def __init__(self, *, embedding: nn.Embedding, d_model: int, heads: int, ffn_size: int, layers: int,
                 dropout: float = 0.1, attention_dropout: float = 0.0, positions: str = "sinusoidal",
                 max_positions: int = 1024, code: str = "mean"):
        super().__init__()
        check_heads("TransformerEncoder", d_model, heads)
        if code not in CODES:
            raise ValueError(f"TransformerEncoder: unknown code {code!r}; choose one of {list(CODES)}")
        self.embed = TokenEmbedding(embedding=embedding, d_model=d_model, positions=positions,
                                    max_positions=max_positions, dropout=dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model=d_model, heads=heads, ffn_size=ffn_size, dropout=dropout,
                         attention_dropout=attention_dropout)
            for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.code = code
        self.summary = nn.Parameter(torch.randn(d_model)) if code == "token" else None
        self.output_size = d_model
        self.code_size = d_model

    def forward(self, src: Tensor) -> Memory:
        """Encode a padded source batch.

        Args:
            src: (B, S) long, PAD_ID padded.

        Returns:
            Memory with states (B, S, D) (zero at padding), mask (B, S) True at real tokens, code (B, D).
        """
        if src.dim() != 2:
            raise ValueError(f"TransformerEncoder: src must be (B, S) token ids, got shape {tuple(src.shape)}")
        mask = src != PAD_ID  # (B, S)
        x = self.embed(src)  # (B, S, D)
        keep = mask
        if self.summary is not None:
            B = src.size(0)
            x = torch.cat([self.summary.expand(B, 1, -1).to(x.dtype), x], dim=1)  # (B, 1+S, D)
            keep = torch.cat([mask.new_ones(B, 1), mask], dim=1)  # (B, 1+S)
        attn_mask = key_mask(keep)  # (B, 1, 1, S')
        for layer in self.layers:
            x = layer(x, attn_mask)
        x = self.norm(x)
        if self.summary is not None:
            code, x = x[:, 0], x[:, 1:]  # (B, D), (B, S, D)
        states = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, S, D)
        if self.summary is None:
            code = states.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(states.dtype)  # (B, D)
        return Memory(states=states, mask=mask, code=code)
