"""Evaluation: the validation a training run does, and an autoencoder's reconstruction metrics.

`validate` computes validation loss (and KL for variational models) and, optionally, BLEU/chrF of
decoded output; `reconstruction_report`, `completion_accuracy` and `variational_report` score how well an
autoencoder rebuilds (or completes) its input (`seqed evaluate`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from seqed.autoencoder import is_variational, source_batches
from seqed.data.batching import TokenBatchSampler, collate
from seqed.losses import label_smoothed_nll
from seqed.scoring import score
from seqed.vocab import EOS_ID


@torch.no_grad()
def validate(model, data, *, device: torch.device, max_tokens: int = 2048,
             autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             translator=None, sources: Sequence[str] = (), references: Sequence[str] = ()) -> dict:
    """Validation loss and, with a translator, BLEU/chrF of its output.

    Args:
        model: an `EncoderDecoder`, put in eval mode.
        data: the validation set (`.lengths()`, `.batch(idx)`; see `seqed.data.pipeline`).
        device: where the model lives.
        max_tokens: tokens per validation batch.
        autocast: a context factory for mixed precision (the training run's).
        translator: decodes `sources` (a `Translator` over `model`, in its own precision), or None for
            loss only.
        sources, references: raw validation text for BLEU/chrF.

    Returns:
        {"valid_nll": per target token, "valid_ppl", and for variational models "valid_kl" (nats per
        sentence) and "valid_active_units" (see `active_units`); with a translator also "valid_bleu",
        "valid_chrf"}.
    """
    model.eval()
    src_lens, tgt_lens = data.lengths()
    sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens=max_tokens, shuffle=False, seed=0)
    nll = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one read at the end
    kl = torch.zeros((), dtype=torch.float64, device=device)
    n, n_kl, mus = 0, 0, []
    for idx in sampler.batches(0):
        batch = data.batch(idx)
        n += batch.n_tgt_tokens
        batch = batch.to(device)
        with autocast():
            out = model(batch.src, batch.tgt_in)
        nll += label_smoothed_nll(out.logits, batch.tgt_out, smoothing=0.0).nll.double()
        if out.kl is not None:  # variational bottleneck: KL(q(z|x) || p(z)) summed over the batch
            kl += out.kl.double()
            n_kl += batch.src.size(0)
            mus.append(out.mu.float())
    result: dict = {"valid_nll": float(nll) / max(n, 1)}
    result["valid_ppl"] = math.exp(min(result["valid_nll"], 50))
    if n_kl:
        result["valid_kl"] = float(kl) / n_kl
        result["valid_active_units"] = active_units(torch.cat(mus))
    if translator is not None and sources:
        hyps = [h[0][0] for h in translator.translate_text(list(sources))]
        sc = score(hyps, list(references))
        result.update(valid_bleu=sc.bleu, valid_chrf=sc.chrf)
    return result


class Validator:
    """A training run's validation policy: what to compute (BLEU at every `train.valid_bleu_every`-th
    validation and at the last, loss only between) and which result is the best so far.

    Args:
        cfg: the run's config.
        data: the run's data (`.valid`, `.valid_src`, `.valid_ref`; see `seqed.data.pipeline`).
        tokenizer: for decoding the validation sources.
        device: where the model lives.
        precision: the run's resolved precision (`seqed.precision.resolve`), which the BLEU decoding uses.
    """

    def __init__(self, cfg, data, tokenizer, device: torch.device, *, precision: str = "fp32"):
        self.cfg, self.data, self.tokenizer, self.device = cfg, data, tokenizer, device
        self.precision = precision
        t = cfg.train
        self.bleu = bool(t.valid_bleu and data.valid_src)
        self.metric = "valid_bleu" if self.bleu and t.early_stop_metric == "bleu" else "valid_nll"

    def __call__(self, model, state, *, autocast, final: bool = False) -> dict:
        """Validate `model` at `state.step` (a `TrainState`; its history counts the validations so far)."""
        from seqed.bottleneck import kl_weight
        from seqed.decoding import SearchSettings
        from seqed.translator import Translator

        t, s = self.cfg.train, self.cfg.search
        result: dict = {"step": state.step}
        if self.data.valid is None:
            return result
        number = sum("valid_nll" in h for h in state.history) + 1
        translator = None
        if self.bleu and (final or number % t.valid_bleu_every == 0):
            settings = SearchSettings.from_config(s, beam=t.valid_beam, nbest=1,
                                                  max_src_len=self.cfg.model.max_pieces,
                                                  max_len_cap=self.cfg.model.max_output_len)
            # the Translator's fp16 needs CUDA: an fp16 run on a CPU decodes in fp32
            translator = Translator(model, self.tokenizer, settings, device=self.device,
                                    precision="fp32" if self.precision == "fp16" and self.device.type != "cuda"
                                    else self.precision)
        result.update(validate(model, self.data.valid, device=self.device, autocast=autocast,
                               max_tokens=max(t.max_tokens, 2048), translator=translator,
                               sources=self.data.valid_src, references=self.data.valid_ref))
        if "valid_kl" in result:
            result["kl_weight"] = kl_weight(state.step, kind=t.kl_anneal, steps=t.kl_anneal_steps,
                                            cycles=t.kl_cycles)
        return result

    def improved(self, result: dict, state) -> Optional[bool]:
        """Update `state.best` (higher is better: BLEU, or -nll); None when `result` cannot be compared (a
        loss-only validation between BLEU ones decides nothing), True when there is no validation data."""
        if self.metric not in result:
            return None if self.data.valid is not None else True
        value = result[self.metric] if self.metric == "valid_bleu" else -result[self.metric]
        if state.best is None or value > state.best:
            state.best = value
            return True
        return False


def completion_accuracy(hyp_ids: Sequence[Sequence[int]], ref_ids: Sequence[Sequence[int]],
                        masked: Sequence[Sequence[bool]]) -> Optional[float]:
    """Percentage of masked (or substituted) positions whose reconstruction is the clean piece.

    Only meaningful for position-keeping noise (`keeps_positions`): masked[b][i] refers to ref_ids[b][i].
    Returns None when nothing was masked.
    """
    hits = total = 0
    for h, r, m in zip(hyp_ids, ref_ids, masked):
        where = np.flatnonzero(np.asarray(m, dtype=bool)[: len(r)])
        if len(where) == 0:
            continue
        hyp = np.full(len(r), -1, dtype=np.int64)
        n = min(len(h), len(r))
        hyp[:n] = np.asarray(h[:n], dtype=np.int64)
        hits += int((hyp[where] == np.asarray(r, dtype=np.int64)[where]).sum())
        total += len(where)
    return round(100 * hits / total, 2) if total else None


@dataclass
class ReconstructionReport:
    token_accuracy: float   # reference tokens (incl. EOS) reproduced at the same position, in %
    exact_match: float      # sentences reproduced exactly (same piece ids), in %
    bleu: float
    chrf: float
    n: int
    by_length: list[dict]   # the same per reference-length bucket (pieces)
    bleu_signature: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _token_stats(hyp_ids: Sequence[Sequence[int]], ref_ids: Sequence[Sequence[int]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sentence: positions where hyp+EOS equals ref+EOS, reference length (+EOS), exact match (0/1)."""
    n = len(ref_ids)
    hyp_len = np.array([len(h) for h in hyp_ids], dtype=np.int64)
    ref_len = np.array([len(r) for r in ref_ids], dtype=np.int64)
    width = int(max(hyp_len.max(initial=0), ref_len.max(initial=0))) + 1
    cols = np.arange(width)

    def padded(seqs, lengths, fill):
        out = np.full((n, width), fill, dtype=np.int64)  # (N, W)
        out[cols[None, :] < lengths[:, None]] = np.fromiter((t for s in seqs for t in s), dtype=np.int64,
                                                             count=int(lengths.sum()))
        out[np.arange(n), lengths] = EOS_ID
        return out

    hyp, ref = padded(hyp_ids, hyp_len, -1), padded(ref_ids, ref_len, -2)  # (N, W) each
    correct = ((hyp == ref) & (cols[None, :] <= ref_len[:, None])).sum(1)  # (N,)
    exact = ((hyp_len == ref_len) & (correct == ref_len + 1)).astype(np.int64)
    return correct, ref_len + 1, exact


def reconstruction_report(hyp_ids: Sequence[Sequence[int]], ref_ids: Sequence[Sequence[int]],
                          hyp_text: Sequence[str], ref_text: Sequence[str], *,
                          buckets: Sequence[int] = (5, 10, 15, 20, 30, 50)) -> ReconstructionReport:
    """Token accuracy, exact match, BLEU and chrF, overall and by reference length (in pieces).

    Raises:
        ValueError: no sentences, or lists of different lengths.
    """
    if not ref_ids:
        raise ValueError("no sentences to evaluate: the input holds no non-empty line")
    if not len(hyp_ids) == len(ref_ids) == len(hyp_text) == len(ref_text):
        raise ValueError(f"{len(hyp_ids)} hypotheses but {len(ref_ids)} references; they must match")
    correct, total, exact = _token_stats(hyp_ids, ref_ids)
    sc = score(hyp_text, ref_text)
    lengths = total - 1
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
    return ReconstructionReport(token_accuracy=round(100 * correct.sum() / total.sum(), 2),
                                exact_match=round(100 * exact.mean(), 2),
                                bleu=sc.bleu, chrf=sc.chrf, n=len(ref_ids), by_length=rows,
                                bleu_signature=sc.bleu_signature)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean mu (N, Z) varies across the N sentences by more than
    `threshold` (Burda et al. 2016, https://arxiv.org/abs/1509.00519, sec. 5.2); 0 for one sentence."""
    if mu.size(0) < 2:
        return 0
    return int((mu.float().var(dim=0, unbiased=True) > threshold).sum())


@torch.inference_mode()
def variational_report(model, tokenizer, sentences: Sequence[str], *, batch_size: int = 128,
                       device: torch.device | str = "cpu", active_threshold: float = 0.01,
                       max_len: int = 1022, seed: int = 0) -> dict:
    """KL, reconstruction NLL and ELBO of a variational autoencoder, and its active units.

    Per sentence, in nats: KL(q(z|x) || N(0, I)) in closed form; NLL = -log p(x|z) for one posterior
    sample z (seeded, so the report is reproducible); ELBO = -(NLL + KL), a lower bound on log p(x).
    Active units: latent dimensions whose posterior mean varies across the data by more than
    `active_threshold` (Burda et al. 2016, https://arxiv.org/abs/1509.00519, sec. 5.2).
    """
    from seqed.losses import label_smoothed_nll

    if not is_variational(model):
        raise ValueError("variational metrics need a model trained with model.bottleneck=variational")
    model.eval()
    ids = tokenizer.encode_src(list(sentences))
    if not ids:
        raise ValueError("no sentences to evaluate")
    kl_sum, nll_sum, mus = 0.0, 0.0, []
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for pos, src in source_batches(ids, batch_size, max_len):
            src = src.to(device)
            enc = model.bottleneck(model.encoder(src), sample=True)
            tgt = [ids[i][:max_len] for i in pos]
            batch = collate(tgt, tgt, list(range(len(pos))))
            out = model.decoder(batch.tgt_in.to(device), enc.memory)
            nll_sum += float(label_smoothed_nll(out.logits, batch.tgt_out.to(device)).nll)
            kl_sum += float(enc.kl_raw)
            mus.append(enc.mu.float().cpu())
    finally:
        torch.set_rng_state(gen_state)
    mu = torch.cat(mus)  # (N, Z)
    n = len(ids)
    return {"kl": kl_sum / n, "nll": nll_sum / n, "elbo": -(kl_sum + nll_sum) / n,
            "active_units": active_units(mu, active_threshold), "latent_dim": int(mu.size(1)), "n": n}
