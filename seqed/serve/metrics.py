"""Counters, gauges and histograms written in Prometheus' text exposition format (version 0.0.4).

Written by hand: the format is a few lines per sample, not worth a dependency.
https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable, Iterable

from seqed.serve.batcher import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    parts = [n + '="' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
             for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


class Counter:
    """A monotonically growing number per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *values, amount: float = 1) -> None:
        with self._lock:
            self._values[values] = self._values.get(values, 0) + amount

    def value(self, *values) -> float:
        return self._values.get(values, 0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted(self._values.items())
        for values, v in items:
            yield f"{self.name}{_labels(self.labels, values)} {_number(v)}"


class Gauge:
    """A value read when scraped (e.g. a queue's depth), per label set."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: tuple, read: Callable[[], dict[tuple, float]]):
        self.name, self.help, self.labels, self._read = name, help_text, labels, read

    def samples(self) -> Iterable[str]:
        for values, v in sorted(self._read().items()):
            yield f"{self.name}{_labels(self.labels, values)} {_number(v)}"


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: tuple, labels: tuple = ()):
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, tuple(buckets)
        self._values: dict[tuple, list] = {}  # label values -> [count per bucket (+Inf last), sum]
        self._lock = threading.Lock()

    def observe(self, x: float, *values) -> None:
        with self._lock:
            counts, total = self._values.setdefault(values, [[0] * (len(self.buckets) + 1), 0.0])
            counts[bisect.bisect_left(self.buckets, x)] += 1
            self._values[values][1] = total + x

    def count(self, *values) -> int:
        return sum(self._values.get(values, [[0], 0])[0])

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._values.items())
        for values, (counts, total) in items:
            running = 0
            for bound, n in zip((*self.buckets, "+Inf"), counts):
                running += n
                le = 'le="' + ("+Inf" if bound == "+Inf" else _number(bound)) + '"'
                yield f"{self.name}_bucket{_labels(self.labels, values, le)} {running}"
            yield f"{self.name}_sum{_labels(self.labels, values)} {_number(total)}"
            yield f"{self.name}_count{_labels(self.labels, values)} {running}"


class Metrics:
    """The server's metrics. `queue_depths` reads every model's waiting requests when scraped."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]] = dict):
        self.requests = Counter("seqed_requests_total", "HTTP requests answered", ("route", "status"))
        self.errors = Counter("seqed_errors_total", "error responses by error code", ("code",))
        self.latency = Histogram("seqed_request_seconds", "time from request to response", LATENCY_BUCKETS, ("route",))
        self.batch_sentences = Histogram("seqed_batch_sentences", "sentences per model call", BATCH_BUCKETS,
                                         ("model",))
        self.batch_requests = Histogram("seqed_batch_requests", "requests served by one model call", BATCH_BUCKETS,
                                        ("model",))
        self.sentences = Counter("seqed_sentences_total", "sentences translated", ("model",))
        self.source_tokens = Counter("seqed_source_tokens_total", "source pieces translated (EOS included)",
                                     ("model",))
        self.output_tokens = Counter("seqed_output_tokens_total", "output pieces of the best hypotheses (EOS "
                                                                  "included); tokens/s = rate() of this", ("model",))
        self.model_seconds = Counter("seqed_model_seconds_total", "time spent in model calls", ("model",))
        self.queue = Gauge("seqed_queue_depth", "requests waiting for a model", ("model",),
                           lambda: {(name,): n for name, n in queue_depths().items()})
        self._all = (self.requests, self.errors, self.latency, self.queue, self.batch_sentences, self.batch_requests,
                     self.sentences, self.source_tokens, self.output_tokens, self.model_seconds)

    def record_batch(self, model: str, stats: BatchStats) -> None:
        self.batch_sentences.observe(stats.sentences, model)
        self.batch_requests.observe(stats.requests, model)
        self.sentences.inc(model, amount=stats.sentences)
        self.source_tokens.inc(model, amount=stats.source_tokens)
        self.output_tokens.inc(model, amount=stats.output_tokens)
        self.model_seconds.inc(model, amount=stats.seconds)

    def render(self) -> str:
        lines = []
        for metric in self._all:
            lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}", *metric.samples()]
        return "\n".join(lines) + "\n"
