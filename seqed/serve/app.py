"""The HTTP routes over a `Service`: seqed's API (/v1/...), LibreTranslate's (/translate, /languages,
/detect), /health, /ready, /metrics and the page at /.

Every answer that is not a success is JSON ``{"error": {"code", "message"}}`` with its status, FastAPI's
own 404/405/422 pages and malformed bodies included. Request bodies are parsed here, not by FastAPI's
models, so each mistake gets a message that names the field.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqed.serve.limits import RequestError, invalid
from seqed.serve.service import Service, TextResult

STATIC = Path(__file__).resolve().parent / "static"
OPEN_WHILE_DRAINING = ("/health", "/ready", "/metrics")
ROUTES = ("/", "/v1/translate", "/v1/models", "/health", "/ready", "/metrics", "/translate", "/languages", "/detect")
V1_FIELDS = ("q", "model", "beam", "nbest", "length_penalty", "return_scores", "return_alignment", "api_key")
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "cs": "Czech", "ru": "Russian", "zh": "Chinese", "ja": "Japanese"}
# The page is one file with inline script and style; it only talks to this server.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                                          "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                                          "base-uri 'none'; form-action 'self'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def error_response(service: Service, err: RequestError) -> JSONResponse:
    service.metrics.errors.inc(err.code)
    return JSONResponse(err.to_json(), status_code=err.status, headers=err.headers)


class Guard:
    """ASGI middleware: 503 while draining, 413 for bodies over the limit (declared or streamed), the
    in-flight count that draining waits for, and the request metrics."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, start, path = self.service, time.perf_counter(), scope["path"]
        status = [500]
        limit, received = service.limits.max_body_bytes, [0]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise _too_large(limit)
            return message

        service.in_flight += 1
        try:
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            refusal = None
            if service.draining and path not in OPEN_WHILE_DRAINING:
                refusal = RequestError(503, "draining", "the server is shutting down; retry on another instance",
                                       {"Retry-After": "5", "Connection": "close"})
            elif not declared.isdigit() or int(declared) > limit:
                refusal = _too_large(limit) if declared.isdigit() else RequestError(
                    400, "bad_request", "the Content-Length header is not a number")
            if refusal is not None:
                await error_response(service, refusal)(scope, receive, counted_send)
            else:
                await self.app(scope, limited_receive, counted_send)
        finally:
            service.in_flight -= 1
            route = path if path in ROUTES else "other"
            service.metrics.requests.inc(route, str(status[0]))
            service.metrics.latency.observe(time.perf_counter() - start, route)


def _too_large(limit: int) -> RequestError:
    return RequestError(413, "body_too_large", f"the request body exceeds {limit} bytes (--max-body-bytes)")


# -- request parsing ------------------------------------------------------------------------------------

async def read_params(request: Request, json_only: bool = False) -> dict:
    """Query string, then a JSON, urlencoded-form or multipart-form body on top (LibreTranslate takes all);
    `json_only`: the body is JSON whatever its Content-Type says (seqed's API, e.g. `curl -d` without -H)."""
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        _put(params, key, value)
    body = await request.body()
    if not body.strip():
        return params
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if json_only or ctype in ("", "application/json", "text/json") or ctype.endswith("+json"):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(400, "malformed_json", f"the request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise RequestError(400, "malformed_json", 'the JSON body must be an object, e.g. {"q": "Hello"}')
        params.update(data)
    elif ctype == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise RequestError(400, "malformed_form", "the form body is not valid UTF-8") from None
        for key, value in pairs:
            _put(params, key, value)
    elif ctype == "multipart/form-data":
        try:
            form = await request.form()
        except Exception as err:  # noqa: BLE001 - python-multipart's parse errors
            raise RequestError(400, "malformed_form", f"the multipart body cannot be read: {err}") from None
        for key, value in form.multi_items():
            if isinstance(value, str):
                _put(params, key, value)
    else:
        raise RequestError(415, "unsupported_media_type", f"Content-Type {ctype!r} is not read here; send "
                                                          f"application/json (or a form body)")
    return params


def _put(params: dict, key: str, value: str) -> None:
    """A repeated form or query key (q=a&q=b) becomes a list."""
    key = key[:-2] if key.endswith("[]") else key
    if key in params:
        params[key] = (params[key] if isinstance(params[key], list) else [params[key]]) + [value]
    else:
        params[key] = value


def get_texts(params: dict) -> tuple[list[str], bool]:
    """`q` as a list of texts, and whether it was a list."""
    q = params.get("q")
    if q is None:
        raise invalid('q is missing: give the text to translate, e.g. {"q": "Hello"}')
    if isinstance(q, str):
        return [q], False
    if isinstance(q, list) and all(isinstance(t, str) for t in q):
        return q, True
    raise invalid(f"q must be a string or a list of strings, got {type(q).__name__}")


def get_int(params: dict, key: str) -> Optional[int]:
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise invalid(f"{key} must be an integer, got {value!r}")


def get_float(params: dict, key: str) -> Optional[float]:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)
    except ValueError:
        raise invalid(f"{key} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise invalid(f"{key} must be a finite number, got {value!r}")
    return number


def get_bool(params: dict, key: str) -> bool:
    value = params.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise invalid(f"{key} must be true or false, got {value!r}")


def get_str(params: dict, key: str) -> Optional[str]:
    value = params.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid(f"{key} must be a string, got {value!r}")


def api_key(request: Request, params: dict) -> Optional[str]:
    """The key of `Authorization: Bearer KEY`, `X-API-Key: KEY` or an api_key field."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    value = request.headers.get("x-api-key") or params.get("api_key")
    return value if isinstance(value, str) else None


async def until_disconnect(request: Request, work):
    """Await `work`; if the client disconnects first, cancel it (queued work is then skipped)."""
    task = asyncio.ensure_future(work)

    async def gone():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise RequestError(499, "client_closed_request", "the client closed the connection")


def v1_entry(result: TextResult, *, scores: bool, alternatives: bool, alignment: bool) -> dict:
    entry: dict[str, Any] = {"text": result.text}
    if scores:
        entry["score"] = result.score
    if alternatives:
        entry["alternatives"] = [{"text": text, "score": score} for text, score in result.alternatives]
    if alignment:
        entry.update(alignment=result.alignment, source_pieces=result.source_pieces,
                     target_pieces=result.target_pieces)
    return entry


# -- the app --------------------------------------------------------------------------------------------

def create_app(service: Service, *, cors_origins: tuple = (), static_dir: Path = STATIC) -> FastAPI:
    """The FastAPI app over `service` (CORS off unless `cors_origins` names origins)."""
    app = FastAPI(title="seqed", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def _request_error(request, err: RequestError):
        return error_response(service, err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        message = (f"no route {request.method} {request.url.path}" if err.status_code == 404 else
                   f"{request.method} is not allowed on {request.url.path}" if err.status_code == 405 else
                   str(err.detail))
        return error_response(service, RequestError(err.status_code, code, message))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, err: RequestValidationError):
        return error_response(service, invalid(f"invalid request: {err.errors()}"))

    @app.exception_handler(Exception)
    async def _unexpected(request, err: Exception):
        return error_response(service, RequestError(500, "internal_error", f"{type(err).__name__}: {err}"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if service.draining:
            raise RequestError(503, "draining", "the server is shutting down")
        if service.failed is not None:
            raise RequestError(503, "load_failed", f"loading the models failed: {service.failed}")
        if not service.ready:
            raise RequestError(503, "not_ready", "the server is still loading its models", {"Retry-After": "1"})
        return {"status": "ready", "models": list(service.engines)}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/")
    async def page():
        index = static_dir / "index.html"
        if not index.is_file():
            raise RequestError(404, "not_found", "the web page is not installed (seqed/serve/static/index.html)")
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/v1/models")
    async def models():
        service.engine(None)  # 503 until ready
        return {"models": [service.model_info(e) for e in service.engines.values()]}

    @app.post("/v1/translate")
    async def translate_v1(request: Request):
        params = await read_params(request, json_only=True)
        service.keys.check(api_key(request, params))
        unknown = sorted(set(params) - set(V1_FIELDS))
        if unknown:
            raise invalid(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(V1_FIELDS)}")
        texts, _ = get_texts(params)
        engine = service.engine(get_str(params, "model"))
        alignment = get_bool(params, "return_alignment")
        options = service.options(engine, beam=get_int(params, "beam"), nbest=get_int(params, "nbest"),
                                  length_penalty=get_float(params, "length_penalty"), alignment=alignment)
        results = await until_disconnect(request, service.translate(texts, engine, options))
        return {"translations": [v1_entry(r, scores=get_bool(params, "return_scores"),
                                          alternatives=options.nbest > 1, alignment=alignment) for r in results]}

    # LibreTranslate's API (https://docs.libretranslate.com/): the same fields, from JSON, form or query.

    @app.post("/translate")
    async def translate_libre(request: Request):
        params = await read_params(request)
        service.keys.check(api_key(request, params))
        texts, as_list = get_texts(params)
        service.engine(None)  # 503 until ready
        source, target = get_str(params, "source") or "auto", get_str(params, "target")
        if not target:
            raise invalid("target is missing: give the target language code, e.g. target=fr")
        fmt = get_str(params, "format") or "text"
        if fmt != "text":
            raise invalid(f"format {fmt!r} is not supported: this server translates plain text (format=text)")
        engine = next((e for e in service.engines.values()
                       if source in ("auto", e.languages[0]) and e.languages[1] == target), None)
        if engine is None:
            pairs = ", ".join(f"{e.languages[0]}->{e.languages[1]}" for e in service.engines.values())
            raise RequestError(400, "unsupported_language", f"{source}->{target} is not served; this server "
                                                            f"translates {pairs}")
        n_alt = get_int(params, "alternatives") or 0
        if n_alt < 0:
            raise invalid(f"alternatives must be >= 0, got {n_alt}")
        beam = max(engine.defaults.beam, n_alt + 1)
        options = service.options(engine, beam=beam, nbest=n_alt + 1)
        results = await until_disconnect(request, service.translate(texts, engine, options))
        response: dict[str, Any] = {"translatedText": [r.text for r in results]}
        if n_alt:
            response["alternatives"] = [[text for text, _ in r.alternatives] for r in results]
        if source == "auto":
            response["detectedLanguage"] = [{"confidence": 100.0, "language": engine.languages[0]} for _ in results]
        return response if as_list else {k: v[0] for k, v in response.items()}

    @app.get("/languages")
    async def languages():
        service.engine(None)
        targets: dict[str, list[str]] = {}
        for e in service.engines.values():
            targets.setdefault(e.languages[0], [])
            targets.setdefault(e.languages[1], [])
            if e.languages[1] not in targets[e.languages[0]]:
                targets[e.languages[0]].append(e.languages[1])
        return [{"code": code, "name": LANGUAGE_NAMES.get(code, code), "targets": t} for code, t in targets.items()]

    @app.post("/detect")
    async def detect(request: Request):
        # seqed has no language identifier: the served source languages are the candidates, equally likely
        params = await read_params(request)
        service.keys.check(api_key(request, params))
        texts, as_list = get_texts(params)
        service.engine(None)
        sources = list(dict.fromkeys(e.languages[0] for e in service.engines.values()))
        guess = [{"confidence": round(100.0 / len(sources), 1), "language": code} for code in sources]
        return [guess for _ in texts] if as_list else guess

    app.add_middleware(Guard, service=service)
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-API-Key"])
    return app
