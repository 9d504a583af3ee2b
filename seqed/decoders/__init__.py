"""The decoder registry: `DECODERS` maps `model.decoder.type` to a builder.

A builder takes the context `build_model` supplies positionally (the target embedding table, the
memory's state and code widths, `model.max_positions` and `model.tie_output`) and the `model.decoder`
keys it reads as keyword-only arguments named exactly like the config keys. Those keyword names are
the keys that apply to the type: `seqed.config` reads them from the signature, so setting any other key
for this type is an error. `DECODER_CHOICES` names the registries that own each choice-valued key.
"""

from __future__ import annotations

from torch import nn

from seqed.attention import ATTENTIONS
from seqed.decoders.rnn import RNNDecoder
from seqed.decoders.transformer import TransformerDecoder
from seqed.embeddings import POSITIONS
from seqed.layers import CELLS

NO_ATTENTION = "none"  # model.decoder.attention for an RNN decoder that sees only the fixed code


def build_rnn(embedding: nn.Embedding, memory_size: int, code_size: int, max_positions: int, tie_output: bool,
              /, *, hidden: int, layers: int, cell: str, attention: str, input_feeding: bool, feed_code: bool,
              dropout: float) -> RNNDecoder:
    """An LSTM/GRU decoder started from the code, with one of ATTENTIONS or none (code only)."""
    return RNNDecoder(embedding=embedding, hidden_size=hidden, memory_size=memory_size, code_size=code_size,
                      layers=layers, cell=cell, attention=None if attention == NO_ATTENTION else attention,
                      input_feeding=input_feeding, feed_code=feed_code, dropout=dropout, tie_output=tie_output)


def build_transformer(embedding: nn.Embedding, memory_size: int, code_size: int, max_positions: int,
                      tie_output: bool, /, *, hidden: int, layers: int, heads: int, ffn: int, dropout: float,
                      attention_dropout: float, positions: str) -> TransformerDecoder:
    """A pre-norm Transformer decoder of width `hidden` with cross-attention over the memory."""
    return TransformerDecoder(embedding=embedding, d_model=hidden, heads=heads, ffn_size=ffn, layers=layers,
                              memory_size=memory_size, dropout=dropout, attention_dropout=attention_dropout,
                              positions=positions, max_positions=max_positions, tie_output=tie_output)


DECODERS = {"rnn": build_rnn, "transformer": build_transformer}

# model.decoder keys whose value names an entry of a module's registry (checked where the key applies)
DECODER_CHOICES = {"cell": CELLS, "attention": (*ATTENTIONS, NO_ATTENTION), "positions": POSITIONS}

# Decoder types whose output projection reads the D-wide hidden state directly (no readout layer down to
# the embedding size): tying it to the embedding table needs model.decoder.embed_dim == hidden.
OUTPUT_FROM_HIDDEN = ("transformer",)
