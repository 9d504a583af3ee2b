"""`Translator`: sentences in, hypotheses out (tokenise, sort by length, batch, search, restore order)."""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from seqed import precision as prec
from seqed.alignment import attention_enabled, hard_alignment, reading_order
from seqed.data.batching import length_sorted
from seqed.search import Hypothesis, decode
from seqed.vocab import EOS_ID, PAD_ID


def parse_sampling(spec: str) -> dict:
    """``"topk=K"`` (K >= 1) or ``"topp=P"`` (0 < P <= 1) -> `seqed.search.sample_search` keywords.

    ``topk=1`` is greedy; sample from the whole distribution with ``topp=1``.
    """
    name, sep, value = str(spec).partition("=")
    try:
        if sep and name.strip() == "topk" and int(value) >= 1:
            return {"top_k": int(value)}
        if sep and name.strip() == "topp" and 0.0 < float(value) <= 1.0:
            return {"top_p": float(value)}
    except ValueError:
        pass
    raise ValueError(f"sampling must be 'topk=K' with an integer K >= 1 or 'topp=P' with 0 < P <= 1, "
                     f"got {spec!r}")


class TextOutput:
    """Text out of any translator with `translate(sentences) -> list[list[Hypothesis]]` and a `tokenizer`
    (`Translator`, `seqed.translator_ct2.CTranslate2Translator`)."""

    def translate_text(self, sentences: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Translate `sentences` to detokenized strings.

        Returns:
            One list per sentence, in input order, of (text, score) pairs, best first.
        """
        hyps = self.translate(sentences)
        return [[(text, h.score) for text, h in zip(texts, per_sentence)]
                for texts, per_sentence in zip(self.detokenize(hyps), hyps)]

    def detokenize(self, hyps: Sequence[Sequence[Hypothesis]]) -> list[list[str]]:
        """The text of every hypothesis, in the same nesting (one tokenizer call for all)."""
        flat = [h.tokens for per_sentence in hyps for h in per_sentence]
        texts = iter(self.tokenizer.decode_tgt(flat) if flat else [])
        return [[next(texts) for _ in per_sentence] for per_sentence in hyps]


class Translator(TextOutput):
    """Translate sentences with a trained model and its tokenizer.

    Sources are encoded, EOS appended (as in training), sorted by length so each batch holds sentences
    of similar length, decoded with `beam_search` (`greedy_search` when beam_size is 1, `sample_search`
    with `sampling`), and returned in input order. Empty lines give one empty hypothesis (score 0)
    without running the model.

    Args:
        model: has ``encode`` and ``decoder.init_state`` / ``decoder.step``, e.g. an `EncoderDecoder` or
            a `seqed.ensemble.Ensemble`; an ``nn.Module`` is moved to `device` and put in eval mode.
        tokenizer: has ``encode_src(list[str]) -> list[list[int]]`` and
            ``decode_tgt(list[list[int]]) -> list[str]``.
        device: where search runs.
        beam_size: beams per sentence; 1 runs greedy search (ignored when sampling).
        nbest: hypotheses returned per sentence (<= beam_size); with `sampling`, independent samples
            per sentence (any number).
        length_penalty: GNMT alpha for beam search (see `seqed.search.LengthPenalty`).
        max_len_a, max_len_b: output length limit ``a * |src| + b`` (|src| counts EOS).
        min_len: fewest output tokens before EOS.
        batch_size: sentences per search batch.
        max_src_len: longest source, EOS included; longer ones are truncated with a warning.
        progress: show a tqdm bar, one tick per batch.
        max_len_cap: hard cap on output length (keep it within a decoder's position table).
        precision: "auto" (bf16 where the device has native bf16 kernels, else fp32; see
            `seqed.precision`), "fp32", or "bf16" / "fp16": search runs a copy of the model cast to that
            dtype, under autocast (bf16: CPUs with AVX512-BF16 or AMX, and GPUs; an explicit bf16 on a
            CPU that emulates it warns once; fp16: GPUs only). Scores are always normalised in fp32.
            `self.precision` holds the resolved choice.
        sampling: None (search), or sample instead: "topk=K" or "topp=P" (see `parse_sampling` and
            `seqed.search.Sampler`).
        temperature: sampling temperature T > 0 (with `sampling` only).
        seed: seed of the sampling generator (with `sampling` only): the same seed, inputs and
            batch_size give the same samples from one Translator's first call on; None draws a seed.
        alignment: fill each hypothesis's `alignment` (see `seqed.alignment`); costs the attention
            bookkeeping, so off by default. Raises ValueError at the first batch for a decoder without
            attention.
    """

    def __init__(self, model, tokenizer, *, device="cpu", beam_size: int = 5, nbest: int = 1,
                 length_penalty: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10, min_len: int = 0,
                 batch_size: int = 64, max_src_len: int = 1024, progress: bool = False,
                 max_len_cap: int = 512, precision: str = "auto", sampling: Optional[str] = None,
                 temperature: float = 1.0, seed: Optional[int] = None, alignment: bool = False):
        if beam_size < 1:
            raise ValueError(f"Translator: beam_size must be >= 1, got {beam_size}")
        self.sampling = None if sampling is None else parse_sampling(sampling)
        if self.sampling is None and (temperature != 1.0 or seed is not None):
            raise ValueError("Translator: temperature and seed apply to sampling only; give sampling='topk=K' "
                             "or 'topp=P'")
        if self.sampling is not None and nbest < 1:
            raise ValueError(f"Translator: nbest (samples per sentence) must be >= 1, got {nbest}")
        if not temperature > 0:
            raise ValueError(f"Translator: temperature must be > 0, got {temperature}; greedy search "
                             f"(beam_size=1, no sampling) is the T -> 0 limit")
        if self.sampling is None and not 1 <= nbest <= beam_size:
            raise ValueError(f"Translator: need 1 <= nbest <= beam_size, got nbest={nbest}, "
                             f"beam_size={beam_size}; raise beam_size for an n-best list")
        if batch_size < 1:
            raise ValueError(f"Translator: batch_size must be >= 1, got {batch_size}")
        if max_src_len < 2:
            raise ValueError(f"Translator: max_src_len must leave room for a token and EOS (>= 2), "
                             f"got {max_src_len}")
        if precision not in prec.CHOICES:
            raise ValueError(f"Translator: precision must be one of {', '.join(prec.CHOICES)}, got {precision!r}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("Translator: fp16 needs a CUDA device; use bf16 (or fp32) on the CPU")
        self.precision = precision = prec.resolve(precision, self.device)
        prec.warn_if_emulated(precision, self.device)
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
            if prec.DTYPES[precision] is not None:
                # Autocast would cast every fp32 weight again at every op of every decoding step: cast a
                # copy once (the caller's model stays as it is). Autocast still runs the ops it keeps in
                # fp32 (layer norm, softmax) in fp32; search normalises scores in fp32.
                model = copy.deepcopy(model).to(prec.DTYPES[precision])
        self.model = model
        self.tokenizer = tokenizer
        self.beam_size = beam_size
        self.nbest = nbest
        self.length_penalty = length_penalty
        self.limits = dict(max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len, max_len_cap=max_len_cap)
        self.batch_size = batch_size
        self.max_src_len = max_src_len
        self.progress = progress
        self.alignment = alignment
        self.generator = None
        if self.sampling is not None:
            self.sampling["temperature"] = temperature
            self.generator = torch.Generator(device=self.device)
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed)

    def translate(self, sentences: Sequence[str]) -> list[list[Hypothesis]]:
        """Translate `sentences` to target ids.

        Returns:
            One list per sentence, in input order: `nbest` hypotheses, best first (one empty
            hypothesis for an empty line).
        """
        sentences = list(sentences)
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        ids = self.tokenizer.encode_src([sentences[i] for i in todo]) if todo else []
        results = [[self._empty()] for _ in sentences]
        for i, hyps in zip(todo, self.translate_ids(ids)):
            results[i] = hyps
        return results

    def translate_ids(self, ids: Sequence[Sequence[int]]) -> list[list[Hypothesis]]:
        """Like `translate`, from source piece ids (no EOS); an empty id list gives an empty hypothesis."""
        results = [[self._empty()] for _ in ids]
        todo = [i for i, x in enumerate(ids) if len(x)]
        sources = self._sources([list(ids[i]) for i in todo])
        batches = length_sorted([len(x) for x in sources], self.batch_size, longest_first=True)
        with tqdm(total=len(batches), disable=not self.progress, desc="translate", unit="batch") as bar:
            for batch in batches:
                src = pad_sequence([sources[j] for j in batch], batch_first=True, padding_value=PAD_ID)  # (B, S)
                for j, hyps in zip(batch, self._search(src.to(self.device))):
                    results[todo[j]] = hyps
                bar.update(1)
        return results

    def _empty(self) -> Hypothesis:
        return Hypothesis(tokens=[], score=0.0, log_prob=0.0, alignment=[] if self.alignment else None)

    def _sources(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """Source ids + EOS as (S_i,) long tensors, truncated to `max_src_len` with a warning."""
        keep = self.max_src_len - 1
        n_long = sum(len(s) > keep for s in ids)
        if n_long:
            warnings.warn(f"Translator: {n_long} source sentence(s) longer than max_src_len={self.max_src_len} "
                          f"tokens (EOS included) were truncated; raise max_src_len to keep them whole",
                          stacklevel=3)
        return [torch.tensor(s[:keep] + [EOS_ID], dtype=torch.long) for s in ids]

    def _search(self, src: torch.Tensor) -> list[list[Hypothesis]]:
        attention = attention_enabled(self.model) if self.alignment else contextlib.nullcontext()
        with prec.autocast(self.precision, self.device), attention:
            results = decode(self.model, src, beam_size=self.beam_size, nbest=self.nbest,
                             length_penalty=self.length_penalty, sampling=self.sampling, generator=self.generator,
                             **self.limits)
        if self.alignment:
            self._align(results, (src != PAD_ID).sum(dim=1).tolist())
        return results

    def _align(self, results: list[list[Hypothesis]], src_lengths: list[int]) -> None:
        """Fill the `alignment` of every hypothesis of a batch; src_lengths: real positions per row."""
        for hyps, length in zip(results, src_lengths):
            for hyp in hyps:
                if hyp.attn is None:
                    raise ValueError("alignment: this model's decoder has no attention (an RNN decoder with "
                                     "attention: none reads only the fixed code), so there is nothing to align")
                if hyp.attn.size(1) != length:
                    raise ValueError(f"alignment: the decoder attends {hyp.attn.size(1)} memory slot(s), not the "
                                     f"{length} source positions (a code bottleneck?), so there is nothing to align")
                hyp.alignment = hard_alignment(reading_order(hyp.attn, self.model))
