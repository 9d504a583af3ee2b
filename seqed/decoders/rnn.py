"""Recurrent decoders: the fixed-code decoder (Sutskever et al. 2014; Cho et al. 2014) and the attentional
decoders of Bahdanau et al. 2015 and Luong et al. 2015, behind one `RNNDecoder` with explicit state.

Three schemes, picked by `attention`:

* ``None``: the RNN sees only the embeddings (and the code, with `feed_code`); memory.states are never read.
* ``"bahdanau"``: the query is the previous top hidden state s_{t-1}; its context c_t is concatenated to
  the input: s_t = RNN([y_{t-1}; c_t], s_{t-1}); readout from [s_t; c_t].
* ``"dot"`` / ``"general"`` (Luong): h_t = RNN([y_{t-1}; h~_{t-1}], h_{t-1}) with input feeding (h~ left
  out without it); c_t attends with h_t; h~_t = tanh(W_c [c_t; h_t]) is the readout.

Every scheme ends in a readout r_t = tanh(W_r [...]) of the embedding size E and a bias-free Linear(E, V)
that `tie_output` shares with the embedding (Press & Wolf 2017). `forward` and `step` share one code path
(`_decode`); forward loops over time only for Bahdanau and Luong-with-input-feeding, where the recurrence
needs the previous step's context; otherwise one full-sequence nn.LSTM/GRU call runs all T steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqed.attention import ATTENTIONS, Attention
from seqed.decoders.base import DecoderOutput
from seqed.layers import CELLS, check_cell, run_rnn
from seqed.memory import Memory


@dataclass
class RNNState:
    """Incremental decoding state.

    Attributes:
        hidden: (L, B, H) hidden state of every layer.
        cell: (L, B, H) LSTM cell state, or None for a GRU.
        feed: (B, E) the previous attentional vector h~ for Luong input feeding, or None.
        keys: (B, S, A) attention keys precomputed once per sentence, or None without attention.
        attn: (B, S) the last step's attention weights, or None (before the first step, or no attention).
    """

    hidden: Tensor
    cell: Optional[Tensor]
    feed: Optional[Tensor]
    keys: Optional[Tensor]
    attn: Optional[Tensor]

    def index_select(self, idx: Tensor) -> "RNNState":
        """Rows `idx` (N,) of the batch: dim 1 of hidden/cell (layers first), dim 0 of the rest."""
        pick0 = lambda t: None if t is None else t.index_select(0, idx)  # noqa: E731
        return RNNState(
            hidden=self.hidden.index_select(1, idx),
            cell=None if self.cell is None else self.cell.index_select(1, idx),
            feed=pick0(self.feed), keys=pick0(self.keys), attn=pick0(self.attn))


class RNNDecoder(nn.Module):
    """Stacked LSTM/GRU decoder, initialised from the memory's code, with optional attention.

    The initial hidden state of every layer is tanh(W_h code + b_h); for an LSTM the cell state comes
    from a separate bridge tanh(W_c code + b_c). Both are (L, B, H) after a reshape.

    Args:
        embedding: target token table (V, E).
        hidden_size: hidden size H of every layer.
        memory_size: width M of memory.states (attention values).
        code_size: width C of memory.code (the bridge input).
        layers: stacked recurrent layers L.
        cell: "lstm" or "gru".
        attention: None (fixed code only), "bahdanau", "dot" or "general". "dot" needs H == M.
        input_feeding: Luong input feeding (feed h~_{t-1} with the next input); "dot"/"general" only,
            ignored otherwise (Bahdanau feeds the context by design; the code-only decoder has no h~).
        feed_code: concatenate memory.code to every input embedding and to the readout input (Cho et al.
            2014, "Learning Phrase Representations using RNN Encoder-Decoder", eq. for s_t and the output).
        dropout: dropout on the input embeddings, between recurrent layers, and on the readout vector.
        tie_output: share the output projection with `embedding.weight` (Press & Wolf 2017).
    """

    def __init__(self, *, embedding: nn.Embedding, hidden_size: int, memory_size: int, code_size: int,
                 layers: int = 1, cell: str = "lstm", attention: Optional[str] = "bahdanau",
                 input_feeding: bool = True, feed_code: bool = False, dropout: float = 0.0,
                 tie_output: bool = False):
        super().__init__()
        check_cell("RNNDecoder", cell)
        if attention is not None and attention not in ATTENTIONS:
            raise ValueError(f"RNNDecoder: unknown attention {attention!r}; use None or one of "
                             f"{', '.join(ATTENTIONS)}")
        if layers < 1:
            raise ValueError(f"RNNDecoder: layers must be >= 1, got {layers}")
        E = embedding.embedding_dim
        self.embedding = embedding
        self.hidden_size = hidden_size
        self.layers = layers
        self.cell = cell
        self.feed_code = feed_code
        self.scheme = "code" if attention is None else ("bahdanau" if attention == "bahdanau" else "luong")
        self.input_feeding = input_feeding and self.scheme == "luong"
        code_in = code_size if feed_code else 0
        context_in = memory_size if self.scheme == "bahdanau" else 0
        feed_in = E if self.input_feeding else 0
        readout_in = hidden_size + code_in + (0 if self.scheme == "code" else memory_size)

        self.dropout = nn.Dropout(dropout)
        self.rnn = CELLS[cell](E + code_in + context_in + feed_in, hidden_size, num_layers=layers,
                               batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.bridge_h = nn.Linear(code_size, layers * hidden_size)
        self.bridge_c = nn.Linear(code_size, layers * hidden_size) if cell == "lstm" else None
        self.attention = None if attention is None else Attention(
            kind=attention, query_size=hidden_size, memory_size=memory_size)
        self.readout = nn.Linear(readout_in, E)
        self.output = nn.Linear(E, embedding.num_embeddings, bias=False)
        if tie_output:
            self.output.weight = embedding.weight

    # -- the contract ----------------------------------------------------------------------------

    def forward(self, tokens: Tensor, memory: Memory, keep: Optional[Tensor] = None) -> DecoderOutput:
        """Teacher forcing over a whole prefix.

        Args:
            tokens: (B, T) long, starting with BOS (right padding only affects the padded positions).
            memory: encoder output; states (B, S, M) and mask (B, S) are read only with attention.
            keep: (B, T) bool, or None: project only these positions to the vocabulary.

        Returns:
            DecoderOutput with logits (B, T, V), or (N, V) for the N kept positions, and attn (B, T, S)
            (None without attention).
        """
        readout, attn, _ = self._decode(self._inputs(tokens, memory), memory, self.init_state(memory))
        return DecoderOutput(logits=self.output(readout if keep is None else readout[keep]), attn=attn)

    def init_state(self, memory: Memory) -> RNNState:
        """Bridged initial hidden (and cell) states from memory.code; attention keys computed once."""
        code = memory.code  # (B, C)
        B = code.size(0)

        def bridge(linear: nn.Linear) -> Tensor:
            h = torch.tanh(linear(code)).view(B, self.layers, self.hidden_size)  # (B, L, H)
            return h.transpose(0, 1).contiguous()  # (L, B, H)

        feed = code.new_zeros(B, self.embedding.embedding_dim) if self.input_feeding else None  # (B, E)
        keys = None if self.attention is None else self.attention.precompute(memory.states)  # (B, S, A)
        return RNNState(hidden=bridge(self.bridge_h),
                        cell=None if self.bridge_c is None else bridge(self.bridge_c),
                        feed=feed, keys=keys, attn=None)

    def step(self, tokens: Tensor, memory: Memory, state: RNNState) -> tuple[Tensor, RNNState]:
        """Decode one token for every row.

        Args:
            tokens: (B,) long, the previous tokens (BOS at the first step).
            memory: encoder output (rows aligned with `state`).
            state: the state after the tokens decoded so far.

        Returns:
            logits (B, V) for the next token, and the new state.
        """
        readout, _, state = self._decode(self._inputs(tokens.unsqueeze(1), memory), memory, state)
        return self.output(readout.squeeze(1)), state  # (B, V)

    # -- internals -------------------------------------------------------------------------------

    def _inputs(self, tokens: Tensor, memory: Memory) -> Tensor:
        """(B, T) tokens -> (B, T, E [+ C]) dropped-out embeddings, the code appended with `feed_code`."""
        x = self.embedding(tokens)  # (B, T, E)
        if self.feed_code:
            x = torch.cat([x, memory.code.unsqueeze(1).expand(-1, x.size(1), -1)], dim=-1)  # (B, T, E+C)
        return self.dropout(x)

    def _rnn(self, x: Tensor, state: RNNState) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Run the stacked RNN over x (B, T, I) from `state` -> outputs (B, T, H), hidden, cell (L, B, H)."""
        if state.cell is None:
            out, h = run_rnn(self.rnn, x, state.hidden)
            return out, h, None
        out, (h, c) = run_rnn(self.rnn, x, (state.hidden, state.cell))
        return out, h, c

    def _read(self, parts: list[Tensor], memory: Memory) -> Tensor:
        """Readout r = dropout(tanh(W_r [parts; code?] + b)) of width E; parts are (B, T, *).

        With `feed_code`, W_r [x; code] is computed as W_x x + W_c code: the code's term once per
        sentence (B, E) rather than once per step, which saves a (B*T, C) x (C, E) product.
        """
        x = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]  # (B, T, K)
        if not self.feed_code:
            return self.dropout(torch.tanh(self.readout(x)))  # (B, T, E)
        w, k = self.readout.weight, x.size(-1)  # w (E, K + C)
        code_term = F.linear(memory.code, w[:, k:], self.readout.bias)  # (B, E)
        return self.dropout(torch.tanh(F.linear(x, w[:, :k]) + code_term.unsqueeze(1)))  # (B, T, E)

    def _decode(self, x: Tensor, memory: Memory,
                state: RNNState) -> tuple[Tensor, Optional[Tensor], RNNState]:
        """Advance `state` over T inputs.

        Args:
            x: (B, T, I) prepared inputs from `_inputs`.
            memory: encoder output.
            state: the state before x[:, 0].

        Returns:
            readout (B, T, E), attention weights (B, T, S) or None, and the state after x[:, -1].
        """
        if self.scheme == "code":
            out, h, c = self._rnn(x, state)  # (B, T, H)
            return self._read([out], memory), None, RNNState(h, c, None, None, None)

        keys, values, mask = state.keys, memory.states, memory.mask
        if self.scheme == "luong" and not self.input_feeding:
            out, h, c = self._rnn(x, state)  # (B, T, H)
            ctx, attn = self.attention(out, keys, values, mask)  # (B, T, M), (B, T, S)
            readout = self._read([ctx, out], memory)  # (B, T, E)
            return readout, attn, RNNState(h, c, None, keys, attn[:, -1])

        # Bahdanau and Luong-with-input-feeding: step t needs step t-1's context or h~.
        h, c, feed = state.hidden, state.cell, state.feed
        outs, ctxs, attns, readouts = [], [], [], []
        for t in range(x.size(1)):
            step_state = RNNState(h, c, None, keys, None)
            if self.scheme == "bahdanau":
                ctx, a = self.attention(h[-1], keys, values, mask)  # (B, M), (B, S) query s_{t-1}
                inp = torch.cat([x[:, t], ctx], dim=-1).unsqueeze(1)  # (B, 1, I+M)
                out, h, c = self._rnn(inp, step_state)  # (B, 1, H)
                outs.append(out)
                ctxs.append(ctx.unsqueeze(1))  # (B, 1, M)
            else:
                inp = torch.cat([x[:, t], feed], dim=-1).unsqueeze(1)  # (B, 1, I+E)
                out, h, c = self._rnn(inp, step_state)  # (B, 1, H)
                ctx, a = self.attention(out, keys, values, mask)  # (B, 1, M), (B, 1, S)
                r = self._read([ctx, out], memory)  # (B, 1, E)
                feed = r.squeeze(1)  # (B, E)
                readouts.append(r)
                a = a.squeeze(1)  # (B, S)
            attns.append(a)
        attn = torch.stack(attns, dim=1)  # (B, T, S)
        if self.scheme == "bahdanau":
            readout = self._read([torch.cat(outs, dim=1), torch.cat(ctxs, dim=1)], memory)  # (B, T, E)
        else:
            readout = torch.cat(readouts, dim=1)  # (B, T, E)
        return readout, attn, RNNState(h, c, feed, keys, attn[:, -1])
