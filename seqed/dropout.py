"""Dropout (Srivastava et al. 2014) that is fast on CPU as well as on GPU.

On CPU, `F.dropout` draws its mask with `bernoulli_`, which measured 1.2-1.3x slower (forward +
backward) than comparing a uniform draw against p (`benchmarks/micro_cpu.py`, benchmarks/README.md);
on CUDA the fused kernel is used.
"""

from __future__ import annotations

import torch.nn.functional as F
import torch
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p) (training only)."""
    if not training or p == 0.0:
        return x
    if x.is_cuda or p >= 1.0:
        return F.dropout(x, p, True)
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))


class Dropout(nn.Module):
    """`nn.Dropout` with the faster CPU mask; same semantics."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
