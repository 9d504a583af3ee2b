"""Transformer encoder (Vaswani et al. 2017) with pre-norm layers, and the attention and feed-forward
blocks the Transformer decoder reuses.

Pre-norm (LayerNorm before each sublayer, one final LayerNorm) follows Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture": it trains without a long warm-up.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from seqed.dropout import Dropout
from seqed.embeddings import TokenEmbedding
from seqed.memory import Memory
from seqed.vocab import PAD_ID

CODES = ("mean", "token")


def check_heads(name: str, d_model: int, heads: int) -> None:
    """Raise a clear ValueError unless `heads` divides `d_model`."""
    if heads <= 0 or d_model % heads != 0:
        raise ValueError(f"{name}: d_model={d_model} must be divisible by heads={heads}")


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017, sec. 3.2.2).

    Queries come from a (B, T, D) input; keys and values from a (B, S, kv_size) input (the same tensor
    for self-attention, the encoder memory for cross-attention, where kv_size may differ from D).
    Split into `project_q` / `project_kv` / `attend` so that the decoder can cache keys and values.

    Args:
        d_model: query input and output width D.
        heads: number of heads h (divides D).
        kv_size: key/value input width (default D).
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, *, d_model: int, heads: int, kv_size: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        check_heads("MultiHeadAttention", d_model, heads)
        kv_size = kv_size or d_model
        self.heads = heads
        self.d_head = d_model // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(kv_size, d_model)
        self.v_proj = nn.Linear(kv_size, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _split(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.d_head).transpose(1, 2)  # (B, h, T, dh)

    def project_q(self, x: Tensor) -> Tensor:
        """x (B, T, D) -> queries (B, h, T, dh)."""
        return self._split(self.q_proj(x))

    def project_kv(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """kv (B, S, kv_size) -> keys, values, each (B, h, S, dh)."""
        return self._split(self.k_proj(kv)), self._split(self.v_proj(kv))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor] = None,
               is_causal: bool = False, need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """Attend projected queries over projected keys/values.

        Args:
            q: (B, h, T, dh).
            k, v: (B, h, S, dh).
            mask: bool, broadcastable to (B, h, T, S), True where a query may attend (e.g. (B, 1, 1, S)
                from a padding mask), or None.
            is_causal: also forbid attending to later positions (needs T == S: queries and keys are
                the same positions).
            need_weights: also return the attention weights averaged over heads.

        Returns:
            out: (B, T, D) after the output projection.
            weights: (B, T, S) attention weights averaged over heads, or None. A query whose keys are
                all masked attends to nothing (zero output, zero weights).
        """
        B, _, T, _ = q.shape
        S = k.size(2)
        if is_causal and T != S:
            raise ValueError(f"is_causal needs as many queries as keys, got {T} and {S}; "
                             f"use a cache without is_causal for incremental steps")
        dropout = self.dropout if self.training else 0.0
        if is_causal and (mask is not None or need_weights):
            # SDPA accepts either is_causal or attn_mask, not both: fold the causal mask into attn_mask.
            causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # (T, S)
            mask = causal if mask is None else mask & causal  # (B, h|1, T, S)
            is_causal = False
        weights = None
        # One query per row (an incremental decoding step) on CPU: plain matmuls beat both SDPA kernels
        # at beam-search shapes (benchmarks/micro_cpu.py), so take the explicit path.
        if need_weights or (T == 1 and dropout == 0.0 and q.device.type == "cpu"):
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, h, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).nan_to_num(0.0)  # masked rows -> 0, like SDPA
            weights = probs.mean(dim=1) if need_weights else None  # (B, T, S)
            y = F.dropout(probs.to(v.dtype), p=dropout, training=self.training) @ v  # (B, h, T, dh)
        elif q.device.type == "cpu":
            # On CPU the math backend beat the flash kernel for these short sequences (3.6x in bf16,
            # 1.5x in fp32, forward + backward; benchmarks/README.md).
            with sdpa_kernel(SDPBackend.MATH):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                   is_causal=is_causal)  # (B, h, T, dh)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                               is_causal=is_causal)  # (B, h, T, dh)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.d_head)  # (B, T, D)
        return self.out_proj(y), weights

    def forward(self, x: Tensor, kv: Optional[Tensor] = None, *, mask: Optional[Tensor] = None,
                is_causal: bool = False, need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """x (B, T, D) attends over kv (B, S, kv_size) (default: x itself) -> (out (B, T, D), weights)."""
        k, v = self.project_kv(x if kv is None else kv)
        return self.attend(self.project_q(x), k, v, mask=mask, is_causal=is_causal, need_weights=need_weights)


class FeedForward(nn.Module):
    """Position-wise feed-forward block: Linear -> ReLU -> dropout -> Linear (Vaswani et al. 2017, sec. 3.3).

    Args:
        d_model: input and output width D.
        ffn_size: inner width.
        dropout: dropout on the inner activations.
    """

    def __init__(self, *, d_model: int, ffn_size: int, dropout: float = 0.1):
        super().__init__()
        self.inner = nn.Linear(d_model, ffn_size)
        self.outer = nn.Linear(ffn_size, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.outer(self.dropout(F.relu(self.inner(x))))


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
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, S')
        for layer in self.layers:
            x = layer(x, attn_mask)
        x = self.norm(x)
        if self.summary is not None:
            code, x = x[:, 0], x[:, 1:]  # (B, D), (B, S, D)
        states = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, S, D)
        if self.summary is None:
            code = states.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(states.dtype)  # (B, D)
        return Memory(states=states, mask=mask, code=code)
