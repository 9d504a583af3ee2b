"""Transformer decoder (Vaswani et al. 2017) with pre-norm layers and incremental, KV-cached decoding.

`step` projects only the new token and appends its keys/values to a per-layer cache; the memory's
cross-attention keys/values are computed once in `init_state`. Nothing re-runs the prefix. Selecting
rows (beam search's reorder) copies no cache: the rows are gathered at the next step, straight into
the one-token-longer cache (`_append`), one copy per step instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from seqed.dropout import Dropout
from seqed.decoders.base import DecoderOutput
from seqed.embeddings import TokenEmbedding
from seqed.layers import FeedForward, MultiHeadAttention, check_heads, key_mask
from seqed.memory import Memory


def _rows(tensors: list[Tensor], idx: Tensor) -> list[Tensor]:
    return [t.index_select(0, idx) for t in tensors]


def _append(past: Tensor, new: Tensor, order: Optional[Tensor]) -> Tensor:
    """Rows `order` (N,) of the cache `past` (N0, h, t, dh) (None: all, as they are), then `new`
    (N, h, T, dh) after them: (N, h, t + T, dh). The rows are gathered straight into the longer
    cache: one copy, where index_select then cat made two (2x faster at t = 20, 320 rows)."""
    if order is not None and torch.is_grad_enabled() and (past.requires_grad or new.requires_grad):
        past, order = past.index_select(0, order), None  # out= does not take part in autograd
    if order is None:
        return torch.cat([past, new], dim=2)
    t = past.size(2)
    out = new.new_empty(new.size(0), new.size(1), t + new.size(2), new.size(3))
    torch.index_select(past, 0, order, out=out.narrow(2, 0, t))
    out.narrow(2, t, new.size(2)).copy_(new)
    return out


@dataclass
class TransformerState:
    """Incremental decoding state of N rows decoding G source sentences, `group` rows each.

    Attributes:
        self_k, self_v: per layer (N0, h, t, dh): self-attention keys/values of the t tokens decoded so
            far, of the rows `order` picks (all N0 = N rows, in order, when it is None).
        cross_k, cross_v: per layer (G, h, S, dh): memory keys/values, computed once in `init_state`,
            one per source sentence.
        cross_mask: (G, S) bool, True at real source tokens.
        length: t, the number of tokens decoded so far (the next token's position).
        attn: (N, S) last step's cross-attention of the last layer averaged over heads, or None
            (only computed when the decoder's `need_attn` is set).
        group: rows per source sentence: row r decodes sentence r // group (N = G * group). Beam search
            keeps its K beams of a sentence together (`select_beams`), so their K queries attend to the
            sentence's keys as one (K, dh) block per head instead of K copies of those keys.
        order: (N,) long: row r's caches are row order[r] of self_k/self_v, gathered at the next step
            (`_append`); None: they are in order. Selections compose it instead of copying caches.
    """

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    cross_mask: Tensor
    length: int
    attn: Optional[Tensor] = None
    group: int = 1
    order: Optional[Tensor] = None

    def caches(self, i: int) -> tuple[Tensor, Tensor]:
        """Layer i's self-attention keys and values of the N rows, each (N, h, t, dh) (copies when rows
        were selected since the last step)."""
        if self.order is None:
            return self.self_k[i], self.self_v[i]
        return self.self_k[i].index_select(0, self.order), self.self_v[i].index_select(0, self.order)

    def index_select(self, idx: Tensor) -> "TransformerState":
        """Rows `idx` (N',) of the batch, in any order; each keeps its sentence's memory keys/values,
        copied per row (group 1)."""
        sources = idx if self.group == 1 else torch.div(idx, self.group, rounding_mode="floor")  # (N',)
        return self._select(idx, sources, 1)

    def select_beams(self, rows: Tensor, kept: Optional[Tensor], width: int) -> "TransformerState":
        """Beam search's selection (`seqed.memory.select_beams`): rows `rows` (A' * width,), sentence-major,
        the `width` rows of kept sentence j all taken from sentence j's rows; `kept` (A',) the sentences
        kept, or None for all. The memory keys/values stay one per sentence: re-indexed only when
        sentences leave, never copied per beam."""
        return self._select(rows, kept, width)

    def _select(self, rows: Tensor, sources: Optional[Tensor], group: int) -> "TransformerState":
        """Rows `rows` of the self-attention caches (as `order`, no copy), memory keys/values of `sources`
        (None: as they are)."""
        cross_k, cross_v, cross_mask = self.cross_k, self.cross_v, self.cross_mask
        if sources is not None:
            cross_k, cross_v = _rows(cross_k, sources), _rows(cross_v, sources)
            cross_mask = cross_mask.index_select(0, sources)
        return TransformerState(
            self_k=self.self_k, self_v=self.self_v,
            cross_k=cross_k, cross_v=cross_v, cross_mask=cross_mask, length=self.length,
            attn=None if self.attn is None else self.attn.index_select(0, rows), group=group,
            order=rows if self.order is None else self.order.index_select(0, rows))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention over the memory, feed-forward; each residual."""

    def __init__(self, *, d_model: int, heads: int, ffn_size: int, memory_size: int, dropout: float,
                 attention_dropout: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model=d_model, heads=heads, dropout=attention_dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model=d_model, heads=heads, kv_size=memory_size,
                                             dropout=attention_dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model=d_model, ffn_size=ffn_size, dropout=dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, cross_k: Tensor, cross_v: Tensor, cross_mask: Tensor, *,
                past: Optional[tuple[Tensor, Tensor]] = None, need_attn: bool = False,
                group: int = 1, order: Optional[Tensor] = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor], Optional[Tensor]]:
        """One layer over x.

        Args:
            x: (B, T, D) layer input.
            cross_k, cross_v: (B / group, h, S, dh) memory keys/values.
            cross_mask: (B / group, 1, 1, S) bool, True at real source tokens.
            group: rows of x per memory row (consecutive); more than 1 only for a step (T == 1).
            past: cached self-attention (keys, values), each (B0, h, t, dh), of the t earlier positions
                (incremental step: no causal mask is needed, the cache holds no later position), or None
                for teacher forcing over the whole prefix (causal mask).
            order: (B,) the rows of `past` that x's rows continue, or None: all, in order (B0 = B).
            need_attn: return cross-attention weights.

        Returns:
            (B, T, D) layer output; self-attention (keys, values) including x's, each (B, h, t+T, dh);
            (B, T, S) cross-attention weights averaged over heads, or None.
        """
        h = self.self_norm(x)
        k, v = self.self_attn.project_kv(h)  # (B, h, T, dh)
        if past is not None:
            k = _append(past[0], k, order)  # (B, h, t+T, dh)
            v = _append(past[1], v, order)  # (B, h, t+T, dh)
        y, _ = self.self_attn.attend(self.self_attn.project_q(h), k, v, is_causal=past is None)
        x = x + self.dropout(y)
        q = self.cross_attn.project_q(self.cross_norm(x))  # (B, h, T, dh)
        if group > 1:  # T == 1: the group's queries as one block per head, (B / group, h, group, dh)
            q = q.reshape(-1, group, q.size(1), q.size(3)).transpose(1, 2)
        y, attn = self.cross_attn.attend(q, cross_k, cross_v, mask=cross_mask, need_weights=need_attn)
        if group > 1:  # y (B / group, group, D) and attn (B / group, group, S) back to one row each
            y = y.reshape(x.shape)
            attn = None if attn is None else attn.reshape(x.size(0), 1, -1)
        x = x + self.dropout(y)
        return x + self.dropout(self.ffn(self.ffn_norm(x))), (k, v), attn


class TransformerDecoder(nn.Module):
    """Stack of pre-norm Transformer decoder layers, a final LayerNorm and an output projection.

    Args:
        embedding: target token table (V, E).
        d_model: model width D.
        heads: attention heads (divides D).
        ffn_size: feed-forward inner width.
        layers: number of layers.
        memory_size: width of Memory.states (may differ from D, e.g. 2H for a bidirectional RNN).
        dropout: dropout on embeddings, residual branches and feed-forward activations.
        attention_dropout: dropout on attention weights.
        positions: "sinusoidal" or "learned".
        max_positions: longest target the position table covers.
        tie_output: share the output projection with `embedding.weight` (Press & Wolf 2017); needs E == D.
        need_attn: compute cross-attention weights (last layer, averaged over heads) in `forward` and
            `step`. A plain attribute: set it after construction to turn plots on or off.
    """

    def __init__(self, *, embedding: nn.Embedding, d_model: int, heads: int, ffn_size: int, layers: int,
                 memory_size: int, dropout: float = 0.1, attention_dropout: float = 0.0,
                 positions: str = "sinusoidal", max_positions: int = 1024, tie_output: bool = True,
                 need_attn: bool = False):
        super().__init__()
        check_heads("TransformerDecoder", d_model, heads)
        if tie_output and embedding.embedding_dim != d_model:
            raise ValueError(
                f"TransformerDecoder: tie_output needs embedding size == d_model, got "
                f"{embedding.embedding_dim} and {d_model}; set tie_output=False or match the sizes")
        self.embed = TokenEmbedding(embedding=embedding, d_model=d_model, positions=positions,
                                    max_positions=max_positions, dropout=dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model=d_model, heads=heads, ffn_size=ffn_size, memory_size=memory_size,
                         dropout=dropout, attention_dropout=attention_dropout)
            for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, embedding.num_embeddings, bias=False)
        if tie_output:
            self.output.weight = embedding.weight
        self.heads = heads
        self.d_head = d_model // heads
        self.need_attn = need_attn

    def forward(self, tokens: Tensor, memory: Memory, keep: Optional[Tensor] = None) -> DecoderOutput:
        """Teacher forcing over a whole prefix.

        Args:
            tokens: (B, T) long, starting with BOS (right padding is harmless: causal attention keeps
                real positions from seeing it).
            memory: encoder output, states (B, S, memory_size), mask (B, S).
            keep: (B, T) bool, or None: project only these positions to the vocabulary.

        Returns:
            DecoderOutput with logits (B, T, V), or (N, V) for the N kept positions, and, if
            `need_attn`, attn (B, T, S).
        """
        x = self.embed(tokens)  # (B, T, D)
        cross_mask = key_mask(memory.mask)  # (B, 1, 1, S)
        attn = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            cross_k, cross_v = layer.cross_attn.project_kv(memory.states)  # (B, h, S, dh)
            x, _, a = layer(x, cross_k, cross_v, cross_mask, need_attn=self.need_attn and i == last)
            attn = a if a is not None else attn
        x = self.norm(x)  # (B, T, D)
        return DecoderOutput(logits=self.output(x if keep is None else x[keep]), attn=attn)

    def init_state(self, memory: Memory) -> TransformerState:
        """Empty self-attention caches and the memory's cross-attention keys/values, once per sentence."""
        B = memory.states.size(0)
        empty = memory.states.new_zeros(B, self.heads, 0, self.d_head)  # (B, h, 0, dh)
        cross = [layer.cross_attn.project_kv(memory.states) for layer in self.layers]  # (B, h, S, dh) each
        # project_kv's heads are a transposed view; the attention products of every step would copy
        # a non-contiguous one (11% of an int8 step at 320 rows), so they are made contiguous once.
        return TransformerState(
            self_k=[empty] * len(self.layers), self_v=[empty] * len(self.layers),
            cross_k=[k.contiguous() for k, _ in cross], cross_v=[v.contiguous() for _, v in cross],
            cross_mask=memory.mask, length=0, attn=None)

    def step(self, tokens: Tensor, memory: Memory, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """Decode one token for every row.

        Args:
            tokens: (B,) long, the previous tokens (BOS at the first step).
            memory: encoder output (its keys/values are already in `state`).
            state: the state after `state.length` tokens.

        Returns:
            logits (B, V) for the next token, and the new state (caches one token longer).
        """
        x = self.embed(tokens.unsqueeze(1), offset=state.length)  # (B, 1, D)
        cross_mask = key_mask(state.cross_mask)  # (B / group, 1, 1, S)
        self_k, self_v, attn = [], [], None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, (k, v), a = layer(x, state.cross_k[i], state.cross_v[i], cross_mask,
                                 past=(state.self_k[i], state.self_v[i]), order=state.order,
                                 need_attn=self.need_attn and i == last, group=state.group)  # k, v (B, h, t+1, dh)
            self_k.append(k)
            self_v.append(v)
            attn = a if a is not None else attn
        logits = self.output(self.norm(x)).squeeze(1)  # (B, V)
        new_state = TransformerState(
            self_k=self_k, self_v=self_v, cross_k=state.cross_k, cross_v=state.cross_v,
            cross_mask=state.cross_mask, length=state.length + 1,
            attn=None if attn is None else attn.squeeze(1), group=state.group)  # attn (B, S)
        return logits, new_state
