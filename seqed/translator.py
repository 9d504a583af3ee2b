"""`Translator`: seqed's own engine behind the decoding front (`seqed.decoding.TextOutput`): one batch
of source ids in, `seqed.search.decode` on the model, hypotheses (and alignments) out."""

from __future__ import annotations

import contextlib
import copy
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from seqed import precision as prec
from seqed.alignment import attention_enabled, hard_alignment, reading_order
from seqed.decoding import SearchSettings, TextOutput, parse_sampling
from seqed.quantize import quantize
from seqed.search import Hypothesis, decode
from seqed.vocab import EOS_ID, PAD_ID


DEFAULT_MAX_SRC_LEN = 1024  # limits of a model given without them (`seqed.loading` passes the model's own)
DEFAULT_MAX_LEN_CAP = 512


class Translator(TextOutput):
    """Translate sentences with a trained model and its tokenizer (`seqed.decoding.TextOutput` gives
    `translate`, `translate_text`, `translate_lines`, `translate_ids`, `with_settings`).

    Sources get EOS appended (as in training) and are decoded with `beam_search` (`greedy_search` when
    the beam is 1, `sample_search` with `settings.sampling`). Empty lines give one empty hypothesis
    (score 0) without running the model.

    Args:
        model: has ``encode`` and ``decoder.init_state`` / ``decoder.step``, e.g. an `EncoderDecoder` or
            a `seqed.ensemble.Ensemble`; an ``nn.Module`` is moved to `device` and put in eval mode.
        tokenizer: has ``encode_src(list[str]) -> list[list[int]]`` and
            ``decode_tgt(list[list[int]]) -> list[str]``.
        settings: the default `SearchSettings` (limits left unset: 1024 source pieces, 512 output pieces).
        device: where search runs.
        progress: show a tqdm bar, one tick per batch.
        precision: "auto" (bf16 where the device has native bf16 kernels, else fp32; see
            `seqed.precision`), "fp32", or "bf16" / "fp16": search runs a copy of the model cast to that
            dtype, under autocast (bf16: CPUs with AVX512-BF16 or AMX, and GPUs; an explicit bf16 on a
            CPU that emulates it warns once; fp16: GPUs only). Scores are always normalised in fp32.
            "fp32" leaves any autocast context of the caller in force. `self.precision` holds the
            resolved choice.
        seed: seed of the sampling generator (with `settings.sampling` only): the same seed, inputs and
            batch_size give the same samples from one Translator's first sampling call on; None draws one.
        quantization: None, or "int8": search runs a copy of the model with int8 Linear layers
            (`seqed.quantize`; CPU; precision "auto" or "fp32", which it then is).
        patience: beam search only: None stops exactly; P > 0 also stops a sentence once
            beam x P hypotheses have ended (`seqed.search.beam_search`).
        search: `SearchSettings` fields overriding `settings` (``beam_size`` is read as ``beam``), e.g.
            ``Translator(model, tok, beam=1, nbest=1)``. With ``alignment=True`` (the attention
            bookkeeping costs, so it is off by default), a decoder without attention raises ValueError at
            the first batch.
    """

    def __init__(self, model, tokenizer, settings: Optional[SearchSettings] = None, *, device="cpu",
                 precision: str = "auto", progress: bool = False, seed: Optional[int] = None,
                 quantization: Optional[str] = None, patience: Optional[float] = None, **search):
        settings = (settings or SearchSettings()).replace(**search)
        if settings.sampling is None and seed is not None:
            raise ValueError("Translator: temperature and seed apply to sampling only; give sampling='topk=K' "
                             "or 'topp=P'")
        if precision not in prec.CHOICES:
            raise ValueError(f"Translator: precision must be one of {', '.join(prec.CHOICES)}, got {precision!r}")
        if quantization is not None:
            if precision not in ("auto", "fp32"):
                raise ValueError(f"Translator: quantization {quantization!r} runs in fp32, got precision "
                                 f"{precision!r}")
            precision = "fp32"  # int8 Linear layers take and give fp32
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
            if quantization is not None:
                model = quantize(model, quantization)
        self.model = model
        self.patience = patience
        self.tokenizer = tokenizer
        self.settings = settings.replace(max_src_len=settings.max_src_len or DEFAULT_MAX_SRC_LEN,
                                         max_len_cap=settings.max_len_cap or DEFAULT_MAX_LEN_CAP)
        self.progress = progress
        self.seed = seed
        self.generator = None  # the sampling generator, seeded at the first sampling call

    @classmethod
    def from_checkpoint(cls, path, *, engine: str = "seqed", **options) -> TextOutput:
        """A translator for a checkpoint file, a run directory (best, else last checkpoint) or, with
        ``engine="ctranslate2"``, a `seqed export` directory: see `seqed.loading.load_translator` for
        `options` (device, precision, quantization, threads and any `SearchSettings` field)."""
        from seqed.loading import load_translator

        return load_translator(path, engine=engine, **options)

    def _sampler(self, settings: SearchSettings) -> tuple[Optional[dict], Optional[torch.Generator]]:
        """`seqed.search.decode`'s sampling keywords and generator (None, None when searching)."""
        if settings.sampling is None:
            return None, None
        if self.generator is None:
            self.generator = torch.Generator(device=self.device)
            if self.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.seed)
        return dict(parse_sampling(settings.sampling), temperature=settings.temperature), self.generator

    def _search_ids(self, sources: list[list[int]], settings: SearchSettings) -> list[list[Hypothesis]]:
        src = pad_sequence([torch.tensor(s + [EOS_ID], dtype=torch.long) for s in sources], batch_first=True,
                           padding_value=PAD_ID)  # (B, S)
        return self._search(src.to(self.device), settings)

    def _search(self, src: torch.Tensor, settings: SearchSettings) -> list[list[Hypothesis]]:
        """Decode src (B, S), EOS appended and PAD padded."""
        sampling, generator = self._sampler(settings)
        with prec.autocast(self.precision, self.device), (attention_enabled(self.model) if settings.alignment else contextlib.nullcontext()):
            results = decode(self.model, src, beam_size=settings.beam, nbest=settings.nbest,
                             length_penalty=settings.length_penalty, sampling=sampling, generator=generator,
                             max_len_a=settings.max_len_a, max_len_b=settings.max_len_b, min_len=settings.min_len,
                             max_len_cap=settings.max_len_cap, patience=self.patience)
        if settings.alignment:
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
