"""`Service`: the served models, their batchers and the limits together; texts in, translations out.

No HTTP here: `seqed.serve.app` parses requests into calls of `Service.translate` and writes its
results and `RequestError`s as JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional, Sequence

from seqed.alignment import pharaoh
from seqed.serve.batcher import Batcher, DeadlineExceeded, QueueFull
from seqed.serve.engine import DecodeOptions, Engine
from seqed.serve.limits import ApiKeys, Limits, RequestError, invalid
from seqed.serve.metrics import Metrics
from seqed.serve.texts import join_text, split_text

WARMUP = "Hello, how are you?"
# Requests up to this many characters are tokenized on the event loop: SentencePiece takes tens of
# microseconds for a sentence, less than the hop to a pool thread and back; longer ones go to a thread.
INLINE_ENCODE_CHARS = 4096


@dataclass
class TextResult:
    """The translation of one request text.

    Attributes:
        text: the best translation (lines and surrounding whitespace as in the source).
        score: the mean score of its sentences (0 for a text without any).
        alternatives: the next-best translations, [(text, score), ...], when nbest > 1.
        alignment: Pharaoh pairs "i-j" over the text's source pieces and output pieces (its sentences'
            pieces one after the other), when asked for.
        source_pieces, target_pieces: those pieces (SentencePiece's, "▁" opening a word).
    """

    text: str
    score: float
    alternatives: list = field(default_factory=list)
    alignment: Optional[str] = None
    source_pieces: Optional[list[str]] = None
    target_pieces: Optional[list[str]] = None


class Service:
    """Several named models behind dynamic batchers, with the request limits.

    Args:
        limits: see `Limits`.
        keys: API keys (none: open).
        max_batch_tokens, max_wait_ms, idle_ms: see `Batcher` (0 tokens: batching off).
    """

    def __init__(self, *, limits: Optional[Limits] = None, keys: Optional[ApiKeys] = None,
                 max_batch_tokens: int = 4096, max_wait_ms: float = 50.0, idle_ms: float = 5.0):
        self.limits = limits or Limits()
        self.keys = keys or ApiKeys()
        self.max_batch_tokens, self.max_wait_ms, self.idle_ms = max_batch_tokens, max_wait_ms, idle_ms
        self.engines: dict[str, Engine] = {}
        self.batchers: dict[str, Batcher] = {}
        self.metrics = Metrics(lambda: {name: b.depth for name, b in self.batchers.items()})
        self.ready = False
        self.draining = False
        self.failed: Optional[BaseException] = None
        self.in_flight = 0  # HTTP requests being answered (kept by the app)

    # -- life cycle -----------------------------------------------------------------------------------

    def add(self, engine: Engine) -> None:
        """Serve `engine` (the first one added is the default model); its worker starts now."""
        if engine.name in self.engines:
            raise ValueError(f"two models are named {engine.name!r}: name them with -c NAME=MODEL")
        self.engines[engine.name] = engine
        self.batchers[engine.name] = Batcher(engine, max_batch_tokens=self.max_batch_tokens,
                                             max_wait_ms=self.max_wait_ms, idle_ms=self.idle_ms,
                                             max_queue=self.limits.max_queue,
                                             on_batch=partial(self.metrics.record_batch, engine.name)).start()

    def warm_up(self) -> None:
        """Translate one sentence with every model (beam and greedy), then report ready."""
        for name, engine in self.engines.items():
            for beam in sorted({engine.defaults.beam, 1}):
                options = dataclasses.replace(engine.defaults, beam=beam, nbest=1)
                self.batchers[name].submit(engine.encode([WARMUP]), options, 600).result()
        self.ready = True

    def load(self, loaders: Sequence[Callable[[], Engine]]) -> None:
        """Load, add and warm up every model (call it in a thread); an error is kept in `failed`."""
        try:
            for load in loaders:
                self.add(load())
            self.warm_up()
        except BaseException as err:  # noqa: BLE001 - reported by whoever runs the server
            self.failed = err

    @property
    def idle(self) -> bool:
        """No HTTP request being answered and nothing waiting or running in any batcher."""
        return self.in_flight == 0 and all(b.idle for b in self.batchers.values())

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, stop the workers and release the engines."""
        for batcher in self.batchers.values():
            batcher.stop(timeout)
        for engine in self.engines.values():
            engine.close()

    # -- requests -------------------------------------------------------------------------------------

    def engine(self, name: Optional[str]) -> Engine:
        if not self.ready:
            raise RequestError(503, "not_ready", "the server is still loading its models; retry shortly",
                               {"Retry-After": "1"})
        if name is None:
            return next(iter(self.engines.values()))
        if name not in self.engines:
            raise RequestError(404, "unknown_model", f"no model named {name!r}; this server has: "
                                                     f"{', '.join(self.engines)}")
        return self.engines[name]

    def max_pieces(self, engine: Engine) -> int:
        return min(self.limits.max_pieces, engine.max_pieces)

    def options(self, engine: Engine, *, beam: Optional[int] = None, nbest: Optional[int] = None,
                length_penalty: Optional[float] = None, alignment: bool = False) -> DecodeOptions:
        """The request's decoding options over the model's defaults, checked against the limits."""
        d = engine.defaults
        beam = d.beam if beam is None else beam
        nbest = 1 if nbest is None else nbest
        self.limits.check_search(beam, nbest)
        if alignment and not engine.supports_alignment:
            raise invalid(f"model {engine.name!r} runs on the {engine.kind} engine, which gives no alignments; "
                          f"serve it with --engine seqed for return_alignment")
        return DecodeOptions(beam=beam, nbest=nbest,
                             length_penalty=d.length_penalty if length_penalty is None else length_penalty,
                             alignment=alignment)

    async def translate(self, texts: Sequence[str], engine: Engine, options: DecodeOptions) -> list[TextResult]:
        """Translate request texts (each may hold several lines) with one queued job.

        Raises:
            RequestError: too many texts, sentences or pieces (422), full queue (429), deadline passed (504),
                a translation that failed (422 for a ValueError, else 500).
        """
        from starlette.concurrency import run_in_threadpool

        self.limits.check_texts(texts)
        lines = [split_text(t) for t in texts]
        self.limits.check_sentences(sum(1 for per in lines for line in per if line.core))
        cores = [line.core for per in lines for line in per]
        if sum(map(len, cores)) <= INLINE_ENCODE_CHARS:
            ids = engine.encode(cores)
        else:
            ids = await run_in_threadpool(engine.encode, cores)
        counts, start = [], 0
        for per in lines:
            counts.append([len(x) for x in ids[start:start + len(per)]])
            start += len(per)
        self.limits.check_pieces(counts, self.max_pieces(engine))
        try:
            future = self.batchers[engine.name].submit(ids, options, self.limits.timeout_s)
        except QueueFull as err:
            raise RequestError(429, "queue_full", f"{err}; retry shortly", {"Retry-After": "1"}) from None
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), self.limits.timeout_s)
        except (asyncio.TimeoutError, DeadlineExceeded):
            future.cancel()
            raise RequestError(504, "timeout", f"no translation within {self.limits.timeout_s:g} s (--timeout); "
                                               f"the server is busy: retry later or send less") from None
        except CancelledError:
            raise
        except ValueError as err:
            raise RequestError(422, "translation_failed", f"translation failed: {err}") from None
        except Exception as err:  # noqa: BLE001 - the request fails, never the server
            raise RequestError(500, "translation_failed",
                               f"translation failed: {type(err).__name__}: {err}") from None
        out, start = [], 0
        for per in lines:
            out.append(self._assemble(engine, per, ids[start:start + len(per)], results[start:start + len(per)],
                                      options))
            start += len(per)
        return out

    def _assemble(self, engine: Engine, lines, ids, results, options: DecodeOptions) -> TextResult:
        """One text's result from its lines' hypotheses ([(text, Hypothesis), ...] per line)."""
        real = [r for line, r in zip(lines, results) if line.core]
        best = [r[0][1].score for r in real]
        result = TextResult(text=join_text(lines, [r[0][0] for r in results]),
                            score=sum(best) / len(best) if best else 0.0)
        for k in range(1, options.nbest):
            # the k-th alternative of every sentence (or its last, when it has fewer)
            picks = [r[min(k, len(r) - 1)] for r in results]
            scores = [p[1].score for p, line in zip(picks, lines) if line.core]
            result.alternatives.append((join_text(lines, [p[0] for p in picks]),
                                        sum(scores) / len(scores) if scores else 0.0))
        if options.alignment:
            pairs, src_pieces, tgt_pieces = [], [], []
            for x, r in zip(ids, results):
                hyp = r[0][1]
                pairs += [(i + len(src_pieces), j + len(tgt_pieces)) for i, j in (hyp.alignment or [])]
                src_pieces += engine.source_pieces(x)
                tgt_pieces += engine.target_pieces(hyp.tokens)
            result.alignment, result.source_pieces, result.target_pieces = pharaoh(pairs), src_pieces, tgt_pieces
        return result

    # -- what the routes report -------------------------------------------------------------------------

    def model_info(self, engine: Engine) -> dict:
        """One entry of GET /v1/models."""
        d, lim = engine.defaults, self.limits
        return {
            "name": engine.name,
            "engine": engine.kind,
            "default": engine.name == next(iter(self.engines)),
            "languages": {"source": engine.languages[0], "target": engine.languages[1]},
            "decoding": {"beam": d.beam, "nbest": d.nbest, "length_penalty": d.length_penalty,
                         **engine.length_limits},
            "limits": {"max_texts": lim.max_texts, "max_sentences": lim.max_sentences,
                       "max_pieces": self.max_pieces(engine), "max_beam": lim.max_beam,
                       "max_body_bytes": lim.max_body_bytes, "timeout_s": lim.timeout_s},
            "alignment": engine.supports_alignment,
            "checkpoint": {"file": engine.checkpoint.name, "sha256": engine.sha256},
            "results": engine.results,
        }
