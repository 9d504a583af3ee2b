"""`seqed serve`: translation over HTTP (seqed's API and LibreTranslate's), with a web page."""

from __future__ import annotations

import argparse
import re
import sys
import threading
from functools import partial
from pathlib import Path

from seqed.cli.export import QUANTIZATIONS
from seqed.cli.options import add_search_args

EPILOG_SERVE = """examples:
  seqed serve -c runs/demo                                  # http://127.0.0.1:8000/ (page and API)
  seqed serve -c en-fr=runs/m30k -c ct2=runs/m30k_ct2 --engine ctranslate2 --quantization int8
  curl -s localhost:8000/v1/translate -H 'Content-Type: application/json' -d '{"q": "A dog runs."}'
  SEQED_API_KEYS=k1,k2 seqed serve -c runs/demo --host 0.0.0.0  # keys required; put TLS in front (docs/serving.md)
"""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP (JSON API, LibreTranslate API, web page)",
                       description="Serve one or more models over HTTP: POST /v1/translate, GET /v1/models, "
                                   "LibreTranslate's POST /translate, GET /languages, POST /detect, GET /health, "
                                   "/ready, /metrics, and a page at /. Requests from all clients are batched into "
                                   "few model calls. Needs pip install 'seqed[serve]'. See docs/serving.md.",
                       epilog=EPILOG_SERVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "-c", required=True, action="append", metavar="[NAME=]MODEL",
                   help="a checkpoint, run directory, or (--engine ctranslate2) `seqed export` directory; repeat "
                        "for several models, named NAME (default: the run directory's name); the first is the "
                        "default model")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="seqed", choices=["seqed", "ctranslate2"],
                   help="the engine of checkpoints: seqed (default) or ctranslate2 (exported at start-up; no "
                        "alignments); a `seqed export` directory always runs on ctranslate2")
    g.add_argument("--quantization", default=None, choices=QUANTIZATIONS, metavar="TYPE",
                   help="--engine ctranslate2: compute type, one of " + ", ".join(QUANTIZATIONS))
    g.add_argument("--threads", type=int, default=0, metavar="N",
                   help="intra-op threads of the model (0: the library's default)")
    add_search_args(p)
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch-tokens", type=int, default=4096, metavar="N",
                   help="source pieces the worker gathers from waiting requests into one model call (default "
                        "4096); 0 turns batching off: one sentence per model call")
    g.add_argument("--max-wait-ms", type=float, default=50.0, metavar="MS",
                   help="the longest the worker gathers waiting requests after the first of a call (default 50)")
    g.add_argument("--idle-ms", type=float, default=5.0, metavar="MS",
                   help="... and it starts the call sooner once no request has arrived for this long (default 5): "
                        "a lone client waits only this, a burst of clients lands in one call")
    g = p.add_argument_group("limits (each refusal is a JSON error with its HTTP status)")
    g.add_argument("--max-body-bytes", type=int, default=1 << 20, metavar="N", help="request body (default 1 MiB; 413)")
    g.add_argument("--max-texts", type=int, default=64, metavar="N", help="texts per request (default 64; 422)")
    g.add_argument("--max-sentences", type=int, default=512, metavar="N",
                   help="non-empty lines per request over all its texts (default 512; 422): each is one sentence "
                        "for the model")
    g.add_argument("--max-pieces", type=int, default=256, metavar="N",
                   help="source pieces per sentence, counted with the model's tokenizer (default 256, lowered to "
                        "what the model's positions cover; 422, never truncation)")
    g.add_argument("--max-beam", type=int, default=16, metavar="K", help="largest beam a request may ask (default 16)")
    g.add_argument("--max-queue", type=int, default=256, metavar="N",
                   help="requests waiting per model (default 256); beyond: 429 with Retry-After")
    g.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="per-request deadline in seconds, queueing included (default 30; 504)")
    g.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="on SIGTERM: new requests get 503, running ones get up to S seconds (default 30)")
    g = p.add_argument_group("access")
    g.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="accept this key (repeatable; also SEQED_API_KEYS=k1,k2): translation requests must send "
                        "'Authorization: Bearer KEY' or api_key (401 without, 403 wrong)")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. https://example.org) call the API (repeatable; default: none)")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info)")
    p.set_defaults(func=cmd_serve)


def model_specs(values: list[str]) -> list[tuple[str, str]]:
    """-c values -> (name, path); a name defaults to the run directory's (or the file's) name."""
    specs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not (sep and NAME.fullmatch(name) and not Path(value).exists()):
            name, path = "", value
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"model not found: {path}")
        if not name:
            p = p.resolve()
            name = p.parent.name if p.is_file() and p.name.startswith("checkpoint_") else p.stem
        specs.append((name, path))
    names = [n for n, _ in specs]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"two models are named {n!r}: name them with -c NAME=MODEL")
    return specs


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ValueError("seqed serve needs FastAPI and uvicorn: pip install 'seqed[serve]'") from None
    import torch

    from seqed.serve.app import create_app
    from seqed.serve.engine import load_engine
    from seqed.serve.limits import ApiKeys, Limits
    from seqed.serve.server import serve
    from seqed.serve.service import Service

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.max_batch_tokens < 0 or args.max_wait_ms < 0 or args.idle_ms < 0:
        raise ValueError("--max-batch-tokens, --max-wait-ms and --idle-ms must be >= 0")
    if args.grace < 0:
        raise ValueError(f"--grace must be >= 0, got {args.grace}")
    specs = model_specs(args.checkpoint)
    limits = Limits(max_body_bytes=args.max_body_bytes, max_texts=args.max_texts, max_sentences=args.max_sentences,
                    max_pieces=args.max_pieces,
                    max_beam=args.max_beam, max_queue=args.max_queue, timeout_s=args.timeout)
    keys = ApiKeys.from_sources(args.api_key)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not keys.enabled:
        print(f"seqed: warning: serving on {args.host} without API keys: anyone who reaches it can use it "
              f"(--api-key or SEQED_API_KEYS)", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    service = Service(limits=limits, keys=keys, max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
                      idle_ms=args.idle_ms)
    app = create_app(service, cors_origins=tuple(args.cors_origin))
    loaders = [partial(load_engine, name, path, args.engine, args) for name, path in specs]

    def load() -> None:
        service.load(loaders)
        if service.failed is None:
            names = ", ".join(service.engines)
            print(f"seqed: ready: {names} on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)

    print(f"seqed: loading {len(specs)} model(s); /ready answers 503 until they are warm", file=sys.stderr)
    threading.Thread(target=load, name="seqed-serve-load", daemon=True).start()
    try:
        serve(app, service, host=args.host, port=args.port, grace_s=args.grace, log_level=args.log_level)
    finally:
        service.close(timeout=args.grace)
    if service.failed is not None:
        raise service.failed
    return 0
