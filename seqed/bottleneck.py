"""Bottlenecks between encoder and decoder: what of the source the decoder may see.

* ``memory``: every encoder state (attention's easy upper bound); the identity.
* ``code``: the hourglass. The decoder sees only the fixed code, projected to `code_dim`, as a
  single memory slot (and as the initial state of RNN decoders): all information passes the chokepoint.
* ``variational``: a diagonal Gaussian posterior q(z|x) from the code, a reparameterised sample z,
  and KL(q || N(0, I)) with optional free bits (Kingma & Welling 2014; Bowman et al. 2016,
  https://arxiv.org/abs/1511.06349; Kingma et al. 2016 for free bits). At eval time z is the
  posterior mean and the KL is the plain KL: free bits shape the training objective only.

`kl_weight` is the KL annealing schedule the trainer multiplies the KL term by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from seqed.memory import Memory

BOTTLENECKS = ("memory", "code", "variational")
KL_ANNEALS = ("none", "linear", "cyclical")  # see kl_weight


@dataclass
class BottleneckOutput:
    """Attributes:
        memory: what the decoder sees.
        kl: KL(q(z|x) || p(z)) summed over the batch (scalar), with free bits in training mode, or None.
        kl_raw: the same without free bits (for reporting), or None.
        mu, logvar: posterior parameters (B, Z), or None.
    """

    memory: Memory
    kl: Optional[Tensor] = None
    kl_raw: Optional[Tensor] = None
    mu: Optional[Tensor] = None
    logvar: Optional[Tensor] = None


class Identity(nn.Module):
    """The `memory` bottleneck: the decoder sees every encoder state (`build_model` drops it)."""

    def __init__(self, code_size: int):
        super().__init__()
        self.output_size = None  # memory size unchanged
        self.code_size = code_size

    def forward(self, memory: Memory) -> BottleneckOutput:
        return BottleneckOutput(memory)


def latent_memory(code: Tensor) -> Memory:
    """A memory of one slot holding a code or latent (B, C): states (B, 1, C), mask (B, 1) all True."""
    return Memory(states=code.unsqueeze(1), mask=torch.ones(code.size(0), 1, dtype=torch.bool,
                                                             device=code.device), code=code)


class CodeBottleneck(nn.Module):
    """Project the encoder's code (B, C_in) to (B, code_dim) through tanh; hide the per-token states."""

    def __init__(self, code_size: int, code_dim: int):
        super().__init__()
        self.proj = nn.Linear(code_size, code_dim)
        self.output_size = code_dim
        self.code_size = code_dim

    def forward(self, memory: Memory) -> BottleneckOutput:
        code = torch.tanh(self.proj(memory.code))  # (B, Z)
        return BottleneckOutput(latent_memory(code))


class VariationalBottleneck(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar))) from the code; z feeds the decoder as a one-slot memory.

    Args:
        code_size: width C of the encoder's code.
        code_dim: latent size Z.
        free_bits: KL floor per latent dimension in nats (0 = off), applied in training only.
    """

    def __init__(self, code_size: int, code_dim: int, free_bits: float = 0.0):
        super().__init__()
        if free_bits < 0:
            raise ValueError(f"VariationalBottleneck: free_bits must be >= 0, got {free_bits}")
        self.to_stats = nn.Linear(code_size, 2 * code_dim)
        self.free_bits = free_bits
        self.output_size = code_dim
        self.code_size = code_dim

    def posterior(self, code: Tensor) -> tuple[Tensor, Tensor]:
        """code (B, C) -> mu, logvar, each (B, Z); logvar clamped to [-10, 10] for stability."""
        mu, logvar = self.to_stats(code).chunk(2, dim=-1)  # (B, Z) each
        return mu, logvar.clamp(-10.0, 10.0)

    def forward(self, memory: Memory, sample: Optional[bool] = None) -> BottleneckOutput:
        """Posterior, latent and KL of a batch.

        Args:
            memory: the encoder's output; only `memory.code` (B, C) is read.
            sample: draw z ~ q(z|x) (True) or take z = mu (False); default: sample in training mode.

        Returns:
            memory: one slot holding z, states (B, 1, Z); kl: the KL term the loss adds (free bits
            in training mode); kl_raw: the plain KL, detached; mu, logvar (B, Z).
        """
        mu, logvar = self.posterior(memory.code)
        sample = self.training if sample is None else sample
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        # KL(N(mu, sigma^2) || N(0, 1)) per dimension, closed form (Kingma & Welling 2014, appendix B).
        kl_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, Z)
        kl_raw = kl_dim.sum()
        if self.free_bits > 0 and self.training:
            # Free bits per dimension, on the batch mean (Kingma et al. 2016): no gradient pushes a
            # dimension's KL below the floor, which keeps the decoder from ignoring z.
            per_dim = kl_dim.mean(0).clamp(min=self.free_bits)  # (Z,)
            kl = per_dim.sum() * mu.size(0)
        else:
            kl = kl_raw
        return BottleneckOutput(latent_memory(z), kl=kl, kl_raw=kl_raw.detach(), mu=mu, logvar=logvar)


def build_bottleneck(kind: str, *, code_size: int, code_dim: int, free_bits: float = 0.0) -> nn.Module:
    """One of BOTTLENECKS over an encoder code of width `code_size`; `code_dim` sizes code/latent."""
    if kind == "memory":
        return Identity(code_size)
    if kind == "code":
        return CodeBottleneck(code_size, code_dim)
    if kind == "variational":
        return VariationalBottleneck(code_size, code_dim, free_bits)
    raise ValueError(f"unknown bottleneck {kind!r}: use one of {', '.join(BOTTLENECKS)}")


def kl_weight(step: int, *, kind: str = "linear", steps: int = 1000, cycles: int = 4, ratio: float = 0.5) -> float:
    """KL annealing weight beta(step) in [0, 1].

    * ``none``: 1.
    * ``linear``: min(1, step / steps) (Bowman et al. 2016).
    * ``cyclical``: `cycles` cycles over `steps`; within each, beta rises linearly over the first
      `ratio` of the cycle and stays at 1 (Fu et al. 2019). After `steps`, 1.
    """
    if kind not in KL_ANNEALS:
        raise ValueError(f"unknown KL annealing {kind!r}: use one of {', '.join(KL_ANNEALS)}")
    if kind == "none" or steps <= 0 or step >= steps:
        return 1.0
    if kind == "linear":
        return max(0.0, step / steps)
    if cycles < 1 or not 0.0 < ratio <= 1.0:
        raise ValueError(f"cyclical KL annealing needs cycles >= 1 and 0 < ratio <= 1, got cycles={cycles}, "
                         f"ratio={ratio}")
    period = steps / cycles
    phase = (step % period) / period  # in [0, 1)
    return min(1.0, phase / ratio)
