"""Autoencoder tools on any trained `EncoderDecoder`: codes, reconstruction metrics, sampling, interpolation.

An autoencoder in seqed is configuration (target = source, a bottleneck, optional noise), so these
functions work on the same model class as translation; `encode_sentences` works on translation
models too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from seqed.data.batching import collate
from seqed.memory import Memory
from seqed.scoring import score
from seqed.search import Hypothesis, beam_search, greedy_search
from seqed.vocab import EOS_ID


def _src_batches(ids: list[list[int]], batch_size: int, max_len: int):
    """Yield (positions, src (B, S)) in length order; sources get EOS appended as in training."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        pos = order[start: start + batch_size]
        src = [ids[i][: max_len] + [EOS_ID] for i in pos]
        yield pos, collate(src, [[] for _ in pos], list(range(len(pos)))).src


@torch.inference_mode()
def encode_sentences(model, tokenizer, sentences: Sequence[str], *, batch_size: int = 128,
                     device: torch.device | str = "cpu", max_len: int = 1022) -> np.ndarray:
    """Fixed codes (N, C) float32, in input order: `memory.code` after the bottleneck (the posterior
    mean for variational models, since the model is in eval mode)."""
    model.eval()
    ids = tokenizer.encode_src(list(sentences))
    out: Optional[np.ndarray] = None
    for pos, src in _src_batches(ids, batch_size, max_len):
        code = model.encode(src.to(device)).code.float().cpu().numpy()  # (B, C)
        if out is None:
            out = np.zeros((len(ids), code.shape[1]), dtype=np.float32)
        out[pos] = code
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


class _FixedMemory:
    """Adapter giving search a model whose `encode` returns a prepared memory (for z from the prior
    or an interpolation), so sampling reuses the ordinary decoding code."""

    def __init__(self, decoder, memory: Memory):
        self.decoder = decoder
        self._memory = memory

    def encode(self, src: Tensor) -> Memory:
        return self._memory


def latent_memory(z: Tensor) -> Memory:
    """A one-slot memory holding latent vectors z (B, Z), as the code/variational bottlenecks build it."""
    return Memory(states=z.unsqueeze(1), mask=torch.ones(z.size(0), 1, dtype=torch.bool, device=z.device), code=z)


@torch.inference_mode()
def decode_latents(model, z: Tensor, *, beam_size: int = 1, max_len: int = 60) -> list[Hypothesis]:
    """Decode latent vectors z (B, Z) with greedy or beam search; returns the best hypothesis of each."""
    if getattr(model, "bottleneck", None) is None:
        raise ValueError("this model has no code/variational bottleneck: sampling needs a latent space "
                         "(train with model.bottleneck=variational)")
    fake = _FixedMemory(model.decoder, latent_memory(z))
    src = torch.full((z.size(0), 1), EOS_ID, dtype=torch.long, device=z.device)
    kwargs = dict(max_len_a=0.0, max_len_b=max_len, max_len_cap=max_len)
    if beam_size == 1:
        hyps = greedy_search(fake, src, **kwargs)
    else:
        hyps = beam_search(fake, src, beam_size=beam_size, **kwargs)
    return [h[0] for h in hyps]


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between a and b (D,) (White 2016); linear when they are parallel."""
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_path(za: Tensor, zb: Tensor, steps: int, *, spherical: bool = False) -> Tensor:
    """`steps` points from za to zb inclusive: (steps, Z)."""
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    ts = torch.linspace(0, 1, steps).tolist()
    if spherical:
        return torch.stack([slerp(za, zb, t) for t in ts])
    return torch.stack([(1 - t) * za + t * zb for t in ts])


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass
class ReconstructionReport:
    token_accuracy: float   # reference tokens (incl. EOS) reproduced at the same position
    exact_match: float      # sentences reproduced exactly, in %
    bleu: float
    chrf: float
    n: int
    by_length: list[dict]   # the same per source-length bucket
    bleu_signature: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _token_stats(hyp_ids: list[list[int]], ref_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sentence: correct positions, reference length (+EOS), exact match (0/1)."""
    correct, total, exact = [], [], []
    for h, r in zip(hyp_ids, ref_ids):
        h2, r2 = list(h) + [EOS_ID], list(r) + [EOS_ID]
        n = min(len(h2), len(r2))
        correct.append(int(np.sum(np.asarray(h2[:n]) == np.asarray(r2[:n]))))
        total.append(len(r2))
        exact.append(int(h == r))
    return np.array(correct), np.array(total), np.array(exact)


def reconstruction_report(hyp_ids: list[list[int]], ref_ids: list[list[int]], hyp_text: list[str],
                          ref_text: list[str], *, buckets: Sequence[int] = (5, 10, 15, 20, 30, 50)
                          ) -> ReconstructionReport:
    """Token accuracy, exact match, BLEU and chrF, overall and by reference length (in pieces)."""
    correct, total, exact = _token_stats(hyp_ids, ref_ids)
    sc = score(hyp_text, ref_text)
    lengths = np.array([len(r) for r in ref_ids])
    edges = [0, *buckets, 10 ** 9]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = np.nonzero((lengths > lo) & (lengths <= hi))[0]
        if len(sel) == 0:
            continue
        bs = score([hyp_text[i] for i in sel], [ref_text[i] for i in sel])
        rows.append({"lengths": f"{lo + 1}-{hi}" if hi < 10 ** 9 else f">{lo}", "n": int(len(sel)),
                     "token_accuracy": round(100 * correct[sel].sum() / total[sel].sum(), 2),
                     "exact_match": round(100 * exact[sel].mean(), 2), "bleu": bs.bleu, "chrf": bs.chrf})
    return ReconstructionReport(token_accuracy=round(100 * correct.sum() / max(total.sum(), 1), 2),
                                exact_match=round(100 * exact.mean(), 2) if len(exact) else 0.0,
                                bleu=sc.bleu, chrf=sc.chrf, n=len(ref_ids), by_length=rows,
                                bleu_signature=sc.bleu_signature)


@torch.inference_mode()
def variational_report(model, tokenizer, sentences: Sequence[str], *, batch_size: int = 128,
                       device: torch.device | str = "cpu", active_threshold: float = 0.01) -> dict:
    """Per-sentence KL, reconstruction NLL (one posterior sample, seeded) and ELBO = -(NLL + KL), and
    active units: latent dimensions whose posterior mean varies across the data by more than
    `active_threshold` (Burda et al. 2016)."""
    from seqed.losses import label_smoothed_nll

    if getattr(model, "bottleneck", None) is None or not hasattr(model.bottleneck, "posterior"):
        raise ValueError("variational metrics need a model trained with model.bottleneck=variational")
    model.eval()
    ids = tokenizer.encode_src(list(sentences))
    kl_sum, nll_sum, mus = 0.0, 0.0, []
    gen_state = torch.get_rng_state()
    torch.manual_seed(0)
    for pos, src in _src_batches(ids, batch_size, 1022):
        src = src.to(device)
        memory = model.encoder(src)
        enc = model.bottleneck(memory, sample=True)
        tgt = [ids[i][:1022] for i in pos]
        batch = collate(tgt, tgt, list(range(len(pos))))
        out = model.decoder(batch.tgt_in.to(device), enc.memory)
        nll_sum += float(label_smoothed_nll(out.logits, batch.tgt_out.to(device)).nll)
        kl_sum += float(enc.kl_raw)
        mus.append(enc.mu.float().cpu())
    torch.set_rng_state(gen_state)
    mu = torch.cat(mus)  # (N, Z)
    var = mu.var(dim=0, unbiased=True) if mu.size(0) > 1 else torch.zeros(mu.size(1))
    n = max(len(ids), 1)
    return {"kl": kl_sum / n, "nll": nll_sum / n, "elbo": -(kl_sum + nll_sum) / n,
            "active_units": int((var > active_threshold).sum()), "latent_dim": int(mu.size(1)), "n": len(ids)}
