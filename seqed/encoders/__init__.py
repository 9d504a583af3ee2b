"""The encoder registry: `ENCODERS` maps `model.encoder.type` to a builder.

A builder takes the context `build_model` supplies positionally (the source embedding table and
`model.max_positions`) and the `model.encoder` keys it reads as keyword-only arguments named exactly
like the config keys. Those keyword names are the keys that apply to the type: `seqed.config` reads
them from the signature, so setting any other key for this type is an error, and a new type is one
function and one entry here. `ENCODER_CHOICES` names the registries that own each choice-valued key.
"""

from __future__ import annotations

from torch import nn

from seqed.embeddings import POSITIONS
from seqed.encoders.rnn import RNNEncoder
from seqed.encoders.transformer import CODES, TransformerEncoder
from seqed.layers import CELLS


def build_rnn(embedding: nn.Embedding, max_positions: int, /, *, hidden: int, layers: int, cell: str,
              bidirectional: bool, dropout: float, reverse_source: bool) -> RNNEncoder:
    """A (bi)directional LSTM/GRU encoder; positions are implicit in the recurrence."""
    return RNNEncoder(embedding=embedding, hidden_size=hidden, layers=layers, cell=cell,
                      bidirectional=bidirectional, dropout=dropout, reverse_source=reverse_source)


def build_transformer(embedding: nn.Embedding, max_positions: int, /, *, hidden: int, layers: int, heads: int,
                      ffn: int, dropout: float, attention_dropout: float, positions: str,
                      code: str) -> TransformerEncoder:
    """A pre-norm Transformer encoder of width `hidden`."""
    return TransformerEncoder(embedding=embedding, d_model=hidden, heads=heads, ffn_size=ffn, layers=layers,
                              dropout=dropout, attention_dropout=attention_dropout, positions=positions,
                              max_positions=max_positions, code=code)


ENCODERS = {"rnn": build_rnn, "transformer": build_transformer}

# model.encoder keys whose value names an entry of a module's registry (checked where the key applies)
ENCODER_CHOICES = {"cell": CELLS, "positions": POSITIONS, "code": CODES}
