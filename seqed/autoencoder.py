"""Autoencoder tools on any trained `EncoderDecoder`: codes, corruption, forced completion, sampling,
interpolation (the reconstruction metrics are in `seqed/evaluate.py`).

An autoencoder in seqed is configuration (target = source, a bottleneck, optional noise), so these
functions work on the same model class as translation; `encode_sentences` works on translation
models too.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from seqed.bottleneck import latent_memory
from seqed.data.batching import collate, length_sorted
from seqed.memory import Memory
from seqed.noise import FIRST_WORD_ID, NoiseConfig, Noiser
from seqed.search import Hypothesis, decode
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID


def source_batches(ids: list[list[int]], batch_size: int, max_len: int):
    """Yield (positions, src (B, S)) in length order; sources get EOS appended as in training (what the
    tools below and `seqed.evaluate.variational_report` batch with; search batches in `seqed.decoding`).

    `max_len` counts the pieces kept before EOS.
    """
    for pos in length_sorted([len(x) for x in ids], batch_size):
        src = [ids[i][: max_len] + [EOS_ID] for i in pos]
        yield pos, collate(src, [[] for _ in pos], list(range(len(pos)))).src


@torch.inference_mode()
def encode_sentences(model, tokenizer, sentences: Sequence[str], *, batch_size: int = 128,
                     device: torch.device | str = "cpu", max_len: int = 1022) -> np.ndarray:
    """Fixed codes of sentences, batched by length and returned in input order.

    The code is `model.encode(src).code`: the encoder's code for translation models and the memory
    bottleneck, the projected code for `code`, the posterior mean for `variational` (the model is put
    in eval mode, so nothing is sampled and the result is deterministic).

    Returns:
        (N, C) float32; (0, 0) for no sentences.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    model.eval()
    ids = tokenizer.encode_src(list(sentences))
    out: Optional[np.ndarray] = None
    for pos, src in source_batches(ids, batch_size, max_len):
        code = model.encode(src.to(device)).code.float().cpu().numpy()  # (B, C)
        if out is None:
            out = np.zeros((len(ids), code.shape[1]), dtype=np.float32)
        out[pos] = code
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# corruption (pattern completion)


def corrupt_ids(ids: Sequence[Sequence[int]], noise: NoiseConfig, *, vocab_size: int, seed: int = 1,
                mask_id: int = UNK_ID) -> tuple[list[list[int]], list[list[bool]]]:
    """Corrupt piece-id sentences as training does (the trainer's `Noiser`, mask token UNK).

    Args:
        ids: N sentences of piece ids, without EOS.
        noise: the corruptions.
        vocab_size: source vocabulary size (substitutions draw from it).
        seed: seed of every random draw; the same seed corrupts the same way.
        mask_id: the mask token (training uses UNK_ID).

    Returns:
        noisy: N corrupted id lists, without EOS.
        masked: per sentence and noisy position, True where a mask token or a substitution sits.
    """
    if not ids:
        return [], []
    noiser = Noiser(noise, vocab_size=vocab_size, mask_id=mask_id)
    src = collate([list(x) + [EOS_ID] for x in ids], [[] for _ in ids], list(range(len(ids)))).src  # (N, S)
    noisy, masked = noiser(src, torch.Generator().manual_seed(seed))  # (N, S'), (N, S')
    words = (noisy != PAD_ID) & (noisy != EOS_ID)  # (N, S') corrupted words, EOS and padding removed
    lengths = words.sum(1).tolist()
    rows, flags = noisy.tolist(), masked.tolist()
    return [r[:n] for r, n in zip(rows, lengths)], [f[:n] for f, n in zip(flags, lengths)]


def keeps_positions(noise: NoiseConfig) -> bool:
    """True when corrupted position i still holds (a replacement of) clean word i: mask and substitute
    only, so completion accuracy at the masked positions is defined."""
    return not (noise.drop or noise.infill or noise.shuffle_k)


@torch.inference_mode()
def fill_masked(model, noisy: Sequence[Sequence[int]], masked: Sequence[Sequence[bool]], *,
                batch_size: int = 128, device: torch.device | str = "cpu") -> list[list[int]]:
    """Pattern completion with forced decoding: keep every uncorrupted piece, predict only the masked ones.

    The decoder runs left to right over each corrupted sentence; at an unmasked position it is fed the
    piece that is there, at a masked position it takes its own most probable word (never a special) and
    feeds that on. This is how a masked autoencoder (train.loss_on=masked) is used: it was never
    trained to copy the unmasked pieces or to emit EOS, so free decoding would not be meaningful.
    Needs position-keeping noise (`keeps_positions`).

    Args:
        noisy: N corrupted id lists, without EOS.
        masked: per sentence and position, True where the piece is to be predicted.

    Returns:
        N id lists of the same lengths: the completions.
    """
    model.eval()
    out: list[list[int]] = [[] for _ in noisy]
    for pos, src in source_batches([list(x) for x in noisy], batch_size, 10 ** 9):
        src = src.to(device)  # (B, S) words EOS PAD
        B, S = src.shape
        flags = collate([[int(f) for f in masked[i]] + [0] for i in pos], [[] for _ in pos], pos).src  # (B, S)
        flags = (flags.to(device) != 0) & (src != PAD_ID) & (src != EOS_ID)  # (B, S) bool
        memory = model.encode(src)
        state = model.decoder.init_state(memory)
        prev = torch.full((B,), BOS_ID, dtype=torch.long, device=device)  # (B,)
        filled = src.clone()  # (B, S)
        for t in range(S - 1):  # the last column is EOS or PAD in every row
            logits, state = model.decoder.step(prev, memory, state)  # (B, V)
            logits[:, :FIRST_WORD_ID] = -math.inf  # a masked word is a word, never PAD/UNK/BOS/EOS
            filled[:, t] = torch.where(flags[:, t], logits.argmax(-1), src[:, t])
            prev = filled[:, t]
        for row, i in enumerate(pos):
            out[i] = filled[row, : len(noisy[i])].tolist()
    return out


# ---------------------------------------------------------------------------------------------
# latents: decoding, interpolation


class _FixedMemory:
    """Adapter giving search a model whose `encode` returns a prepared memory (for z from the prior
    or an interpolation), so sampling reuses the ordinary decoding code."""

    def __init__(self, decoder, memory: Memory):
        self.decoder = decoder
        self._memory = memory

    def encode(self, src: Tensor) -> Memory:
        return self._memory


def has_latent(model) -> bool:
    """True for models with a `code` or `variational` bottleneck (a decoder that reads one vector)."""
    return getattr(model, "bottleneck_kind", "memory") in ("code", "variational")


def is_variational(model) -> bool:
    """True for models with a `variational` bottleneck (a latent Gaussian)."""
    return getattr(model, "bottleneck_kind", "memory") == "variational"


@torch.inference_mode()
def decode_latents(model, z: Tensor, *, beam_size: int = 1, max_len: int = 60) -> list[Hypothesis]:
    """Decode latent vectors z (B, Z) with greedy or beam search; returns the best hypothesis of each."""
    if not has_latent(model):
        raise ValueError("this model has no code/variational bottleneck: decoding a latent vector needs one "
                         "(train with model.bottleneck=variational or code)")
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"beam size and max length must be >= 1, got {beam_size} and {max_len}")
    model.eval()
    fake = _FixedMemory(model.decoder, latent_memory(z))
    src = torch.full((z.size(0), 1), EOS_ID, dtype=torch.long, device=z.device)  # (B, 1) for the length limit
    hyps = decode(fake, src, beam_size=beam_size, max_len_a=0.0, max_len_b=max_len, max_len_cap=max_len)
    return [h[0] for h in hyps]


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between a and b (D,) (White 2016, https://arxiv.org/abs/1609.04468);
    linear when they are parallel."""
    an, bn = a / a.norm().clamp(min=1e-12), b / b.norm().clamp(min=1e-12)
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_path(za: Tensor, zb: Tensor, steps: int, *, spherical: bool = False) -> Tensor:
    """`steps` evenly spaced points from za to zb (Z,), both ends included: (steps, Z)."""
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    ts = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device)  # (K,)
    if spherical:
        return torch.stack([slerp(za, zb, float(t)) for t in ts])  # (K, Z)
    return (1 - ts)[:, None] * za + ts[:, None] * zb  # (K, Z)
