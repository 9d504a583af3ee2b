"""The web page at `/` of `seqed serve`, driven in a real browser (Debian's Chromium through Playwright).

The tiny reversal model of conftest is served by the real app and server (`serve_helpers.LiveServer`),
and the page is used as a person would: type, wait for the translation, hover and arrow through
translated words, paste markup, go over the server's length limit. The browser tests skip (with the
reason) where Chromium, Playwright or the server's extra are missing; CI installs all three (see `.ci/run`).
"""

import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "seqed" / "serve" / "static" / "index.html"
MAX_PIECES = 24           # the server's --max-pieces: small, so going over is easy
HOSTILE = '<img src=x onerror="window.__pwned = 1">'


def post(url: str, body: dict) -> tuple[int, dict]:
    """POST JSON, return (status, JSON body) for success and errors alike."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(browser, request):
    """Base URL of a live server with the tiny reversal model (conftest's) as "tiny" and as "twin", so the
    page offers its model picker, and as "ct2" (its CTranslate2 export, which gives no alignments) where
    ctranslate2 is installed. Asks for `browser` first, so that without one nothing is trained."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'seqed[serve]')")
    pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'seqed[serve]')")
    from seqed.serve.app import create_app
    from seqed.serve.limits import Limits
    from seqed.serve.service import Service
    from serve_helpers import LiveServer, engine

    run, export, _ = request.getfixturevalue("reversal_model")
    service = Service(limits=Limits(max_pieces=MAX_PIECES))
    service.add(engine("tiny", run))
    service.add(engine("twin", run))
    if export is not None:
        service.add(engine("ct2", export, "ctranslate2"))
    service.warm_up()
    live = LiveServer(create_app(service), service)
    yield live.url + "/"
    live.stop()
    service.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        # Playwright's own browser download cannot work here: launch the system's Chromium
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page at `/`, its model list loaded; `page.errors` collects uncaught script errors.

    The server's Content-Security-Policy forbids eval, so every `wait_for_function` here passes a function
    (Playwright evaluates a bare expression with eval while it polls).
    """
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(server)
    pg.wait_for_function("n => document.querySelector('#counter').textContent.includes('/ ' + n)", arg=MAX_PIECES)
    yield pg
    context.close()
    assert pg.errors == []


def test_the_page_is_one_self_contained_file():
    """No CDN, no absolute URL, no HTML parsing of data: checked on the file itself (no browser needed)."""
    html = PAGE.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert not re.search(r"""fetch\(\s*["'`](/|https?:)""", html)          # relative URLs: v1/..., not /v1/...
    assert 'fetch("v1/translate"' in html and 'fetch("v1/models"' in html
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in html, sink


def shown(pg) -> str:
    """The translation as the page shows it."""
    return pg.text_content("#output .text")


def wait_shown(pg, expected: str) -> None:
    pg.wait_for_function("e => (document.querySelector('#output .text') || {}).textContent === e",
                         arg=expected, timeout=10_000)


def word_groups(pieces: list[str]) -> list[int]:
    """Word index of every SentencePiece piece (a piece opening with U+2581 starts a word)."""
    out, w = [], -1
    for p in pieces:
        w += (w < 0 or p.startswith("\u2581"))
        out.append(w)
    return out


def test_typing_translates_and_words_highlight_their_source(page, server):
    sentence = "a b c d e"
    requests = []
    page.on("request", lambda r: requests.append(r) if r.url.endswith("v1/translate") else None)
    page.type("#source", sentence, delay=40)         # faster than the debounce
    status, ref = post(server + "v1/translate", {"q": sentence, "return_alignment": True})
    assert status == 200
    entry = ref["translations"][0]
    assert entry["text"].strip(), "the tiny model translated to nothing: train it longer"
    wait_shown(page, entry["text"])
    assert len(requests) <= 2                         # one at the end (two if the machine stalled a key)
    assert requests[-1].post_data_json["model"] == "tiny"

    # the server's piece-level alignment, mapped to words independently of the page
    src_words, tgt_words = word_groups(entry["source_pieces"]), word_groups(entry["target_pieces"])
    aligned = {}
    for pair in entry["alignment"].split():
        s, t = map(int, pair.split("-"))
        aligned.setdefault(tgt_words[t], set()).add(sentence.split()[src_words[s]])

    def marked() -> set[str]:
        return set(page.eval_on_selector_all("#mirror mark", "ms => ms.map(m => m.textContent)"))

    words = page.locator("#output .w")
    assert words.count() == len(entry["text"].split())
    words.nth(0).hover()
    assert marked() == aligned[0]
    page.mouse.move(5, 5)                             # leaving the translation clears the highlight
    assert marked() == set()

    # without a mouse: focus the first word, arrow to the last
    words.nth(0).focus()
    assert marked() == aligned[0]
    last = words.count() - 1
    for _ in range(last):
        page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.textContent") == entry["text"].split()[last]
    assert marked() == aligned[last]
    assert "ms" in page.text_content("#stats") and "tokens/s" in page.text_content("#stats")


def test_model_picker(page, server):
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")[:2] == ["tiny", "twin"]
    page.fill("#source", "a b")
    wait_shown(page, post(server + "v1/translate", {"q": "a b"})[1]["translations"][0]["text"])
    with page.expect_request(lambda r: r.url.endswith("v1/translate")) as request:
        page.select_option("#model", "twin")
    assert request.value.post_data_json["model"] == "twin"


def test_a_model_without_alignments_is_asked_for_none(page, server):
    if "ct2" not in page.eval_on_selector_all("#model option", "os => os.map(o => o.value)"):
        pytest.skip("ctranslate2 is not installed: no CTranslate2 model to serve")
    page.select_option("#model", "ct2")
    with page.expect_request(lambda r: r.url.endswith("v1/translate")) as request:
        page.fill("#source", "a b c")
    body = request.value.post_data_json
    assert body["model"] == "ct2" and "return_alignment" not in body
    _, ref = post(server + "v1/translate", {"q": "a b c", "model": "ct2"})
    wait_shown(page, ref["translations"][0]["text"])
    assert page.locator("#error").is_hidden()


def test_nbest_greedy_copy_and_clear(page, server):
    page.fill("#nbest", "3")
    page.dispatch_event("#nbest", "change")
    page.fill("#source", "a b c")
    _, ref = post(server + "v1/translate", {"q": "a b c", "nbest": 3, "return_scores": True})
    entry = ref["translations"][0]
    wait_shown(page, entry["text"])
    items = page.locator("#alts li")
    assert items.count() == 3
    expected = [(entry["text"], entry["score"])] + [(a["text"], a["score"]) for a in entry["alternatives"]]
    for i, (text, score) in enumerate(expected):
        assert items.nth(i).locator(".alt").text_content() == text
        assert items.nth(i).locator(".score").text_content() == f"{score:.3f}"

    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("v1/translate") else None)
    # the greedy text can equal the beam's best, so wait for the greedy answer itself, not for the text
    with page.expect_response(lambda r: r.url.endswith("v1/translate")):
        page.check("#mode-greedy")
    _, ref = post(server + "v1/translate", {"q": "a b c", "beam": 1})
    wait_shown(page, ref["translations"][0]["text"])
    page.wait_for_function("() => document.querySelector('#alts').hidden")
    assert sent[-1]["beam"] == 1 and sent[-1]["nbest"] == 1
    assert page.is_disabled("#beam") and page.is_disabled("#nbest")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy")
    page.wait_for_function("() => document.querySelector('#copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == ref["translations"][0]["text"]
    page.click("#clear")
    assert page.input_value("#source") == ""
    assert page.locator("#output .w").count() == 0
    assert page.evaluate("document.activeElement.id") == "source"


def test_ctrl_enter_translates_without_waiting(page, server):
    # set the text without an input event, so only Ctrl+Enter can start a request
    page.eval_on_selector("#source", "(s, v) => { s.value = v; s.focus(); }", "c c a")
    _, ref = post(server + "v1/translate", {"q": "c c a"})
    page.keyboard.press("Control+Enter")
    wait_shown(page, ref["translations"][0]["text"])


def test_markup_in_the_source_is_text_and_runs_nothing(page, server):
    page.fill("#source", HOSTILE)
    _, ref = post(server + "v1/translate", {"q": HOSTILE})
    wait_shown(page, ref["translations"][0]["text"])
    if page.locator("#output .w").count():
        page.locator("#output .w").first.hover()      # draws the source mirror with marks
    page.wait_for_timeout(200)                        # an injected image would have errored by now
    assert page.evaluate("window.__pwned") is None
    assert page.eval_on_selector_all("img", "x => x.length") == 0
    assert page.text_content("#mirror").startswith(HOSTILE)


def test_markup_in_the_model_output_is_text_and_runs_nothing(page):
    """Whatever the server answers, translations and alternatives are inserted as text."""
    hostile = {"text": HOSTILE, "score": -1.0, "alignment": "0-0",
               "alternatives": [{"text": "<b>bold</b>", "score": -2.0}, "<script>window.__pwned = 2</script>"],
               "source_pieces": ["\u2581a"], "target_pieces": ["\u2581<img", "\u2581src=x", "\u2581onerror=..."]}
    page.route("**/v1/translate", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"translations": [hostile]})))
    page.fill("#nbest", "3")
    page.fill("#source", "a")
    wait_shown(page, HOSTILE)
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    assert page.eval_on_selector_all("#output img, #alts img, #alts b, #alts script", "x => x.length") == 0
    assert "<b>bold</b>" in page.text_content("#alts")


def test_a_stale_response_never_replaces_a_newer_one(page, server):
    # the first translate response is held back (and ignores its abort signal) until the test lets it go
    page.evaluate("""() => {
        const real = window.fetch;
        window.fetch = async (url, opts) => {
            if (!String(url).endsWith('v1/translate') || window.__held) return real(url, opts);
            window.__held = 'held';
            const { signal, ...rest } = opts;
            const resp = await real(url, rest);
            while (window.__held !== 'release') await new Promise(r => setTimeout(r, 20));
            window.__held = 'delivered';
            return resp;
        };
    }""")
    page.fill("#source", "a b")
    page.wait_for_function("() => window.__held === 'held'")
    page.fill("#source", "l k j")
    _, ref = post(server + "v1/translate", {"q": "l k j"})
    wait_shown(page, ref["translations"][0]["text"])
    page.evaluate("window.__held = 'release'")
    page.wait_for_function("() => window.__held === 'delivered'")
    page.wait_for_timeout(100)                        # time for the page to read the late response
    assert shown(page) == ref["translations"][0]["text"]


def test_an_over_limit_source_shows_the_servers_message(page, server):
    long = " ".join("abcdefghijkl"[i % 12] for i in range(2 * MAX_PIECES))
    status, ref = post(server + "v1/translate", {"q": long})
    assert status == 422
    page.fill("#source", long)
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "422" in error.text_content()
    assert ref["error"]["message"] in error.text_content()
    assert "over" in page.get_attribute("#counter", "class")
