"""Label-smoothed cross-entropy over non-padding target tokens (Szegedy et al. 2016)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from seqed.vocab import PAD_ID


@dataclass
class LossOutput:
    """Sums over non-padding tokens; divide by `n_tokens` for means.

    Attributes:
        loss: label-smoothed loss, summed (scalar, differentiable).
        nll: negative log-likelihood of the references, summed (scalar, detached).
        n_tokens: number of non-padding target tokens.
    """

    loss: Tensor
    nll: Tensor
    n_tokens: int


def label_smoothed_nll(logits: Tensor, target: Tensor, *, smoothing: float = 0.0,
                       ignore_index: int = PAD_ID) -> LossOutput:
    """Cross-entropy against (1 - eps) * one_hot(target) + eps / V * uniform, ignoring padding.

    loss_i = (1 - eps) * nll_i + eps * mean_v(-log p_v) — the uniform share is spread over all V
    classes (the true class included), as in fairseq's and PyTorch's `label_smoothing`.

    Args:
        logits: (B, T, V) or (N, V) unnormalised scores.
        target: (B, T) or (N,) gold ids.
        smoothing: eps in [0, 1).
        ignore_index: target id that contributes nothing.
    """
    logits = logits.reshape(-1, logits.size(-1))  # (N, V)
    target = target.reshape(-1)  # (N,)
    lprobs = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    keep = target != ignore_index  # (N,)
    nll = -lprobs.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)  # (N,)
    smooth = -lprobs.mean(dim=-1)  # (N,)
    per_token = (1.0 - smoothing) * nll + smoothing * smooth
    zero = per_token.new_zeros(())
    loss = torch.where(keep, per_token, zero).sum()
    nll_sum = torch.where(keep, nll, zero).sum().detach()
    return LossOutput(loss=loss, nll=nll_sum, n_tokens=int(keep.sum()))
