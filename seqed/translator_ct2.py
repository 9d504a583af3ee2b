"""`CTranslate2Translator`: the decoding front (`seqed.decoding.TextOutput`) over a model exported with
`seqed.export`, and `ctranslate2_translator`, which also takes a checkpoint (exported on the fly).

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
* Not available: sampling and alignments (seqed's engine gives both); asking raises ValueError.
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Optional

from seqed.decoding import SearchSettings, TextOutput
from seqed.export import EXPORT_META, ExportError, export_ctranslate2, read_export_meta, require_ctranslate2, \
    vocabularies
from seqed.search import Hypothesis, LengthPenalty
from seqed.tokenizer import Tokenizer
from seqed.vocab import EOS_ID

VANISHING_PENALTY = 1e-12  # != 0 turns off CTranslate2's early exit; x ** 1e-12 == 1.0 in float32


class CTranslate2Translator(TextOutput):
    """Translate sentences with an exported CTranslate2 model (see the module docstring for how its
    search relates to seqed's).

    Args:
        model_dir: a directory written by `seqed.export.export_ctranslate2`.
        settings: the default `SearchSettings` (unset limits: what the model's positions cover; larger
            ones are lowered to that). Without it: `SearchSettings`' defaults, not the export's search
            section (`ctranslate2_translator` and `seqed.loading.load_translator` read that).
        device: "cpu", "cuda", "cuda:N", or "auto" (CUDA when CTranslate2 sees a GPU).
        compute_type: CTranslate2 compute type: "default" (as stored), "float32", "int8",
            "int8_float32", "int8_bfloat16", "bfloat16", "float16", ... (the device must support it:
            `ctranslate2.get_supported_compute_types`).
        patience: beam search goes on until beam x patience hypotheses have ended (alpha > 0).
        threads: CTranslate2 threads per translation (0: its default).
        search: `SearchSettings` fields overriding `settings` (``beam_size`` is read as ``beam``).
    """

    def __init__(self, model_dir, settings: Optional[SearchSettings] = None, *, device: str = "cpu",
                 compute_type: str = "default", patience: float = 1.0, threads: int = 0, **search):
        ct2 = require_ctranslate2()
        settings = (settings or SearchSettings()).replace(**search)
        if patience < 1:
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
        self.compute_type = compute_type
        self.patience = patience
        self.limits = {"max_src_len": meta["max_src_len"], "max_len_cap": meta["max_output_len"]}
        self.settings = self._checked(settings.within(**self.limits))
        self.translator = ct2.Translator(str(self.model_dir), device=device, device_index=int(index or 0),
                                         compute_type=compute_type, intra_threads=threads)

    def _resolve(self, settings: Optional[SearchSettings]) -> SearchSettings:
        if settings is None or settings is self.settings:
            return self.settings
        return self._checked(super()._resolve(settings).within(**self.limits))

    def _checked(self, settings: SearchSettings) -> SearchSettings:
        """`settings` if CTranslate2 can search with them, else ValueError saying what to change."""
        if settings.sampling is not None:
            raise ValueError("sampling is for engine seqed: the CTranslate2 engine runs greedy or beam search")
        if settings.alignment:
            raise ValueError("alignments are for engine seqed: the CTranslate2 engine gives none (its export "
                             "keeps no alignment heads); translate with engine seqed to get them")
        if settings.min_len > settings.max_len_cap:
            raise ValueError(f"CTranslate2Translator: need 0 <= min_len <= max_len_cap, got min_len="
                             f"{settings.min_len}, max_len_cap={settings.max_len_cap}")
        if round(settings.beam * self.patience) < settings.nbest:
            raise ValueError(f"CTranslate2Translator: patience must be >= 1, got {self.patience}")
        return settings

    def _search_ids(self, sources: list[list[int]], settings: SearchSettings) -> list[list[Hypothesis]]:
        """Search one batch of similar lengths under its largest length limit; the sentences whose search
        reached their own (lower) limit are searched again under it (see the module docstring)."""
        results = [[self._empty(settings)] for _ in sources]
        limits = {i: self._limit(len(x) + 1, settings) for i, x in enumerate(sources)}
        limits = {i: limit for i, limit in limits.items() if limit}  # 0: nothing may be emitted, "" stands
        source = {i: [self._src_pieces[t] for t in sources[i]] for i in limits}
        again: dict[int, list[int]] = defaultdict(list)  # own limit -> sentences to search under it
        for members in self._batches(limits, settings):
            limit = max(limits[i] for i in members)
            for i, (hyps, steps) in zip(members, self._search([source[i] for i in members], limit, settings)):
                if steps >= limits[i] and limits[i] < limit:
                    again[limits[i]].append(i)
                else:
                    results[i] = hyps
        for limit, members in sorted(again.items()):
            for i, (hyps, _) in zip(members, self._search([source[i] for i in members], limit, settings)):
                results[i] = hyps
        return results

    def _batches(self, limits: dict[int, int], settings: SearchSettings) -> list[list[int]]:
        """The sentences of one batch, grouped for CTranslate2. A search's last step is the length of its
        longest returned hypothesis in greedy search and with GNMT re-ranking (all ended hypotheses
        returned): one group, searched again where needed. Beam search with alpha 0 may return a shorter
        hypothesis than the last step's, so there each group holds one limit (nothing is searched again)."""
        if not (settings.beam > 1 and not self._gnmt(settings)):
            return [list(limits)] if limits else []
        groups: dict[int, list[int]] = defaultdict(list)
        for i, limit in limits.items():
            groups[limit].append(i)
        return [groups[limit] for limit in sorted(groups)]

    @staticmethod
    def _gnmt(settings: SearchSettings) -> bool:
        """Beam search with a length penalty: every ended hypothesis is returned and re-ranked by seqed."""
        return settings.beam > 1 and settings.length_penalty != 0

    @staticmethod
    def _limit(src_len: int, settings: SearchSettings) -> int:
        """seqed.search.max_lengths for one sentence, |src| counting EOS, then at least min_len."""
        limit = min(max(math.floor(src_len * settings.max_len_a + settings.max_len_b), 0), settings.max_len_cap)
        return max(limit, settings.min_len)

    def _search(self, source: list[list[str]], limit: int, settings: SearchSettings
                ) -> list[tuple[list[Hypothesis], int]]:
        """Translate sentences under the output length limit `limit` (>= 1): per sentence its hypotheses
        and the steps its search ran (the most tokens, EOS included, of anything CTranslate2 returned)."""
        gnmt = self._gnmt(settings)
        candidates = round(settings.beam * self.patience) if gnmt else settings.nbest
        outputs = self.translator.translate_batch(
            source, max_batch_size=settings.batch_size, beam_size=settings.beam, patience=self.patience,
            num_hypotheses=candidates, length_penalty=VANISHING_PENALTY if gnmt else 0.0,
            max_decoding_length=limit, min_decoding_length=settings.min_len, max_input_length=0,
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
                                                 max_batch_size=settings.batch_size, max_input_length=0)
            for k, result in zip(cut, scored):
                j, pieces, _, ended = found[k]
                found[k] = (j, pieces, sum(result.log_probs), ended)  # log_probs: the pieces and EOS
        lp = LengthPenalty(settings.length_penalty if gnmt else 0.0)
        results: list[list[Hypothesis]] = [[] for _ in source]
        for j, pieces, log_prob, _ in found:
            tokens = [self._tgt_ids[p] for p in pieces]
            score = log_prob / float(lp(len(tokens) + 1))  # |Y| counts EOS, as in seqed.search
            results[j].append(Hypothesis(tokens=tokens, score=score, log_prob=log_prob))
        steps = [max((len(hyp) for hyp in out.hypotheses), default=0) for out in outputs]
        return [(sorted(hyps, key=lambda h: -h.score)[:settings.nbest], n) for hyps, n in zip(results, steps)]


def ctranslate2_translator(path, *, device: str = "cpu", quantization: Optional[str] = None, threads: int = 0,
                           **search) -> CTranslate2Translator:
    """A `CTranslate2Translator` for a `seqed export` directory, or for a checkpoint file or run directory,
    exported on the fly into a temporary directory (removed when the translator is garbage-collected or
    the process ends).

    Search settings: the export's (the checkpoint's) search section, overridden by the `search` keywords
    (`SearchSettings` fields; None keeps the export's), within the model's limits.

    Args:
        quantization: CTranslate2 compute type (None: as exported).
    """
    model_dir = Path(path)
    scratch = None
    if not (model_dir / EXPORT_META).is_file():
        scratch = tempfile.TemporaryDirectory(prefix="seqed-ct2-")
        model_dir = Path(scratch.name) / "model"
        print(f"seqed: exporting {path} to CTranslate2 for this run (`seqed export` keeps it)", file=sys.stderr)
        export_ctranslate2(path, model_dir)
    merged = SearchSettings.from_config(read_export_meta(model_dir)["search"], **search)
    translator = CTranslate2Translator(model_dir, merged, device=device, compute_type=quantization or "default",
                                       threads=threads)
    translator._scratch = scratch  # keeps the on-the-fly export until the translator goes
    return translator
