"""seqed serve through real HTTP: both APIs (LibreTranslate's through its own client), every refusal as
JSON with its status, keys, CORS, the page, queue bound, deadline, client disconnects and draining."""

import json
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ctranslate2")

from seqed.serve.app import create_app  # noqa: E402
from seqed.serve.limits import ApiKeys, Limits  # noqa: E402
from seqed.serve.service import Service  # noqa: E402
from serve_helpers import LiveServer, engine  # noqa: E402


@pytest.fixture(scope="module")
def live(reversal_model):
    """One server with two models: "rev" (seqed's engine, the default) and "ct2" (its export)."""
    run, export, sources = reversal_model
    service = Service(limits=Limits(max_texts=8, max_sentences=12, max_pieces=40))
    service.add(engine("rev", run))
    service.add(engine("ct2", export))
    service.warm_up()
    server = LiveServer(create_app(service, cors_origins=("https://allowed.example",)), service)
    yield server, service, sources
    server.stop()
    service.close()


def post(server, path, body=None, **kw):
    return httpx.post(server.url + path, json=body, timeout=30, **kw) if body is not None else \
        httpx.post(server.url + path, timeout=30, **kw)


def error_of(response, status, code, match=""):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and match in error["message"], error
    return error


def test_v1_translate_one_entry_per_input_in_order(live, one_thread):
    server, service, sources = live
    texts = sources[:6]
    offline = service.engines["rev"].translator
    expected = [t for per in offline.detokenize(offline.translate(texts)) for t in per[:1]]
    r = post(server, "/v1/translate", {"q": texts})
    assert r.status_code == 200
    assert [t["text"] for t in r.json()["translations"]] == expected
    assert post(server, "/v1/translate", {"q": texts[0]}).json() == {"translations": [{"text": expected[0]}]}
    # lines, blank lines and surrounding whitespace come back as they were
    r = post(server, "/v1/translate", {"q": ["", "  " + texts[0] + " \n\n" + texts[1], "   "]})
    assert [t["text"] for t in r.json()["translations"]] == ["", f"  {expected[0]} \n\n{expected[1]}", "   "]


def test_v1_scores_alternatives_alignment_and_model_choice(live, one_thread):
    server, _, sources = live
    r = post(server, "/v1/translate", {"q": sources[:2], "beam": 4, "nbest": 3, "return_scores": True,
                                       "return_alignment": True, "length_penalty": 0.0}).json()
    for entry in r["translations"]:
        assert entry["score"] <= 0 and len(entry["alternatives"]) == 2
        assert entry["score"] >= entry["alternatives"][0]["score"] >= entry["alternatives"][1]["score"]
        pairs = [tuple(map(int, p.split("-"))) for p in entry["alignment"].split()]
        assert len(pairs) == len(entry["target_pieces"])  # one source piece per output piece
        assert all(0 <= i < len(entry["source_pieces"]) and 0 <= j < len(entry["target_pieces"]) for i, j in pairs)
    greedy_seqed = post(server, "/v1/translate", {"q": sources[:5], "beam": 1}).json()
    greedy_ct2 = post(server, "/v1/translate", {"q": sources[:5], "beam": 1, "model": "ct2"}).json()
    assert greedy_seqed == greedy_ct2  # the two engines agree in greedy search
    error_of(post(server, "/v1/translate", {"q": "a b", "model": "nope"}), 404, "unknown_model", "rev, ct2")
    error_of(post(server, "/v1/translate", {"q": "a b", "model": "ct2", "return_alignment": True}), 422,
             "invalid_request", "--engine seqed")


def test_v1_models_health_ready_metrics(live):
    server, service, _ = live
    models = httpx.get(server.url + "/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["rev", "ct2"] and models[0]["default"] and not models[1]["default"]
    rev = models[0]
    assert rev["engine"] == "seqed" and models[1]["engine"] == "ctranslate2"
    assert rev["languages"] == {"source": "en", "target": "fr"}
    assert rev["decoding"]["beam"] == 5
    assert {"length_penalty", "max_len_a", "max_len_b", "min_len"} <= set(rev["decoding"])
    assert rev["limits"] == {"max_texts": 8, "max_sentences": 12, "max_pieces": 40, "max_beam": 16,
                             "max_body_bytes": 1 << 20,
                             "timeout_s": 30.0}
    assert len(rev["checkpoint"]["sha256"]) == 64 and rev["alignment"] and not models[1]["alignment"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready", "models": ["rev", "ct2"]}
    post(server, "/v1/translate", {"q": ["a b c", "d e"]})
    text = httpx.get(server.url + "/metrics").text
    assert 'seqed_requests_total{route="/v1/translate",status="200"}' in text
    assert 'seqed_batch_sentences_count{model="rev"}' in text and 'seqed_queue_depth{model="rev"} 0' in text
    assert 'seqed_output_tokens_total{model="rev"}' in text


def test_every_bad_input_is_json_with_its_status(live):
    server, _, sources = live
    url = server.url + "/v1/translate"
    error_of(httpx.post(url, content=b'{"q": "a b",', headers={"content-type": "application/json"}), 400,
             "malformed_json", "not valid JSON")
    error_of(httpx.post(url, content=b'["a b"]'), 400, "malformed_json", "must be an object")
    error_of(post(server, "/v1/translate", {"text": "a b"}), 422, "invalid_request", "unknown field(s) text")
    error_of(post(server, "/v1/translate", {}), 422, "invalid_request", "q is missing")
    error_of(post(server, "/v1/translate", {"q": ["a", 3]}), 422, "invalid_request", "list of strings")
    error_of(post(server, "/v1/translate", {"q": []}), 422, "invalid_request", "no text")
    error_of(post(server, "/v1/translate", {"q": "a", "beam": 17}), 422, "invalid_request", "between 1 and 16")
    error_of(post(server, "/v1/translate", {"q": "a", "beam": 0}), 422, "invalid_request", "between 1 and 16")
    error_of(post(server, "/v1/translate", {"q": "a", "beam": 2, "nbest": 3}), 422, "invalid_request", "nbest")
    error_of(post(server, "/v1/translate", {"q": "a", "beam": "five"}), 422, "invalid_request",
             "beam must be an integer")
    error_of(post(server, "/v1/translate", {"q": "a", "beam": True}), 422, "invalid_request", "beam must be an integer")
    error_of(post(server, "/v1/translate", {"q": "a", "length_penalty": "NaN"}), 422, "invalid_request", "finite")
    error_of(post(server, "/v1/translate", {"q": "a", "return_scores": "maybe"}), 422, "invalid_request",
             "true or false")
    error_of(post(server, "/v1/translate", {"q": ["a"] * 9}), 422, "too_many_texts", "limit is 8 (--max-texts)")
    error_of(post(server, "/v1/translate", {"q": ["a\n\nb\n" * 6, "c"]}), 422, "too_many_sentences",
             "13 non-empty lines in one request; the limit is 12 (--max-sentences)")
    error_of(post(server, "/v1/translate", {"q": ["a b", "ok\n" + " ".join(["a"] * 50)]}), 422, "too_many_pieces",
             "text 1, line 1 has")
    big = {"q": "a " * (1 << 19) + "b"}
    error_of(post(server, "/v1/translate", big), 413, "body_too_large", "1048576 bytes")

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        yield b'{"q": "'
        for _ in range(20):
            yield b"a " * 60000
        yield b'"}'
    error_of(httpx.post(url, content=chunks()), 413, "body_too_large")
    error_of(httpx.get(server.url + "/nowhere"), 404, "not_found", "GET /nowhere")
    error_of(httpx.get(url), 405, "method_not_allowed")
    error_of(httpx.post(server.url + "/translate", content=b"q=a", headers={"content-type": "text/csv"}), 415,
             "unsupported_media_type")
    assert httpx.get(server.url + "/health").status_code == 200  # still alive after all that


def test_libretranslate_client_works_unchanged(live, one_thread):
    from libretranslatepy import LibreTranslateAPI

    server, service, sources = live
    offline = service.engines["rev"].translator
    expected = offline.detokenize(offline.translate(sources[:3]))
    client = LibreTranslateAPI(server.url)
    assert client.translate(sources[0], "en", "fr") == expected[0][0]
    assert client.languages() == [{"code": "en", "name": "English", "targets": ["fr"]},
                                  {"code": "fr", "name": "French", "targets": []}]
    assert client.detect(sources[0]) == [{"confidence": 100.0, "language": "en"}]
    # a JSON body with a list, alternatives and source "auto", as LibreTranslate's own server takes them
    r = post(server, "/translate", {"q": sources[:3], "source": "auto", "target": "fr", "alternatives": 2,
                                    "format": "text"}).json()
    assert r["translatedText"] == [e[0] for e in expected]
    assert [len(a) for a in r["alternatives"]] == [2, 2, 2]
    assert r["detectedLanguage"][0] == {"confidence": 100.0, "language": "en"}
    r = httpx.post(server.url + "/translate", params={"q": sources[0], "source": "en", "target": "fr"})
    assert r.json() == {"translatedText": expected[0][0]}
    r = httpx.post(server.url + "/translate", files={"q": (None, sources[0]), "source": (None, "en"),
                                                     "target": (None, "fr")})
    assert r.json() == {"translatedText": expected[0][0]}  # multipart form
    error_of(post(server, "/translate", {"q": "a", "source": "en", "target": "de"}), 400, "unsupported_language",
             "en->fr")
    error_of(post(server, "/translate", {"q": "a", "source": "en"}), 422, "invalid_request", "target is missing")
    error_of(post(server, "/translate", {"q": "a", "source": "en", "target": "fr", "format": "html"}), 422,
             "invalid_request", "format")


def test_api_keys_cors_and_page(live, tmp_path):
    server, service, _ = live
    service.keys = ApiKeys(["sekrit"])
    try:
        error_of(post(server, "/v1/translate", {"q": "a"}), 401, "missing_api_key", "Authorization: Bearer")
        error_of(post(server, "/v1/translate", {"q": "a"}, headers={"Authorization": "Bearer nope"}), 403,
                 "invalid_api_key")
        assert post(server, "/v1/translate", {"q": "a"}, headers={"Authorization": "Bearer sekrit"}).status_code == 200
        from libretranslatepy import LibreTranslateAPI

        assert LibreTranslateAPI(server.url, api_key="sekrit").translate("a b", "en", "fr")
        assert post(server, "/translate", {"q": "a", "target": "fr", "api_key": "sekrit"}).status_code == 200
        error_of(post(server, "/translate", {"q": "a", "target": "fr", "api_key": "x"}), 403, "invalid_api_key")
        assert httpx.get(server.url + "/v1/models").status_code == 200  # the page reads it before any key
    finally:
        service.keys = ApiKeys()
    assert post(server, "/translate", {"q": "a", "target": "fr", "api_key": "ignored"}).status_code == 200
    ok = httpx.options(server.url + "/v1/translate", headers={"Origin": "https://allowed.example",
                                                              "Access-Control-Request-Method": "POST"})
    assert ok.headers["access-control-allow-origin"] == "https://allowed.example"
    other = post(server, "/v1/translate", {"q": "a"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # the page: whatever file is installed, else a JSON 404
    page = httpx.get(server.url + "/")
    if page.status_code == 200:
        assert page.headers["content-type"].startswith("text/html") and "content-security-policy" in page.headers
    else:
        error_of(page, 404, "not_found", "index.html")
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    app = create_app(service, static_dir=tmp_path)
    own = LiveServer(app, service)
    try:
        r = httpx.get(own.url + "/")
        assert r.status_code == 200 and r.text.startswith("<!doctype html>")
        assert "access-control-allow-origin" not in post(own, "/v1/translate", {"q": "a"},
                                                         headers={"Origin": "https://x.example"}).headers
    finally:
        own.stop()


# -- a model held at a gate: queue bound, deadline, disconnects, draining ---------------------------------


@pytest.fixture
def gated(reversal_model):
    """A server whose model waits at `gate` before every call; `calls` records what reached it."""
    run, _, _ = reversal_model
    service = Service(limits=Limits(max_queue=2, timeout_s=1.5), max_wait_ms=0)
    rev = engine("rev", run)
    gate, calls, translate_ids = threading.Event(), [], rev.translate_ids

    def held(ids, options):
        gate.wait(20)
        calls.append([list(x) for x in ids])
        return translate_ids(ids, options)

    rev.translate_ids = held
    service.add(rev)
    gate.set()
    service.warm_up()
    calls.clear()
    gate.clear()
    server = LiveServer(create_app(service), service, grace_s=10)
    yield server, service, gate, calls
    gate.set()
    server.stop()
    service.close()


def in_thread(fn, *args):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", fn(*args)), daemon=True)
    thread.start()
    return thread, out


def wait_for(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_full_queue_429_and_deadline_504(gated):
    server, service, gate, calls = gated
    first, first_out = in_thread(post, server, "/v1/translate", {"q": "a b"})
    wait_for(lambda: service.batchers["rev"]._busy)  # taken by the worker, held at the gate
    queued = [in_thread(post, server, "/v1/translate", {"q": f"c {x}"}) for x in "de"]
    wait_for(lambda: service.batchers["rev"].depth == 2)
    r = error_of(post(server, "/v1/translate", {"q": "f"}), 429, "queue_full", "retry")
    assert r and post(server, "/v1/translate", {"q": "f"}).headers["retry-after"] == "1"
    for thread, _ in [(first, first_out), *queued]:
        thread.join(10)
    for _, out in [(first, first_out), *queued]:
        error_of(out["r"], 504, "timeout", "--timeout")
    gate.set()
    wait_for(lambda: service.idle)
    assert len(calls) == 1  # the queued requests whose clients were answered 504 were skipped


def test_client_disconnect_costs_only_its_own_work(gated, reversal_model):
    server, service, gate, calls = gated
    first, out = in_thread(post, server, "/v1/translate", {"q": "a b"})
    wait_for(lambda: service.batchers["rev"]._busy)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/translate", json={"q": "l k j"}, timeout=0.3)
    time.sleep(0.3)  # the server notices the disconnect and cancels the queued job
    gate.set()
    first.join(10)
    assert out["r"].status_code == 200
    wait_for(lambda: service.idle)
    assert len(calls) == 1 and service.batchers["rev"].depth == 0


def test_sigterm_drains_then_stops(gated):
    import signal

    server, service, gate, calls = gated
    running, out = in_thread(post, server, "/v1/translate", {"q": "a b"})
    wait_for(lambda: service.batchers["rev"]._busy)
    server.server.handle_exit(signal.SIGTERM, None)  # what the signal handler calls
    error_of(post(server, "/v1/translate", {"q": "c"}), 503, "draining", "shutting down")
    error_of(httpx.get(server.url + "/ready"), 503, "draining")
    assert server.thread.is_alive()
    gate.set()
    running.join(10)
    assert out["r"].status_code == 200 and out["r"].json()["translations"][0]["text"] is not None
    server.thread.join(10)
    assert not server.thread.is_alive()


def test_not_ready_is_503(reversal_model):
    service = Service()
    server = LiveServer(create_app(service), service)
    try:
        error_of(httpx.get(server.url + "/ready"), 503, "not_ready")
        error_of(post(server, "/v1/translate", {"q": "a"}), 503, "not_ready")
        error_of(httpx.get(server.url + "/v1/models"), 503, "not_ready")
        assert httpx.get(server.url + "/health").status_code == 200
        assert json.loads(httpx.get(server.url + "/ready").text)["error"]["message"]
    finally:
        server.stop()
