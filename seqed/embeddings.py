"""Position encodings added to token embeddings: fixed sinusoids or a learned table."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqed.dropout import Dropout


def _check_range(name: str, offset: int, length: int, max_positions: int) -> None:
    if offset < 0:
        raise ValueError(f"{name}: offset must be >= 0, got {offset}")
    if offset + length > max_positions:
        raise ValueError(
            f"{name}: positions {offset}..{offset + length - 1} exceed max_positions={max_positions}; "
            f"shorten the sequences (data.max_len) or raise model.max_positions")


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine position encodings (Vaswani et al. 2017, "Attention Is All You Need", sec. 3.5).

    PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(p / 10000^(2i/D)).

    Args:
        dim: encoding size D.
        max_positions: number of positions in the table.
    """

    def __init__(self, dim: int, max_positions: int = 1024):
        super().__init__()
        self.dim = dim
        self.max_positions = max_positions
        position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)  # (P, 1)
        inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        angles = position * inv_freq  # (P, ceil(D/2))
        table = torch.zeros(max_positions, dim)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : dim // 2])
        # Not persistent: a deterministic function of (dim, max_positions), rebuilt on load.
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Encodings for positions offset .. offset+T-1.

        Args:
            x: (B, T, D) the embeddings the encodings will be added to (only its shape and dtype are used).
            offset: position of x[:, 0] (tokens already decoded, in incremental decoding).

        Returns:
            (B, T, D) position encodings (an expanded view, no copy over B).
        """
        B, T, _ = x.shape
        _check_range("SinusoidalPositions", offset, T, self.max_positions)
        return self.table[offset:offset + T].to(x.dtype).unsqueeze(0).expand(B, T, self.dim)  # (B, T, D)


class LearnedPositions(nn.Module):
    """A learned position embedding table (Gehring et al. 2017, "Convolutional Sequence to Sequence Learning").

    Args:
        dim: encoding size D.
        max_positions: number of positions in the table.
    """

    def __init__(self, dim: int, max_positions: int = 1024):
        super().__init__()
        self.dim = dim
        self.max_positions = max_positions
        self.embedding = nn.Embedding(max_positions, dim)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.02)  # as in GPT-2 / nanoGPT

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Encodings for positions offset .. offset+T-1.

        Args:
            x: (B, T, D) the embeddings the encodings will be added to (only its shape is used).
            offset: position of x[:, 0].

        Returns:
            (B, T, D) position encodings (an expanded view, no copy over B).
        """
        B, T, _ = x.shape
        _check_range("LearnedPositions", offset, T, self.max_positions)
        positions = torch.arange(offset, offset + T, device=x.device)  # (T,)
        return self.embedding(positions).unsqueeze(0).expand(B, T, self.dim)  # (B, T, D)


POSITIONS = {"sinusoidal": SinusoidalPositions, "learned": LearnedPositions}


class TokenEmbedding(nn.Module):
    """Token ids -> Transformer inputs: embedding * sqrt(d_model) (Vaswani et al. 2017, sec. 3.4), an
    optional projection when the table is narrower or wider than d_model, position encodings, dropout.

    Args:
        embedding: the (possibly shared) token table, (V, E).
        d_model: model width D.
        positions: "sinusoidal" or "learned" (keys of POSITIONS).
        max_positions: longest sequence the position table covers.
        dropout: dropout on the sum.
    """

    def __init__(self, *, embedding: nn.Embedding, d_model: int, positions: str = "sinusoidal",
                 max_positions: int = 1024, dropout: float = 0.1):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}; choose one of {sorted(POSITIONS)}")
        self.embedding = embedding
        self.scale = math.sqrt(d_model)
        dim = embedding.embedding_dim
        self.project = nn.Linear(dim, d_model, bias=False) if dim != d_model else nn.Identity()
        self.positions = POSITIONS[positions](d_model, max_positions)
        self.dropout = Dropout(dropout)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """Embed tokens (B, T) long, the first one at position `offset` -> (B, T, D)."""
        x = self.project(self.embedding(tokens) * self.scale)  # (B, T, D)
        return self.dropout(x + self.positions(x, offset))
