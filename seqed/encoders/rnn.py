"""Recurrent encoder: a (bi)directional LSTM or GRU over the embedded source, returning a `Memory`.

Bidirectional encoding follows Bahdanau et al. 2015 (annotations h_j = [h_j_fwd; h_j_bwd]); the optional
source reversal follows Sutskever et al. 2014, "Sequence to Sequence Learning with Neural Networks".

Two ways to run the same `nn.LSTM`/`nn.GRU` weights over a right-padded batch, with identical results:

* packed (CUDA, where cuDNN runs a PackedSequence in one fused call);
* padded (CPU): each layer and direction on its own over the padded batch, the backward direction on the
  rows reversed within their lengths (`reverse_padded`). Padding comes after every real token in both
  runs, so it never reaches a real position. On CPU this is what makes the encoder fast: ATen's packed
  CPU loop takes a `narrow` of the whole packed input at every time step, whose backward writes a zero
  tensor of the whole input per step (O(T * N) per layer; a third of the encoder's time at Multi30k sizes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqed.layers import CELLS, check_cell, reverse_padded, run_rnn
from seqed.memory import Memory
from seqed.vocab import PAD_ID


class RNNEncoder(nn.Module):
    """Embed, run a stacked (bi)directional LSTM/GRU over the packed source, return a `Memory`.

    `memory.states` are the top layer's outputs (both directions concatenated), zeros at padding;
    `memory.code` is the top layer's final hidden state (h, not c, for an LSTM; the forward direction's
    state after the last real token concatenated with the backward direction's after the first).

    Args:
        embedding: source token table (V, E).
        hidden_size: hidden size H per direction.
        layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        bidirectional: run a backward RNN too; outputs are then 2H wide.
        dropout: dropout on the embeddings and between recurrent layers (training only).
        reverse_source: reverse each source's real tokens before encoding (Sutskever et al. 2014). The
            memory then describes the reversed order: states[b, s] belongs to source token L_b-1-s, so
            attention weights over it read right to left.

    Attributes:
        output_size: width of memory.states, H * (2 if bidirectional else 1).
        code_size: width of memory.code, the same.
    """

    def __init__(self, *, embedding: nn.Embedding, hidden_size: int, layers: int = 1, cell: str = "lstm",
                 bidirectional: bool = True, dropout: float = 0.0, reverse_source: bool = False):
        super().__init__()
        check_cell("RNNEncoder", cell)
        if layers < 1:
            raise ValueError(f"RNNEncoder: layers must be >= 1, got {layers}")
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.rnn = CELLS[cell](embedding.embedding_dim, hidden_size, num_layers=layers, batch_first=True,
                               bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        self.cell = cell
        self.layers = layers
        self.hidden_size = hidden_size
        self.directions = 2 if bidirectional else 1
        self.reverse_source = reverse_source
        self.output_size = hidden_size * self.directions
        self.code_size = self.output_size

    def forward(self, src: Tensor) -> Memory:
        """Encode a right-padded batch.

        Args:
            src: (B, S) long, PAD_ID right padding; every row needs at least one real token.

        Returns:
            Memory with states (B, S, output_size), mask (B, S) = src != PAD_ID, code (B, code_size).
        """
        mask = src != PAD_ID  # (B, S)
        lengths = mask.sum(dim=1)  # (B,)
        lengths_cpu = lengths.cpu()
        if bool((lengths_cpu == 0).any()):
            rows = torch.nonzero(lengths_cpu == 0).flatten().tolist()
            raise ValueError(f"RNNEncoder: source rows {rows} are empty (only PAD); every source needs at "
                             f"least one token (e.g. EOS): drop empty lines from the data")
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("RNNEncoder: src has PAD before a real token; the encoder expects right padding "
                             "(real tokens first, PAD_ID only at the end of each row)")
        if self.reverse_source:
            src = reverse_padded(src, lengths)  # (B, S)
        x = self.dropout(self.embedding(src))  # (B, S, E)
        if x.device.type == "cpu":
            states, code = self._run_padded(x, lengths, mask)
        else:
            states, code = self._run_packed(x, lengths_cpu)
        return Memory(states=states, mask=mask, code=code)

    def _run_packed(self, x: Tensor, lengths_cpu: Tensor) -> tuple[Tensor, Tensor]:
        """One call of the stacked (bi)RNN on a PackedSequence -> states (B, S, D*H), code (B, D*H)."""
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, hidden = run_rnn(self.rnn, packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))  # (B, S, D*H)
        h_n = hidden[0] if self.cell == "lstm" else hidden  # (L*D, B, H)
        B = x.size(0)
        top = h_n.view(self.layers, self.directions, B, self.hidden_size)[-1]  # (D, B, H)
        code = top.transpose(0, 1).reshape(B, self.code_size)  # (B, D*H)
        return states, code

    def _run_padded(self, x: Tensor, lengths: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The same as `_run_packed` without packing: layer by layer, direction by direction, on `self.rnn`'s
        own weights (so checkpoints and encoder-decoder tying are unchanged).

        Args:
            x: (B, S, E) embedded source, right-padded.
            lengths: (B,) long, real tokens per row.
            mask: (B, S) bool, True at real tokens.

        Returns:
            states (B, S, D*H), zeros at padding, and code (B, D*H).
        """
        B, S = mask.shape
        lengths = lengths.to(x.device)
        layer_in = x  # (B, S, I)
        for layer in range(self.layers):
            outs = []
            for d in range(self.directions):
                rev = d == 1
                inp = reverse_padded(layer_in, lengths) if rev else layer_in  # (B, S, I)
                out = self._one_direction(inp, f"_l{layer}" + ("_reverse" if rev else ""))  # (B, S, H)
                outs.append(reverse_padded(out, lengths) if rev else out)
            layer_in = torch.cat(outs, dim=-1) if self.directions == 2 else outs[0]  # (B, S, D*H)
            if layer < self.layers - 1 and self.rnn.dropout > 0:  # what nn.LSTM/GRU do between layers
                layer_in = F.dropout(layer_in, self.rnn.dropout, self.training)
        states = layer_in * mask.unsqueeze(-1).to(layer_in.dtype)  # (B, S, D*H), zeros at padding
        last = (lengths - 1).view(B, 1, 1).expand(B, 1, self.hidden_size)  # (B, 1, H)
        fwd = states[..., :self.hidden_size].gather(1, last).squeeze(1)  # (B, H) after the last real token
        if self.directions == 1:
            return states, fwd
        return states, torch.cat([fwd, states[:, 0, self.hidden_size:]], dim=-1)  # (B, 2H): bwd after the first

    def _one_direction(self, x: Tensor, suffix: str) -> Tensor:
        """One layer and direction of `self.rnn` (weights `*{suffix}`) over x (B, S, I) -> outputs (B, S, H)."""
        rnn = self.rnn
        weights = [getattr(rnn, name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                   if hasattr(rnn, name + suffix)]
        has_bias = len(weights) == 4
        h0 = x.new_zeros(1, x.size(0), self.hidden_size)  # (1, B, H)
        if self.cell == "lstm":
            def call(inp, hx):
                return torch.lstm(inp, hx, weights, has_bias, 1, 0.0, self.training, False, True)
            return run_rnn(call, x, (h0, h0))[0]
        def call(inp, hx):  # noqa: E306
            return torch.gru(inp, hx, weights, has_bias, 1, 0.0, self.training, False, True)
        return run_rnn(call, x, h0)[0]
