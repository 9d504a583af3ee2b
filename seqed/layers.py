"""The layers encoders and decoders share: the Transformer's multi-head attention, feed-forward block
and attention mask, and the recurrent pieces (`CELLS`, `run_rnn`, `reverse_padded`).

The Transformer encoder (`seqed/encoders/transformer.py`) and decoder (`seqed/decoders/transformer.py`)
build on the first; the RNN encoder and decoder (`seqed/encoders/rnn.py`, `seqed/decoders/rnn.py`) and
the ensemble on the second. The recurrent attentions (Bahdanau, Luong) live in `seqed/attention.py`.

Attention kernels are chosen on purpose (`attention_backends`):
* CPU, training: the math SDPA backend beat the flash kernel for these short sequences (3.6x in bf16,
  1.5x in fp32, forward + backward; `benchmarks/micro_cpu.py`).
* CPU, one query per row (an incremental decoding step): plain matmuls beat both SDPA kernels at
  beam-search shapes (`benchmarks/micro_cpu.py`). The same path serves a few queries per row at
  inference: the K beams of a sentence attending to its memory together (`TransformerState.group`).
* CUDA: every backend except cuDNN. In bf16 on Hopper, PyTorch prefers cuDNN attention, which builds an
  execution graph for each new shape; incremental decoding has a new key length every step and a new
  source length every batch, so graphs were rebuilt again and again: beam-5 decoding of test2016 ran at
  106 sentences/s in bf16 against 1,414 in fp32 (H200, torch 2.11, main at 589e113, torch profiler:
  `aten::_cudnn_attention_forward`). Flash and memory-efficient attention need no per-shape setup.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from seqed.dropout import Dropout
from seqed.precision import cpu_lacks_native

# Backends SDPA may use on CUDA: all but cuDNN (see the module docstring), best first.
CUDA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_backends(device_type: str, *, queries: int, dropout: float,
                       causal: bool = False) -> Optional[list[SDPBackend]]:
    """The SDPA backends to allow for one attention call, or None for the explicit matmul path.

    Args:
        device_type: "cpu", "cuda", ...
        queries: T, the number of query positions (1 in an incremental decoding step; the beam size
            when the beams of a sentence attend to its memory together).
        dropout: attention dropout in effect (0 at inference).
        causal: SDPA's is_causal is asked for (the explicit path takes the causal mask only as a mask).
    """
    if device_type == "cpu":
        if dropout == 0.0 and (queries == 1 or (queries <= 16 and not causal and not torch.is_grad_enabled())):
            return None
        return [SDPBackend.MATH]
    if device_type == "cuda":
        return CUDA_BACKENDS
    return [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]


def key_mask(mask: Tensor) -> Tensor:
    """A (B, S) padding mask, True at real tokens -> (B, 1, 1, S), broadcastable over heads and queries."""
    return mask[:, None, None, :]


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
        backends = attention_backends(q.device.type, queries=T, dropout=dropout, causal=is_causal)
        if need_weights or backends is None:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, h, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).nan_to_num(0.0)  # masked rows -> 0, like SDPA
            weights = probs.mean(dim=1) if need_weights else None  # (B, T, S)
            y = F.dropout(probs.to(v.dtype), p=dropout, training=self.training) @ v  # (B, h, T, dh)
        else:  # the kernels chosen in attention_backends, for the reasons in the module docstring
            with sdpa_kernel(backends):
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


# -- recurrent layers ----------------------------------------------------------------------------------
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def check_cell(name: str, cell: str) -> None:
    """Raise a clear ValueError unless `cell` is a known recurrent cell."""
    if cell not in CELLS:
        raise ValueError(f"{name}: unknown cell {cell!r}; use one of {', '.join(CELLS)}")


def run_rnn(rnn, x, hx=None):
    """Call `rnn(x, hx)`, in fp32 when CPU autocast asks for a precision this CPU's RNN kernels lack.

    Args:
        rnn: an nn.LSTM or nn.GRU, or a function with its call signature.
        x: (B, T, I) tensor or a PackedSequence.
        hx: the initial state: (L*D, B, H), an (h, c) pair of those for LSTMs, or None.

    Returns:
        What `rnn` returns; the fp32 fallback's outputs stay fp32 (autocast casts them where needed).
    """
    if (x.data.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and cpu_lacks_native(torch.get_autocast_dtype("cpu"))):
        with torch.autocast("cpu", enabled=False):
            x = x.float()
            if isinstance(hx, tuple):
                hx = tuple(h.float() for h in hx)
            elif hx is not None:
                hx = hx.float()
            return rnn(x, hx)
    return rnn(x, hx)


def reverse_padded(tokens: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `lengths[b]` entries; the right padding stays where it is.

    Args:
        tokens: (B, S, ...) right-padded rows.
        lengths: (B,) long, real entries per row.

    Returns:
        (B, S, ...) with row b = tokens[b, L_b-1], ..., tokens[b, 0], then the padding unchanged.
    """
    B, S = tokens.shape[:2]
    pos = torch.arange(S, device=tokens.device).expand(B, S)  # (B, S)
    lengths = lengths.to(tokens.device).unsqueeze(1)  # (B, 1)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (B, S)
    idx = idx.view(B, S, *([1] * (tokens.dim() - 2))).expand_as(tokens)  # (B, S, ...)
    return tokens.gather(1, idx)
