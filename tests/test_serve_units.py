"""seqed.serve without HTTP: the batcher on a scripted engine, texts, limits, API keys and metrics."""

import threading
import time

import pytest

from seqed.search import Hypothesis
from seqed.serve.batcher import Batcher, DeadlineExceeded, QueueFull
from seqed.serve.engine import DecodeOptions
from seqed.serve.limits import ApiKeys, Limits, RequestError
from seqed.serve.metrics import Metrics
from seqed.serve.texts import join_text, split_text

GREEDY, BEAM = DecodeOptions(beam=1), DecodeOptions(beam=4, nbest=2)


class ScriptedEngine:
    """Translates ids [x, y, ...] to tokens [y, x] per hypothesis (reversal); id 99 makes a call raise.
    `gate` (an Event) holds every call until set, so tests can let requests pile up."""

    name = "scripted"

    def __init__(self):
        self.calls: list[tuple[list[list[int]], DecodeOptions]] = []
        self.gate = threading.Event()
        self.gate.set()

    def translate_ids(self, ids, options):
        self.gate.wait(10)
        self.calls.append(([list(x) for x in ids], options))
        if any(99 in x for x in ids):
            raise ValueError("poisoned sentence")
        return [[Hypothesis(tokens=list(reversed(x)), score=-float(k), log_prob=-float(k))
                 for k in range(options.nbest)] if x else [Hypothesis([], 0.0, 0.0)] for x in ids]

    def detokenize(self, hyps):
        return [[" ".join(map(str, h.tokens)) for h in per] for per in hyps]


def texts_of(result):
    return [[text for text, _ in per] for per in result]


@pytest.fixture
def engine():
    return ScriptedEngine()


def held(engine, **kw):
    """A started batcher whose worker has taken a first job ([[0]]) and waits at the engine's shut gate,
    so what is submitted next piles up in the queue; returns the batcher and that first job."""
    engine.gate.clear()
    batcher = Batcher(engine, **kw).start()
    first = batcher.submit([[0]], GREEDY, 10)
    wait = time.monotonic() + 5
    while not batcher._busy and time.monotonic() < wait:
        time.sleep(0.005)
    time.sleep(kw.get("max_wait_ms", 2) / 1000 + 0.02)  # past the first round's gathering
    return batcher, first


def test_waiting_requests_share_one_call_per_option_group_and_get_their_own_results(engine):
    batcher, first = held(engine, max_batch_tokens=1000, max_wait_ms=50)
    jobs = [batcher.submit([[i, i + 1], []], GREEDY if i % 2 else BEAM, 10) for i in range(2, 12)]
    engine.gate.set()
    assert texts_of(first.result(5)) == [["0"]]
    for i, job in zip(range(2, 12), jobs):
        result = job.result(5)
        assert texts_of(result)[0][0] == f"{i + 1} {i}" and texts_of(result)[1] == [""]
        assert len(result[0]) == (1 if i % 2 else 2)
    assert len(engine.calls) == 3  # the first alone, then one call per option group
    assert sorted(len(ids) for ids, _ in engine.calls[1:]) == [10, 10]
    batcher.stop(5)


def test_a_failing_request_fails_alone(engine):
    batcher, _ = held(engine, max_batch_tokens=1000, max_wait_ms=50)
    good = [batcher.submit([[i, 5]], GREEDY, 10) for i in range(3)]
    bad = batcher.submit([[1], [99, 2]], GREEDY, 10)
    engine.gate.set()
    assert [texts_of(job.result(5)) for job in good] == [[["5 0"]], [["5 1"]], [["5 2"]]]
    with pytest.raises(ValueError, match="poisoned"):
        bad.result(5)
    batcher.stop(5)


def test_cancelled_and_expired_requests_cost_no_model_call(engine):
    batcher, _ = held(engine, max_batch_tokens=1000, max_wait_ms=0)
    gone = batcher.submit([[7, 7]], GREEDY, 10)
    late = batcher.submit([[8, 8]], GREEDY, 0.01)
    kept = batcher.submit([[1, 2]], GREEDY, 10)
    assert gone.cancel()
    time.sleep(0.05)
    engine.gate.set()
    assert texts_of(kept.result(5)) == [["2 1"]]
    with pytest.raises(DeadlineExceeded):
        late.result(5)
    assert all([7, 7] not in ids and [8, 8] not in ids for ids, _ in engine.calls)
    batcher.stop(5)


def test_queue_bound_and_token_budget(engine):
    batcher, _ = held(engine, max_batch_tokens=6, max_wait_ms=50, max_queue=3)
    jobs = [batcher.submit([[i, i]], GREEDY, 10) for i in range(1, 4)]  # 3 tokens each (EOS counted)
    with pytest.raises(QueueFull):
        batcher.submit([[4]], GREEDY, 10)
    assert batcher.depth == 3
    engine.gate.set()
    for job in jobs:
        job.result(5)
    assert [len(ids) for ids, _ in engine.calls] == [1, 2, 1]  # two fit the budget of 6; the third waits
    batcher.stop(5)
    assert batcher.idle


def test_batching_off_runs_one_sentence_per_call(engine):
    batcher = Batcher(engine, max_batch_tokens=0).start()
    assert texts_of(batcher.submit([[1, 2], [3], []], BEAM, 10).result(5)) == [["2 1", "2 1"], ["3", "3"], [""]]
    assert [len(ids) for ids, _ in engine.calls] == [1, 1, 1]
    batcher.stop(5)


def test_texts_keep_lines_and_surrounding_whitespace():
    lines = split_text("  Hello there.\n\n\tBye. \r\n   ")
    assert [line.core for line in lines] == ["Hello there.", "", "Bye.", ""]
    assert join_text(lines, ["Salut.", "", "Au revoir.", ""]) == "  Salut.\n\n\tAu revoir. \r\n   "
    assert join_text(split_text(""), [""]) == ""


def test_limits_name_the_limit():
    limits = Limits(max_texts=2, max_beam=4)
    with pytest.raises(RequestError, match="limit is 2 \\(--max-texts\\)") as err:
        limits.check_texts(["a", "b", "c"])
    assert err.value.status == 422 and err.value.code == "too_many_texts"
    with pytest.raises(RequestError, match="beam must be between 1 and 4"):
        limits.check_search(5, 1)
    with pytest.raises(RequestError, match="nbest must be between 1 and the beam size \\(2\\)"):
        limits.check_search(2, 3)
    with pytest.raises(RequestError, match="text 1, line 2 has 9 source pieces; the limit is 8") as err:
        limits.check_pieces([[3], [1, 2, 9]], 8)
    assert err.value.code == "too_many_pieces"
    with pytest.raises(ValueError, match="--max-texts must be positive"):
        Limits(max_texts=0)


def test_api_keys():
    ApiKeys().check(None)  # no keys: open, a given key ignored
    ApiKeys().check("anything")
    keys = ApiKeys.from_sources(["k1"], environ={"SEQED_API_KEYS": "k2, k3,"})
    assert keys.enabled
    for key in ("k1", "k2", "k3"):
        keys.check(key)
    with pytest.raises(RequestError) as err:
        keys.check(None)
    assert err.value.status == 401
    with pytest.raises(RequestError) as err:
        keys.check("k4")
    assert err.value.status == 403


def test_metrics_text_format():
    metrics = Metrics(lambda: {"m": 3})
    metrics.requests.inc("/v1/translate", "200")
    metrics.latency.observe(0.02, "/v1/translate")
    metrics.errors.inc('a"b')
    text = metrics.render()
    assert 'seqed_requests_total{route="/v1/translate",status="200"} 1' in text
    assert 'seqed_request_seconds_bucket{route="/v1/translate",le="0.01"} 0' in text
    assert 'seqed_request_seconds_bucket{route="/v1/translate",le="0.025"} 1' in text
    assert 'seqed_request_seconds_count{route="/v1/translate"} 1' in text
    assert 'seqed_queue_depth{model="m"} 3' in text and 'code="a\\"b"' in text
    assert "# TYPE seqed_batch_sentences histogram" in text


def test_gathering_goes_on_while_requests_keep_arriving_and_stops_at_an_idle_gap(engine):
    sizes = []
    batcher = Batcher(engine, max_batch_tokens=1000, max_wait_ms=5000, idle_ms=300,
                      on_batch=lambda stats: sizes.append(stats.sentences)).start()
    jobs = []
    for i in range(5):  # 5 requests 30 ms apart: each arrives within the idle gap of the one before
        jobs.append(batcher.submit([[i + 1]], GREEDY, 10))
        time.sleep(0.03)
    time.sleep(1.0)  # a gap longer than idle_ms: the next request opens a call of its own
    jobs.append(batcher.submit([[9]], GREEDY, 10))
    assert [texts_of(job.result(5)) for job in jobs] == [[[str(i + 1)]] for i in range(5)] + [[["9"]]]
    assert sizes == [5, 1]
    batcher.stop(5)


def test_a_lone_request_waits_the_idle_gap_not_the_longest_wait(engine):
    batcher = Batcher(engine, max_batch_tokens=1000, max_wait_ms=5000, idle_ms=20).start()
    start = time.monotonic()
    assert texts_of(batcher.submit([[1, 2]], GREEDY, 10).result(5)) == [["2 1"]]
    assert time.monotonic() - start < 2.0  # far below max_wait_ms
    batcher.stop(5)
