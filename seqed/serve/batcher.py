"""`Batcher`: one worker thread owns a model and translates what many requests left waiting, in few calls.

Requests wait in a bounded queue. The worker takes the first, then whatever else keeps arriving: it
stops gathering once no request has come for `idle_ms`, once `max_wait_ms` have passed since the
first, or once `max_batch_tokens` source pieces are gathered (a request that would overflow the
budget waits for the next round). The reasoning: when a call ends, its clients' next requests reach
the queue one by one as the HTTP layer answers and parses them, a fraction of a millisecond apart, and
a fixed short wait can start a call on the first few of them and leave the rest to the next one.
Measured against a fixed 2 ms wait (`benchmarks/serve.py --gathering`; docs/serving.md), the gain
was small, within the noise between runs; a lone client pays the idle gap.
The worker then drops the ones whose client gave up (cancelled futures) or whose
deadline passed, groups the rest by decoding options, and runs one `translate_ids` call per group,
longest sentences first. Each request gets its own slice of the result through its future. When a
group's call raises, its requests are run again one by one, so only the request that fails gets
the error. With ``max_batch_tokens=0`` batching is off: one sentence per model call (as
OpenNMT-py's and LibreTranslate's servers run).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from seqed.search import Hypothesis
from seqed.serve.engine import DecodeOptions, Engine


class QueueFull(Exception):
    """The model's queue holds `max_queue` requests already."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before the worker reached it."""


@dataclass
class Job:
    """One request's sentences (piece ids, [] for a blank one) and where its result goes.

    The future's result: per sentence, its hypotheses with their texts, ``[(text, Hypothesis), ...]``.
    """

    ids: list[list[int]]
    options: DecodeOptions
    deadline: float  # time.monotonic() after which nobody waits for the result
    future: Future = field(default_factory=Future)

    @property
    def tokens(self) -> int:
        return sum(len(x) + 1 for x in self.ids if x)  # + EOS, as the model sees them


@dataclass
class BatchStats:
    """What one model call did (handed to the `on_batch` callback)."""

    sentences: int
    requests: int
    source_tokens: int
    output_tokens: int
    seconds: float


class Batcher:
    """The worker thread of one `Engine`.

    Args:
        engine: the model; only the worker thread touches it once `start` ran.
        max_batch_tokens: source pieces (EOS included) gathered into one round; 0: no batching.
        max_wait_ms: the longest the worker gathers requests after the first of a round.
        idle_ms: gathering also ends once no request has arrived for this long (at most `max_wait_ms`).
        max_queue: requests that may wait; `submit` raises `QueueFull` beyond.
        on_batch: called in the worker thread after every model call with its `BatchStats`.
    """

    def __init__(self, engine: Engine, *, max_batch_tokens: int = 4096, max_wait_ms: float = 50.0,
                 idle_ms: float = 5.0, max_queue: int = 256,
                 on_batch: Optional[Callable[[BatchStats], None]] = None):
        if max_batch_tokens < 0 or max_wait_ms < 0 or idle_ms < 0 or max_queue < 1:
            raise ValueError(f"need max_batch_tokens >= 0, max_wait_ms >= 0, idle_ms >= 0, max_queue >= 1; got "
                             f"{max_batch_tokens}, {max_wait_ms}, {idle_ms}, {max_queue}")
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.idle_gap = min(idle_ms, max_wait_ms) / 1000
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._carry: Optional[Job] = None  # taken from the queue but left for the next round
        self._busy = False
        self._on_batch = on_batch
        self._thread = threading.Thread(target=self._work, name=f"seqed-serve-{engine.name}", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def submit(self, ids: Sequence[Sequence[int]], options: DecodeOptions, timeout_s: float) -> Future:
        """Queue one request; its future gets ``[[(text, Hypothesis), ...] per sentence]`` or an exception.

        Raises:
            QueueFull: the queue is full (nothing was queued).
        """
        job = Job([list(x) for x in ids], options, deadline=time.monotonic() + timeout_s)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are waiting for model {self.engine.name!r}") from None
        return job.future

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken by the worker)."""
        return self._queue.qsize() + (self._carry is not None)

    @property
    def idle(self) -> bool:
        return not self._busy and self.depth == 0

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish what is queued, then end the worker thread (waits at most about `timeout` seconds)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # still busy after the grace period: the daemon thread ends with the process
        self._thread.join(timeout)

    # -- the worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._carry or self._queue.get()
            self._carry = None
            if job is None:
                return
            self._busy = True
            jobs = [job] + self._gather(job.tokens)
            try:
                self._run(jobs)
            finally:
                self._busy = False

    def _gather(self, tokens: int) -> list[Job]:
        """More waiting jobs, up to the token budget, an idle gap of `idle_ms` or the end of `max_wait_ms`."""
        jobs: list[Job] = []
        if self.max_batch_tokens == 0:
            return jobs
        last = time.monotonic()  # when the latest job arrived (or was found waiting)
        end = last + self.max_wait
        while tokens < self.max_batch_tokens:
            timeout = min(end, last + self.idle_gap) - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            last = time.monotonic()
            if job is None or tokens + job.tokens > self.max_batch_tokens:
                self._carry = job  # the stop sentinel or an overflowing job opens the next round
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs

    def _run(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue  # the client left: its work is skipped
            if now > job.deadline:
                job.future.set_exception(DeadlineExceeded("the request's deadline passed while it waited"))
                continue
            live.append(job)
        groups: dict[DecodeOptions, list[Job]] = defaultdict(list)
        for job in live:
            groups[job.options].append(job)
        for options, group in groups.items():
            if self.max_batch_tokens == 0:
                for job in group:
                    self._per_sentence(job)
            else:
                self._translate(group, options)

    def _translate(self, group: list[Job], options: DecodeOptions) -> None:
        """One model call for the whole group; on failure, one call per job so only the culprit fails."""
        ids = [x for job in group for x in job.ids]
        try:
            results = self._call(ids, options, len(group))
        except Exception as err:  # noqa: BLE001 - any failure is the request's, never the worker's
            if len(group) == 1:
                group[0].future.set_exception(err)
                return
            for job in group:
                self._translate([job], options)
            return
        start = 0
        for job in group:
            job.future.set_result(results[start:start + len(job.ids)])
            start += len(job.ids)

    def _per_sentence(self, job: Job) -> None:
        try:
            results = [self._call([x], job.options, 1)[0] for x in job.ids]
        except Exception as err:  # noqa: BLE001
            job.future.set_exception(err)
            return
        job.future.set_result(results)

    def _call(self, ids: list[list[int]], options: DecodeOptions, requests: int) -> list[list[tuple[str, Hypothesis]]]:
        start = time.perf_counter()
        hyps = self.engine.translate_ids(ids, options)
        texts = self.engine.detokenize(hyps)
        if self._on_batch is not None:
            self._on_batch(BatchStats(
                sentences=sum(1 for x in ids if x), requests=requests, source_tokens=sum(len(x) + 1 for x in ids if x),
                output_tokens=sum(len(per[0].tokens) + 1 for x, per in zip(ids, hyps) if x),
                seconds=time.perf_counter() - start))
        return [list(zip(t, h)) for t, h in zip(texts, hyps)]
