"""`seqed serve` under load vs offline translation of the same sentences, in one run.

Parts (all on the same checkpoint, beam 5, the checkpoint's length penalty and limits, fp32 seqed engine):

1. offline, in process and warm: `Translator.translate` over the whole file (after a warm-up), and
   offline as the whole `seqed translate -i FILE` command (start-up, loading and warm-up included);
2. the server (`seqed serve` in a child process) under a load generator of C concurrent clients
   (default 1, 8, 32, 128), each sending one sentence per request until every sentence was sent once:
   sentences/s, p50/p99 latency, errors, and how many outputs equal the offline ones; once with
   dynamic batching and once with batching off (`--max-batch-tokens 0`: one sentence per model call);
3. a soak of N mixed requests (default 20,000: sentences, lists, LibreTranslate forms, and malformed
   or over-limit ones) against the batching server, recording its RSS as it goes;
4. batch invariance at lower precision: the share of sentences that translate to the same tokens
   alone and in one batch, for seqed bf16 and CTranslate2 int8 (fp32 is pinned by the tests).

The load generator runs in this process, on the same machine as the server: on a small machine it
takes CPU from the server, so it is a lean HTTP/1.1 client on asyncio streams (one keep-alive
connection per client) and records the CPU it spent per request (the config records the thread counts).

    python benchmarks/serve.py -c runs/multi30k_transformer          # the full run (tens of minutes)
    python benchmarks/serve.py -c RUN --quick                        # a smoke test of every part

Writes benchmarks/results/serve.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlencode

import benchlib
from benchlib import BenchError

SECTION = "serve"


# -- the server in a child process ------------------------------------------------------------------------

class ServerProcess:
    """`seqed serve` on a free port; `rss_mb()` reads its resident memory."""

    def __init__(self, checkpoint: str, extra: list[str], threads: int, log: Path):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w", encoding="utf-8")
        argv = [sys.executable, "-m", "seqed", "serve", "-c", checkpoint, "--port", str(self.port),
                "--threads", str(threads), "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=benchlib.REPO,
                                     env=benchlib.thread_env(threads))
        self.started = time.perf_counter()
        self.ready_seconds = self._wait_ready()

    def _wait_ready(self, timeout: float = 300) -> float:
        import httpx

        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise BenchError(f"seqed serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BenchError(f"seqed serve was not ready within {timeout:g} s; see {self.log.name}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        """SIGTERM (the server drains) and its exit status."""
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        finally:
            self.log.close()


# -- the load generator --------------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection that speaks just what the load needs: a POST with a
    Content-Length body, answered with a Content-Length body (as uvicorn answers every route here).

    The load generator shares the machine's cores with the server, so it is kept lean: httpx's
    AsyncClient spends several times the CPU per request of these few stream calls (`client_cpu_ms`
    in each row records what this one spent)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a keep-alive connection the server closed is opened again once
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {content_type}\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
            try:
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("the server closed the connection")
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
                continue
            length, close = 0, False
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            data = await self.reader.readexactly(length)
            if close:
                self.close()
            return int(status_line.split()[1]), data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def encode_body(body) -> tuple[str, bytes, str]:
    """A load body -> (path, bytes, content type): a dict is JSON for /v1/translate; a tuple is
    (path, {"data": form} | {"content": bytes, "headers": {...}})."""
    if not isinstance(body, tuple):
        return "/v1/translate", json.dumps(body).encode(), "application/json"
    path, kw = body
    if "data" in kw:
        return path, urlencode(kw["data"]).encode(), "application/x-www-form-urlencoded"
    return path, kw["content"], kw.get("headers", {}).get("content-type", "application/octet-stream")


async def _clients(url: str, bodies: list, concurrency: int, on_done=None):
    """Send every body once from `concurrency` clients, one request at a time each (one connection
    each); per body its (status, JSON or None, seconds)."""
    host, port = url.split("//")[1].split(":")
    encoded = [encode_body(b) for b in bodies]
    results: list = [None] * len(bodies)
    todo = iter(range(len(bodies)))

    async def client():
        conn = Connection(host, int(port))
        try:
            for i in todo:
                start = time.perf_counter()
                try:
                    status, raw = await conn.post(*encoded[i])
                    try:
                        data = json.loads(raw)
                    except ValueError:
                        data = None
                    results[i] = (status, data, time.perf_counter() - start)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    conn.close()
                    results[i] = (0, {"transport_error": str(err)}, time.perf_counter() - start)
                if on_done is not None:
                    on_done(i)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def load_run(url: str, sentences: list[str], concurrency: int, offline: list[str]) -> dict:
    """Every sentence sent once, one per request, from `concurrency` clients."""
    start, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(_clients(url, [{"q": s} for s in sentences], concurrency))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    latencies = sorted(r[2] for r in results)
    ok = [r[0] == 200 for r in results]
    texts = [r[1]["translations"][0]["text"] if good else None for r, good in zip(results, ok)]
    return {"clients": concurrency, "sentences": len(sentences), "seconds": round(seconds, 3),
            "sentences_per_s": len(sentences) / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "errors": len(ok) - sum(ok), "same_as_offline": sum(t == o for t, o in zip(texts, offline)),
            "client_cpu_ms": round(1000 * cpu / len(sentences), 3)}


SOAK_KINDS = ("sentence", "list", "libretranslate_form", "malformed_json", "beam_over_limit", "unknown_field",
              "too_many_texts")
EXPECTED_STATUS = {"sentence": 200, "list": 200, "libretranslate_form": 200, "malformed_json": 400,
                   "beam_over_limit": 422, "unknown_field": 422, "too_many_texts": 422}


def soak_bodies(sentences: list[str], n: int, max_texts: int, seed: int = 0) -> tuple[list, list[str]]:
    """`n` mixed requests (70% well-formed) and the kind of each."""
    rng = random.Random(seed)
    weights = (50, 10, 10, 10, 8, 6, 6)
    bodies, kinds = [], []
    for _ in range(n):
        kind = rng.choices(SOAK_KINDS, weights)[0]
        s = rng.choice(sentences)
        body = {"sentence": lambda: {"q": s},
                "list": lambda: {"q": rng.sample(sentences, 4), "return_scores": True},
                "libretranslate_form": lambda: ("/translate", {"data": {"q": s, "source": "en", "target": "fr"}}),
                "malformed_json": lambda: ("/v1/translate", {"content": b'{"q": "' + s.encode()[:20],
                                                             "headers": {"content-type": "application/json"}}),
                "beam_over_limit": lambda: {"q": s, "beam": 99},
                "unknown_field": lambda: {"text": s},
                "too_many_texts": lambda: {"q": [s] * (max_texts + 1)}}[kind]()
        bodies.append(body)
        kinds.append(kind)
    return bodies, kinds


def soak(server: ServerProcess, sentences: list[str], n: int, concurrency: int, samples: int = 20) -> dict:
    bodies, kinds = soak_bodies(sentences, n, max_texts=64)
    every = max(1, n // samples)
    rss = [(0, round(server.rss_mb(), 1))]
    done = [0]

    def on_done(_):
        done[0] += 1
        if done[0] % every == 0:
            rss.append((done[0], round(server.rss_mb(), 1)))

    start = time.perf_counter()
    results = asyncio.run(_clients(server.url, bodies, concurrency, on_done=on_done))
    seconds = time.perf_counter() - start
    by_status: dict[str, int] = {}
    unexpected = 0
    for (status, data, _), kind in zip(results, kinds):
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        json_error = status == 200 or (isinstance(data, dict) and set(data.get("error", {})) == {"code", "message"})
        unexpected += status != EXPECTED_STATUS[kind] or not json_error
    half = [mb for k, mb in rss if k >= n // 2]
    return {"requests": n, "clients": concurrency, "seconds": round(seconds, 1), "kinds": dict(
        (k, kinds.count(k)) for k in SOAK_KINDS), "by_status": by_status, "unexpected": unexpected,
        "rss_mb": rss, "rss_growth_second_half_mb": round(max(half) - min(half), 1) if half else None}


# -- offline and invariance ---------------------------------------------------------------------------

def settings(args, *extra: str):
    """`seqed serve` options for the in-process translators (the checkpoint's search defaults)."""
    from seqed.cli.main import build_parser

    return build_parser().parse_args(["serve", "-c", args.checkpoint, "--beam", str(args.beam),
                                      "--threads", str(args.threads), "--precision", "fp32", *extra])


def offline_in_process(args, sentences: list[str]) -> tuple[dict, list[str]]:
    from seqed.serve.engine import load_engine

    engine = load_engine("offline", args.checkpoint, "seqed", settings(args))
    engine.translator.translate(sentences[:16])  # warm-up
    start = time.perf_counter()
    hyps = engine.translator.translate(sentences)
    texts = [t[0] for t in engine.detokenize(hyps)]
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "sentences_per_s": len(sentences) / seconds}, texts


def offline_command(args, src: Path, out: Path) -> dict:
    argv = [sys.executable, "-m", "seqed", "translate", "-c", args.checkpoint, "--beam", str(args.beam),
            "--precision", "fp32", "-i", str(src), "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=benchlib.thread_env(args.threads),
                          cwd=benchlib.REPO)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"seqed translate failed: {proc.stderr.strip()[-500:]}")
    n = len(out.read_text(encoding="utf-8").splitlines())
    return {"seconds": round(seconds, 3), "sentences_per_s": n / seconds, "argv": argv}


def invariance(args, sentences: list[str]) -> dict:
    """Share of sentences with the same tokens alone and inside one batch, per lower precision."""
    from seqed.serve.engine import load_engine

    out = {}
    for name, kind, extra in (("seqed_bf16", "seqed", ["--precision", "bf16"]),
                              ("ctranslate2_int8", "ctranslate2", ["--quantization", "int8"])):
        engine = load_engine(name, args.checkpoint, kind, settings(args, *extra))
        options = engine.defaults
        ids = engine.encode(sentences)
        together = engine.translate_ids(ids, options)
        same = sum(engine.translate_ids([x], options)[0][0].tokens == t[0].tokens for x, t in zip(ids, together))
        engine.close()
        out[name] = {"sentences": len(ids), "same": same, "rate": same / len(ids)}
    return out


# -- the report ------------------------------------------------------------------------------------------

def verdict(payload: dict) -> dict:
    """Issue 26's targets at 32+ clients: >= 0.8x offline and >= 3x no batching, no errors, outputs
    identical to offline; RSS flat over the soak. Offline is measured both ways: in process and warm
    (`vs_offline`, the strict one) and as the whole `seqed translate` command (`vs_offline_command`)."""
    offline = payload["offline"]["in_process"]["sentences_per_s"]
    command = payload["offline"]["command"]["sentences_per_s"]
    rows = {r["clients"]: r for r in payload["server"]["batching"]}
    off = {r["clients"]: r for r in payload["server"]["no_batching"]}
    checks = {}
    for c, r in rows.items():
        if c >= 32:
            checks[f"{c}_clients"] = {
                "vs_offline": r["sentences_per_s"] / offline,
                "vs_offline_command": r["sentences_per_s"] / command,
                "vs_no_batching": r["sentences_per_s"] / off[c]["sentences_per_s"] if c in off else None,
                "errors": r["errors"], "identical": r["same_as_offline"] == r["sentences"]}
    return checks


def table(payload: dict) -> str:
    cfg, off = payload["config"], payload["offline"]
    rows = [["offline, in process (warm)", "", off["in_process"]["sentences_per_s"], "", "", "", ""],
            ["offline, `seqed translate` command", "", off["command"]["sentences_per_s"], "", "", "", ""]]
    for mode in ("batching", "no_batching"):
        for r in payload["server"][mode]:
            rows.append([f"server, {'dynamic batching' if mode == 'batching' else 'batching off'}", r["clients"],
                         r["sentences_per_s"], r["p50_ms"], r["p99_ms"], r["errors"],
                         f"{r['same_as_offline']}/{r['sentences']}"])
    for r in payload.get("gathering", []):
        rows.append([f"server, gathering until {r['idle_ms']:g} ms idle, {r['max_wait_ms']:g} ms at most", r["clients"],
                     r["sentences_per_s"], r["p50_ms"], r["p99_ms"], r["errors"], f"{r['same_as_offline']}/{r['sentences']}"])
    s = payload["soak"] or {"requests": 0, "clients": 0, "by_status": {}, "unexpected": 0, "rss_mb": [(0, None)]}
    head = (f"Checkpoint `{cfg['checkpoint']}`, {cfg['sentences']} sentences of `{cfg['src']}`, beam {cfg['beam']}, "
            f"seqed engine fp32, {cfg['threads']} model threads; the load generator (one keep-alive connection per "
            f"client, `client_cpu_ms` of its own CPU per request in serve.json) runs on the same machine. "
            f"{benchlib.env_line(payload['environment'])}.")
    tail = (f"Soak: {s['requests']:,} mixed requests ({s['clients']} clients), statuses {s['by_status']}, "
            f"{s['unexpected']} unexpected; server RSS {s['rss_mb'][0][1]} MB at start, {s['rss_mb'][-1][1]} MB "
            f"at the end. Same tokens alone and in a batch: " +
            ", ".join(f"{k} {100 * v['rate']:.1f}%" for k, v in payload["invariance"].items()) + ".")
    return head + "\n\n" + benchlib.md_table(["mode", "clients", "sent/s", "p50 ms", "p99 ms", "errors",
                                              "same as offline"], rows) + "\n\n" + tail


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--checkpoint", required=True, help="checkpoint or run directory (a Transformer)")
    benchlib.add_test_set_args(p)
    p.add_argument("--limit", type=int, default=None, help="first N sentences only (default 0: all)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--clients", default=None, help="comma-separated concurrency levels (default 1,8,32,128)")
    p.add_argument("--soak", type=int, default=None, help="requests in the soak (default 20000; 0: none)")
    p.add_argument("--soak-clients", type=int, default=16)
    p.add_argument("--invariance-limit", type=int, default=None,
                   help="sentences for the bf16/int8 invariance rate (default 200)")
    p.add_argument("--threads", type=int, default=2, help="model threads (server and offline)")
    p.add_argument("--gathering", default=None,
                   help="MAX_WAIT_MS:IDLE_MS pairs of the batching server measured at 32+ clients (default 2:2,50:5: "
                        "a fixed 2 ms wait, then the defaults; empty: skip)")
    p.add_argument("--quick", action="store_true",
                   help="defaults for a smoke test: 20 sentences, clients 1,4, a soak of 200, invariance on 10")
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    for name, full, quick in (("limit", 0, 20), ("clients", "1,8,32,128", "1,4"), ("soak", 20000, 200),
                              ("invariance_limit", 200, 10), ("gathering", "2:2,50:5", "50:5")):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    try:
        clients = [int(c) for c in args.clients.split(",")]
        if any(c < 1 for c in clients):
            raise ValueError
    except ValueError:
        return benchlib.fail(SECTION, BenchError(f"--clients must be positive integers, got {args.clients!r}"))
    try:
        args.gathering = [tuple(float(x) for x in pair.split(":")) for pair in args.gathering.split(",") if pair]
        if any(len(pair) != 2 for pair in args.gathering):
            raise ValueError
    except ValueError:
        return benchlib.fail(SECTION, BenchError(f"--gathering takes MAX_WAIT_MS:IDLE_MS pairs, got {args.gathering!r}"))
    args.checkpoint = os.path.abspath(args.checkpoint)  # the children run in the repository
    try:
        benchlib.set_threads(args.threads)
        sentences, _ = benchlib.test_set(args)
        benchlib.WORK.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=benchlib.WORK, prefix="serve_") as work:
            work = Path(work)
            src = work / "src.txt"
            src.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
            in_process, offline = offline_in_process(args, sentences)
            command = offline_command(args, src, work / "out.txt")
            server: dict = {}
            soaked = None
            for mode, extra in (("batching", []), ("no_batching", ["--max-batch-tokens", "0"])):
                srv = ServerProcess(args.checkpoint, ["--beam", str(args.beam), "--precision", "fp32", *extra],
                                    args.threads,
                                    work / f"{mode}.log")
                try:
                    server[mode] = [load_run(srv.url, sentences, c, offline) for c in clients]
                    if mode == "batching" and args.soak:
                        soaked = soak(srv, sentences, args.soak, args.soak_clients)
                finally:
                    status = srv.stop()
                server[f"{mode}_ready_seconds"] = round(srv.ready_seconds, 2)
                server[f"{mode}_exit_status"] = status
            # the gathering policy (--max-wait-ms, --idle-ms), each pair on a fresh batching server
            gathering = []
            for wait_ms, idle_ms in args.gathering:
                srv = ServerProcess(args.checkpoint, ["--beam", str(args.beam), "--precision", "fp32",
                                                      "--max-wait-ms", str(wait_ms), "--idle-ms", str(idle_ms)],
                                    args.threads, work / f"gathering_{wait_ms}_{idle_ms}.log")
                try:
                    for c in [c for c in clients if c >= 32] or clients[-1:]:
                        gathering.append({"max_wait_ms": wait_ms, "idle_ms": idle_ms,
                                          **load_run(srv.url, sentences, c, offline)})
                finally:
                    srv.stop()
            payload = {
                "config": {"checkpoint": args.checkpoint, "src": args.src, "sentences": len(sentences),
                           "beam": args.beam, "threads": args.threads, "clients": clients, "quick": args.quick},
                "environment": benchlib.environment(args.threads),
                "offline": {"in_process": in_process, "command": command},
                "server": server, "gathering": gathering, "soak": soaked,
                "invariance": invariance(args, sentences[:args.invariance_limit])}
            payload["targets"] = verdict(payload)
        return benchlib.publish(SECTION, SECTION, args.out, payload, table(payload), readme=not args.no_readme)
    except (BenchError, OSError, ValueError) as err:
        return benchlib.fail(SECTION, err)


if __name__ == "__main__":
    sys.exit(main())
