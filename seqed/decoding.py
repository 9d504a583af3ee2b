"""The decoding front both engines share: `SearchSettings` (how to search) and `TextOutput` (sentences
in, hypotheses or text out: empty lines, truncation, length-sorted batches, input order restored).

An engine (`seqed.translator.Translator`, `seqed.translator_ct2.CTranslate2Translator`) subclasses
`TextOutput` and implements only ``_search_ids(sources, settings)``: one batch of source id lists
(truncated, without EOS) in, one hypothesis list per source out.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from seqed.data.batching import length_sorted
from seqed.search import Hypothesis

LEGACY_NAMES = {"beam_size": "beam"}  # keyword accepted by the engines' constructors -> SearchSettings field


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


@dataclass(frozen=True)
class SearchSettings:
    """How to decode: a checkpoint's `search` section (every `seqed.config.SearchConfig` field, with the
    same defaults: tests/test_api.py pins it), the caller's overrides and the model's limits.

    Build it with `from_config` (what `seqed translate`, the Python API and the server do) and change
    it with `replace`; both validate.

    Attributes:
        beam: beams per sentence; 1 runs greedy search (ignored when sampling).
        length_penalty: GNMT alpha (see `seqed.search.LengthPenalty`); 0 ranks by log-probability.
        max_len_a, max_len_b: output length limit ``a * |src| + b`` (|src| counts EOS).
        min_len: fewest output tokens before EOS.
        batch_size: sentences per search batch.
        nbest: hypotheses returned per sentence (<= beam); with `sampling`, independent samples.
        max_src_len: longest source, EOS included; longer ones are truncated with a warning. None:
            the model's limit (the engine fills it in).
        max_len_cap: hard cap on output length. None: the model's limit.
        sampling: None (search), or "topk=K" / "topp=P" (`parse_sampling`; seqed's engine only).
        temperature: sampling temperature T > 0 (with `sampling` only).
        alignment: fill each hypothesis's `alignment` (seqed's engine only; see `seqed.alignment`).
    """

    beam: int = 5
    length_penalty: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 0
    batch_size: int = 64
    nbest: int = 1
    max_src_len: Optional[int] = None
    max_len_cap: Optional[int] = None
    sampling: Optional[str] = None
    temperature: float = 1.0
    alignment: bool = False

    def __post_init__(self):
        if self.sampling is not None:
            parse_sampling(self.sampling)
            if self.nbest < 1:
                raise ValueError(f"nbest (samples per sentence) must be >= 1, got {self.nbest}")
        elif self.temperature != 1.0:
            raise ValueError("temperature and seed apply to sampling only; give sampling='topk=K' or 'topp=P'")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; greedy search (beam 1, no "
                             f"sampling) is the T -> 0 limit")
        if self.beam < 1:
            raise ValueError(f"beam must be positive (1: greedy), got {self.beam}")
        if self.sampling is None and not 1 <= self.nbest <= self.beam:
            raise ValueError(f"nbest must be between 1 and the beam size ({self.beam}), got {self.nbest}; raise "
                             f"the beam for a longer n-best list")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_len < 0:
            raise ValueError(f"min_len must be >= 0, got {self.min_len}")
        if self.max_src_len is not None and self.max_src_len < 2:
            raise ValueError(f"max_src_len must leave room for a token and EOS (>= 2), got {self.max_src_len}")
        if self.max_len_cap is not None and self.max_len_cap < 1:
            raise ValueError(f"max_len_cap must be >= 1, got {self.max_len_cap}")

    @classmethod
    def from_config(cls, search: Any = None, *, max_src_len: Optional[int] = None,
                    max_len_cap: Optional[int] = None, **overrides) -> "SearchSettings":
        """A checkpoint's search defaults, the caller's overrides, within the model's limits.

        Args:
            search: a `seqed.config.SearchConfig`, the ``search`` dict of an export's
                ``seqed_export.json``, or None (the defaults above).
            max_src_len, max_len_cap: the model's limits (what its positions cover); an override
                above them is lowered to them.
            overrides: `SearchSettings` fields (``beam_size`` is read as ``beam``); None keeps the default.

        Raises:
            ValueError: an invalid value; TypeError: an unknown name.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        if search is not None and not isinstance(search, Mapping):
            search = dataclasses.asdict(search)
        base = cls(**{k: v for k, v in (search or {}).items() if k in fields})
        return base.replace(**overrides).within(max_src_len, max_len_cap)

    def replace(self, **overrides) -> "SearchSettings":
        """A copy with `overrides` (None keeps a value; ``beam_size`` is read as ``beam``)."""
        changes = {LEGACY_NAMES.get(k, k): v for k, v in overrides.items()}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown search setting(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(f.name for f in dataclasses.fields(self))}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def within(self, max_src_len: Optional[int], max_len_cap: Optional[int]) -> "SearchSettings":
        """These settings within a model's limits (None: no limit there): an unset limit becomes the
        model's, a larger one is lowered to it."""
        def cap(value, limit):
            return value if limit is None else min(value or limit, limit)

        return dataclasses.replace(self, max_src_len=cap(self.max_src_len, max_src_len),
                                   max_len_cap=cap(self.max_len_cap, max_len_cap))

    def key(self) -> tuple:
        """A hashable key: requests with equal keys can share one `TextOutput.translate` call."""
        return dataclasses.astuple(self)


class TextOutput:
    """Sentences in, hypotheses or text out, for any engine (see the module docstring).

    Attributes set by the engine: ``settings`` (its default `SearchSettings`, limits filled in),
    ``tokenizer`` (a `seqed.tokenizer.Tokenizer`), ``progress`` (a tqdm bar per call).

    Per call, ``settings=`` replaces the defaults (beam, nbest, length penalty, ...) without rebuilding
    the model; `with_settings` returns a cheap view with other defaults. Both are checked against the
    engine (`_resolve`) before anything runs.
    """

    settings: SearchSettings
    tokenizer: Any
    progress: bool = False

    def with_settings(self, settings: Optional[SearchSettings] = None, **overrides) -> "TextOutput":
        """A view of this translator (same model, same tokenizer) with other default settings: `settings`
        (or the current ones) with `overrides` (`SearchSettings.replace`)."""
        view = copy.copy(self)
        view.settings = self._resolve((settings or self.settings).replace(**overrides))
        return view

    def translate(self, sentences: Sequence[str], settings: Optional[SearchSettings] = None
                  ) -> list[list[Hypothesis]]:
        """Translate `sentences` to target ids.

        Args:
            sentences: source sentences (a list, not one string).
            settings: this call's settings (default: `self.settings`).

        Returns:
            One list per sentence, in input order: `nbest` hypotheses, best first (one empty hypothesis,
            score 0, for an empty or blank line).
        """
        if isinstance(sentences, str):
            raise ValueError("translate takes a list of sentences, not one string: wrap it as [text]")
        sentences = list(sentences)
        settings = self._resolve(settings)
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        ids = self.tokenizer.encode_src([sentences[i] for i in todo]) if todo else []
        results = [[self._empty(settings)] for _ in sentences]
        for i, hyps in zip(todo, self.translate_ids(ids, settings)):
            results[i] = hyps
        return results

    def translate_ids(self, ids: Sequence[Sequence[int]], settings: Optional[SearchSettings] = None
                      ) -> list[list[Hypothesis]]:
        """Like `translate`, from source piece ids (no EOS); an empty id list gives an empty hypothesis.

        Sources longer than ``max_src_len - 1`` pieces are truncated (one warning per call); batches of
        up to ``batch_size`` sentences of similar length, longest first, go to the engine.
        """
        from tqdm import tqdm

        settings = self._resolve(settings)
        results = [[self._empty(settings)] for _ in ids]
        todo = [i for i, x in enumerate(ids) if len(x)]
        keep = settings.max_src_len - 1
        n_long = sum(len(ids[i]) > keep for i in todo)
        if n_long:
            warnings.warn(f"{type(self).__name__}: {n_long} source sentence(s) longer than max_src_len="
                          f"{settings.max_src_len} tokens (EOS included) were truncated; raise max_src_len to keep "
                          f"them whole", stacklevel=3)
        sources = [list(ids[i])[:keep] for i in todo]
        batches = length_sorted([len(x) for x in sources], settings.batch_size, longest_first=True)
        with tqdm(total=len(batches), disable=not self.progress, desc="translate", unit="batch") as bar:
            for batch in batches:
                for j, hyps in zip(batch, self._search_ids([sources[j] for j in batch], settings)):
                    results[todo[j]] = hyps
                bar.update(1)
        return results

    def translate_text(self, sentences: Sequence[str], settings: Optional[SearchSettings] = None
                       ) -> list[list[tuple[str, float]]]:
        """Translate `sentences` to detokenized strings.

        Returns:
            One list per sentence, in input order, of (text, score) pairs, best first.
        """
        hyps = self.translate(sentences, settings)
        return [[(text, h.score) for text, h in zip(texts, per_sentence)]
                for texts, per_sentence in zip(self.detokenize(hyps), hyps)]

    def translate_lines(self, sentences: Sequence[str], settings: Optional[SearchSettings] = None) -> list[str]:
        """The best translation of each sentence as text, in input order ("" for an empty line)."""
        return [nbest[0][0] for nbest in self.translate_text(sentences, settings)]

    def detokenize(self, hyps: Sequence[Sequence[Hypothesis]]) -> list[list[str]]:
        """The text of every hypothesis, in the same nesting (one tokenizer call for all)."""
        flat = [h.tokens for per_sentence in hyps for h in per_sentence]
        texts = iter(self.tokenizer.decode_tgt(flat) if flat else [])
        return [[next(texts) for _ in per_sentence] for per_sentence in hyps]

    def source_pieces(self, texts: Sequence[str]) -> list[int]:
        """Source pieces per text with the model's own tokenizer, EOS not counted (0 for an empty text).

        A text is truncated by `translate` when this count is >= ``settings.max_src_len`` (which counts EOS).
        """
        return [len(x) for x in self.tokenizer.encode_src(list(texts))] if len(texts) else []

    def _resolve(self, settings: Optional[SearchSettings]) -> SearchSettings:
        """`settings` (None: `self.settings`) with unset limits taken from `self.settings`, checked
        against what the engine can do; engines add their own checks."""
        if settings is None or settings is self.settings:
            return self.settings
        return settings.within(self.settings.max_src_len, self.settings.max_len_cap)

    def _empty(self, settings: SearchSettings) -> Hypothesis:
        return Hypothesis(tokens=[], score=0.0, log_prob=0.0, alignment=[] if settings.alignment else None)

    def _search_ids(self, sources: list[list[int]], settings: SearchSettings) -> list[list[Hypothesis]]:
        """Search one batch: `sources` are non-empty id lists, truncated, without EOS."""
        raise NotImplementedError
