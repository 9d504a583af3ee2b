"""`CTranslate2Translator`: seqed's `Translator` interface over a model exported with `seqed.export`.

Search runs inside CTranslate2 (C++, optionally int8 / bf16). What matches seqed's own search
(`seqed.search`) and what cannot:

* Greedy search (beam 1): the same tokens and scores (but see PAD and BOS below).
* Beam search with length_penalty 0 and nbest 1: the same tokens (below the length limit). Both keep 2K candidates per
  step, end the EOS candidates among the first K and continue with the K best others; CTranslate2
  stops when the best candidate of a step is EOS, where seqed's bound also stops (and the best
  ended hypothesis is the same). With nbest > 1 the best hypothesis still matches; the others may
  differ, since CTranslate2 stops as soon as it has nbest ended hypotheses.
* Length penalty alpha > 0: CTranslate2 ranks by ``log_prob / |Y|^alpha`` (its
  `length_penalty`), not by GNMT's ``log_prob / ((5 + |Y|) / 6)^alpha`` (`seqed.search.LengthPenalty`),
  and cannot be given another formula. So this translator asks CTranslate2 for every ended
  hypothesis (beam_size x patience of them; length_penalty set to a vanishing 1e-12, which only
  turns off its early exit and leaves scores unchanged in float32) and re-ranks them with
  seqed's GNMT formula. The ranking is then seqed's exactly, but the candidate set is not:
  CTranslate2 stops after beam_size x patience ended hypotheses, seqed once no live beam can still
  win. Outputs are close, not guaranteed identical (raise `patience` to get closer).
* Length limit: seqed forces EOS after ``floor(a * |src| + b)`` tokens and adds its
  log-probability; CTranslate2 cuts the hypothesis there. Cut hypotheses are scored again with EOS
  appended (`score_batch`), so greedy search matches in tokens and scores; a beam search that
  reaches the limit ranks the same hypotheses the same way, but CTranslate2 finalizes only the
  non-EOS candidates among the first K of its last step, where seqed ends all K live beams: it may
  miss seqed's best. CTranslate2 takes one limit per call: each length-sorted batch is searched under
  its largest limit, and the few sentences whose search reached their own limit (a hypothesis of
  that many tokens) are searched again under it. A search that ended earlier ran exactly as it
  would have under its own limit, since each sentence's beam is independent of its batch.
* PAD and BOS: seqed masks them after the softmax, so its scores stay the model's own
  log-probabilities. CTranslate2 can only mask before the softmax, which changes every score by
  the probability mass of the masked tokens (about 1% per step in a tiny test model), so they are
  left unmasked: scores match seqed's (to ~1e-6 in float32), and a model that makes PAD or BOS its
  best token (no trained one does) would emit it here (`decode_tgt` drops both from the text).
  For min_len > 0, EOS is masked before the softmax, so scores differ slightly while it is.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from seqed.export import ExportError, read_export_meta, require_ctranslate2, vocabularies
from seqed.search import Hypothesis, LengthPenalty
from seqed.tokenizer import Tokenizer
from seqed.translator import TextOutput
from seqed.vocab import EOS_ID

VANISHING_PENALTY = 1e-12  # != 0 turns off CTranslate2's early exit; x ** 1e-12 == 1.0 in float32


class CTranslate2Translator(TextOutput):
    """Translate sentences with an exported CTranslate2 model (see the module docstring for how its
    search relates to seqed's).

    Args:
        model_dir: a directory written by `seqed.export.export_ctranslate2`.
        device: "cpu", "cuda", "cuda:N", or "auto" (CUDA when CTranslate2 sees a GPU).
        compute_type: CTranslate2 compute type: "default" (as stored), "float32", "int8",
            "int8_float32", "int8_bfloat16", "bfloat16", "float16", ... (the device must support it:
            `ctranslate2.get_supported_compute_types`).
        beam_size: beams per sentence; 1 runs greedy search.
        nbest: hypotheses returned per sentence (<= beam_size).
        length_penalty: GNMT alpha (see the module docstring: exact ranking, approximate search).
        max_len_a, max_len_b: output length limit ``a * |src| + b`` (|src| counts EOS).
        min_len: fewest output tokens before EOS.
        batch_size: sentences per CTranslate2 batch.
        max_src_len: longest source, EOS included (default: what the model's positions cover);
            longer ones are truncated with a warning.
        max_len_cap: hard cap on output length (default and upper bound: the decoder's positions).
        patience: beam search goes on until beam_size x patience hypotheses have ended (alpha > 0).
        threads: CTranslate2 threads per translation (0: its default).
    """

    def __init__(self, model_dir, *, device: str = "cpu", compute_type: str = "default", beam_size: int = 5,
                 nbest: int = 1, length_penalty: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10,
                 min_len: int = 0, batch_size: int = 64, max_src_len: Optional[int] = None,
                 max_len_cap: Optional[int] = None, patience: float = 1.0, threads: int = 0):
        ct2 = require_ctranslate2()
        if beam_size < 1:
            raise ValueError(f"CTranslate2Translator: beam_size must be >= 1, got {beam_size}")
        if not 1 <= nbest <= beam_size:
            raise ValueError(f"CTranslate2Translator: need 1 <= nbest <= beam_size, got nbest={nbest}, "
                             f"beam_size={beam_size}; raise beam_size for an n-best list")
        if batch_size < 1:
            raise ValueError(f"CTranslate2Translator: batch_size must be >= 1, got {batch_size}")
        if patience < 1 or round(beam_size * patience) < nbest:
            raise ValueError(f"CTranslate2Translator: patience must be >= 1, got {patience}")
        meta = read_export_meta(model_dir)
        requested = device
        if device == "auto":
            device = "cuda" if ct2.get_cuda_device_count() > 0 else "cpu"
        device, _, index = device.partition(":")
        if device not in ("cpu", "cuda") or (index and not index.isdigit()):
            raise ValueError(f"CTranslate2Translator: device must be cpu, cuda, cuda:N or auto, got {requested!r}")
        if device == "cuda" and ct2.get_cuda_device_count() == 0:
            raise ExportError("CTranslate2 sees no CUDA device here; use device cpu")
        supported = ct2.get_supported_compute_types(device)
        if compute_type not in ("default", "auto") and compute_type not in supported:
            raise ExportError(f"compute type {compute_type!r} is not supported on this {device} "
                              f"(supported here: {', '.join(sorted(supported))})")
        self.model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.load(self.model_dir)
        src_vocab, tgt_vocab = vocabularies(self.tokenizer)
        self._src_pieces = src_vocab
        self._tgt_ids = {piece: i for i, piece in enumerate(tgt_vocab)}
        self._eos = tgt_vocab[EOS_ID]
        self.translator = ct2.Translator(str(self.model_dir), device=device, device_index=int(index or 0),
                                         compute_type=compute_type, intra_threads=threads)
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.nbest = nbest
        self.length_penalty = length_penalty
        self.patience = patience
        self.max_len_a, self.max_len_b, self.min_len = max_len_a, max_len_b, min_len
        self.max_len_cap = min(max_len_cap or meta["max_output_len"], meta["max_output_len"])
        self.max_src_len = min(max_src_len or meta["max_src_len"], meta["max_src_len"])
        if self.max_src_len < 2:
            raise ValueError(f"CTranslate2Translator: max_src_len must leave room for a token and EOS (>= 2), "
                             f"got {self.max_src_len}")
        if not 0 <= min_len <= self.max_len_cap:
            raise ValueError(f"CTranslate2Translator: need 0 <= min_len <= max_len_cap, got min_len={min_len}, "
                             f"max_len_cap={self.max_len_cap}")
        self.batch_size = batch_size

    def translate(self, sentences: Sequence[str]) -> list[list[Hypothesis]]:
        """Translate `sentences` to target ids: one list per sentence, in input order, `nbest`
        hypotheses best first (one empty hypothesis for an empty line)."""
        sentences = list(sentences)
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        ids = self.tokenizer.encode_src([sentences[i] for i in todo]) if todo else []
        results: list[list[Hypothesis]] = [[Hypothesis(tokens=[], score=0.0, log_prob=0.0)] for _ in sentences]
        for i, hyps in zip(todo, self.translate_ids(ids)):
            results[i] = hyps
        return results

    def translate_ids(self, ids: Sequence[Sequence[int]]) -> list[list[Hypothesis]]:
        """Like `translate`, from source piece ids (no EOS); an empty id list gives an empty hypothesis."""
        results = [[Hypothesis(tokens=[], score=0.0, log_prob=0.0)] for _ in ids]
        keep = self.max_src_len - 1
        n_long = sum(len(x) > keep for x in ids)
        if n_long:
            warnings.warn(f"CTranslate2Translator: {n_long} source sentence(s) longer than max_src_len="
                          f"{self.max_src_len} tokens (EOS included) were truncated; raise max_src_len to keep "
                          f"them whole", stacklevel=3)
        limits = {i: self._limit(min(len(x), keep) + 1) for i, x in enumerate(ids) if len(x)}
        limits = {i: limit for i, limit in limits.items() if limit}  # 0: nothing may be emitted, "" stands
        source = {i: [self._src_pieces[t] for t in list(ids[i])[:keep]] for i in limits}
        again: dict[int, list[int]] = defaultdict(list)  # own limit -> sentences to search under it
        for members in self._batches(limits, {i: len(ids[i]) for i in limits}):
            limit = max(limits[i] for i in members)
            for i, (hyps, steps) in zip(members, self._search([source[i] for i in members], limit)):
                if steps >= limits[i] and limits[i] < limit:
                    again[limits[i]].append(i)
                else:
                    results[i] = hyps
        for limit, members in sorted(again.items()):
            for i, (hyps, _) in zip(members, self._search([source[i] for i in members], limit)):
                results[i] = hyps
        return results

    def _batches(self, limits: dict[int, int], lengths: dict[int, int]) -> list[list[int]]:
        """Sentences in batches of at most `batch_size`, sorted by source length. A search's last step is
        the length of its longest returned hypothesis in greedy search and with GNMT re-ranking (all
        ended hypotheses returned); beam search with alpha 0 may return a shorter one than the last
        step's, so there batches hold one limit each (nothing is ever searched again)."""
        one_limit = self.beam_size > 1 and not self._gnmt
        order = sorted(limits, key=lambda i: (limits[i], lengths[i]) if one_limit else lengths[i])
        batches: list[list[int]] = []
        for i in order:
            full = not batches or len(batches[-1]) == self.batch_size
            if full or (one_limit and limits[batches[-1][0]] != limits[i]):
                batches.append([])
            batches[-1].append(i)
        return batches

    @property
    def _gnmt(self) -> bool:
        """Beam search with a length penalty: every ended hypothesis is returned and re-ranked by seqed."""
        return self.beam_size > 1 and self.length_penalty != 0

    def _limit(self, src_len: int) -> int:
        """seqed.search.max_lengths for one sentence, |src| counting EOS, then at least min_len."""
        limit = min(max(math.floor(src_len * self.max_len_a + self.max_len_b), 0), self.max_len_cap)
        return max(limit, self.min_len)

    def _search(self, source: list[list[str]], limit: int) -> list[tuple[list[Hypothesis], int]]:
        """Translate sentences under the output length limit `limit` (>= 1): per sentence its hypotheses
        and the steps its search ran (the most tokens, EOS included, of anything CTranslate2 returned)."""
        gnmt = self._gnmt
        candidates = round(self.beam_size * self.patience) if gnmt else self.nbest
        outputs = self.translator.translate_batch(
            source, max_batch_size=self.batch_size, beam_size=self.beam_size, patience=self.patience,
            num_hypotheses=candidates, length_penalty=VANISHING_PENALTY if gnmt else 0.0,
            max_decoding_length=limit, min_decoding_length=self.min_len, max_input_length=0,
            return_scores=True, return_end_token=True)
        found = []  # (sentence, pieces without EOS, log-probability, ended with EOS)
        for j, out in enumerate(outputs):
            for hyp, log_prob in zip(out.hypotheses, out.scores):
                ended = bool(hyp) and hyp[-1] == self._eos
                found.append((j, hyp[:-1] if ended else hyp, log_prob, ended))
        # CTranslate2 cuts hypotheses at the limit, where seqed forces EOS: score those with EOS, as seqed does
        cut = [k for k, (*_, ended) in enumerate(found) if not ended]
        if cut:
            scored = self.translator.score_batch([source[found[k][0]] for k in cut], [found[k][1] for k in cut],
                                                 max_batch_size=self.batch_size, max_input_length=0)
            for k, result in zip(cut, scored):
                j, pieces, _, ended = found[k]
                found[k] = (j, pieces, sum(result.log_probs), ended)  # log_probs: the pieces and EOS
        lp = LengthPenalty(self.length_penalty if gnmt else 0.0)
        results: list[list[Hypothesis]] = [[] for _ in source]
        for j, pieces, log_prob, _ in found:
            tokens = [self._tgt_ids[p] for p in pieces]
            score = log_prob / float(lp(len(tokens) + 1))  # |Y| counts EOS, as in seqed.search
            results[j].append(Hypothesis(tokens=tokens, score=score, log_prob=log_prob))
        steps = [max((len(hyp) for hyp in out.hypotheses), default=0) for out in outputs]
        return [(sorted(hyps, key=lambda h: -h.score)[:self.nbest], n) for hyps, n in zip(results, steps)]
