"""seqed's own decoder against CTranslate2 on the CPU (issue 28): speed at equal BLEU, in one process and
with each engine in a process of its own.

Engines, all with beam 5 and the checkpoint's search settings (GNMT length penalty, max length):
seqed fp32, seqed bf16 (only where the CPU has native bf16: AVX512-BF16 or AMX), seqed int8
(`Translator(quantization="int8")`, i.e. `seqed translate --quantization int8`), and the checkpoint
exported with `seqed.export` and run by `seqed translate --engine ctranslate2`'s translator with
compute types int8 and float32. Every engine is loaded and warmed up first, then each translates the
whole test file (text to text) once per round, `--rounds` rounds in alternating order (forward,
backward, ...); the best round counts. Reported per engine: sentences/s, output tokens/s, sacreBLEU
(with signature) and, for seqed's engines, the decoder steps and the live beam rows per step
(counted in a separate, untimed pass), so search work and per-step cost are seen apart.

The same engines are also timed each in a process of its own (`--isolated-rounds`, default 3): per
round and engine, in alternating order, a fresh process loads that engine alone, warms it up and
translates the file once. The targets are computed for both protocols.

Whether CTranslate2 and torch share an OpenMP runtime in one process depends on what runs first
(`--openmp`). Each ships its own libgomp, but once CTranslate2 has translated in a process where torch
is already loaded, torch's OpenMP threads sleep and wake around its kernels for as long as that
translator lives: 17,700 voluntary context switches per 3,000 (320, 256) x (256, 1024) products
instead of 0, and seqed's engines run 20-40% slower (hand checks, not kept; the likely cause is that
torch's runtime then counts CTranslate2's threads too, sees more threads than cores and cuts its
spin-wait to libgomp's "throttled" 100 iterations). Importing ctranslate2 before torch is not enough
(measured: the same 17,700 switches); a CTranslate2 translation that runs before torch is imported is
(0 switches, also for translators created afterwards). `--openmp own` (the default) therefore exports
the model in a child process and translates one token with CTranslate2 before this process imports
torch, so each engine runs on its own runtime, as it does alone; `--openmp torch` skips that (what a
process that imports seqed first, such as a Python program holding both engines, gets).

Also measured:
* start-up: wall time of `seqed translate -c MODEL -i ONE_LINE_FILE` in a fresh process (best of
  `--startup-runs`), the in-process load time of the checkpoint, and `python -X importtime` of the
  CLI (the slowest top-level imports);
* settings (item 4 of issue 28) on the validation file with the fastest seqed engine (in its own
  process, where measured): the batch size (64, 128, 256 sentences) and the optional patience stop
  (1, 2), one timed pass each in a fresh process (steps counted in it), BLEU against the exact
  search at batch 64;
* the targets: seqed's fastest setting whose BLEU is within 0.3 of seqed fp32, against CTranslate2
  int8 (>= 1.3x on a CPU with native bf16), and the same without bf16 (the "fp32-only CPU" case,
  emulated here by leaving bf16 out: this machine is not an AVX2-only CPU), met when it is that fast at
  a BLEU no more than 0.3 below CTranslate2 int8's, with a short operator profile of that engine when
  it falls short.

    python benchmarks/cpu_decode.py --model /work/runs/m30k_transformer --threads 2

`--limit N` uses the first N sentences of both files (tests); `--no-readme` leaves the README alone.
Writes benchmarks/results/cpu_decode.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import BenchError
from export_ctranslate2 import make_translator, summarize, timed

SECTION = "cpu_decode"
ENGINES = ("seqed_fp32", "seqed_bf16", "seqed_int8", "ctranslate2_int8", "ctranslate2_fp32")
BATCH_SIZES = (64, 128, 256)
PATIENCES = (1.0, 2.0)
BLEU_TOLERANCE = 0.3
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_flags() -> list[str]:
    """The vector-extension flags of this CPU that decide the fast paths (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in FLAGS if f in present]
    except OSError:
        pass
    return []


def native_bf16(flags: list[str]) -> bool:
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextlib.contextmanager
def counted_steps(translator):
    """Within the block, the live rows of every decoder step of a seqed translator are appended to the
    yielded list (one append per step: no measurable cost)."""
    decoder = translator.model.decoder
    rows: list[int] = []
    step = decoder.step

    def counting(tokens, memory, state):
        rows.append(tokens.size(0))
        return step(tokens, memory, state)

    decoder.step = counting  # an instance attribute shadows the method within the block only
    try:
        yield rows
    finally:
        del decoder.step


def work(rows: list[int]) -> dict:
    """Decoder steps and live rows per step from `counted_steps`' list."""
    return {"decoder_steps": len(rows), "rows_per_step": round(sum(rows) / max(len(rows), 1), 1),
            "row_steps": sum(rows)}


def search_work(translator, sentences: list[str]) -> dict:
    """Decoder steps and live rows per step of one (untimed) pass of a seqed translator."""
    with counted_steps(translator) as rows:
        translator.translate(sentences)
    return work(rows)


def profile_top(translator, sentences: list[str], n: int = 10) -> list[dict]:
    """The `n` operators with the most self CPU time while `translator` translates `sentences`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        translator.translate(sentences)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count,
             "share": round(e.self_cpu_time_total / total, 3)} for e in ops]


def startup(model: str, threads: int, runs: int, work: str) -> dict:
    """Fresh-process `seqed translate` on one line (best of `runs`), and the CLI's slowest imports."""
    line = os.path.join(work, "one_line.txt")
    with open(line, "w", encoding="utf-8") as f:
        f.write("A man is riding a bicycle.\n")
    env = benchlib.thread_env(threads)
    argv = [sys.executable, "-m", "seqed", "translate", "-c", model, "-i", line, "--device", "cpu"]
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise BenchError(f"seqed translate failed: {proc.stderr.strip()[-500:]}")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import seqed.cli.main"], capture_output=True,
                          text=True, env=env, timeout=600)
    imports = []
    for row in proc.stderr.splitlines():
        parts = row.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            imports.append((name.strip(), int(parts[1]), depth))
    top = sorted((i for i in imports if i[2] <= 1), key=lambda i: -i[1])[:8]
    total = next((us for name, us, _ in imports if name == "seqed.cli.main"), None)
    return {"translate_one_line_seconds": [round(w, 2) for w in walls], "best_seconds": round(min(walls), 2),
            "import_cli_seconds": None if total is None else round(total / 1e6, 2),
            "slowest_imports": [{"module": name, "seconds": round(us / 1e6, 3)} for name, us, _ in top]}


def settings(engine: str, args, ct2_dir: str, val_src: str, val_ref: str, refs: list[str], work_dir: str) -> list[dict]:
    """Batch sizes and patience stops of one seqed engine on the validation file, one timed pass each,
    each in a fresh process of its own (`run_worker`: in a process where CTranslate2 has run, the
    speeds would be skewed)."""
    rows = []
    for batch_size, patience in [(b, None) for b in BATCH_SIZES] + [(BATCH_SIZES[0], p) for p in PATIENCES]:
        print(f"[{SECTION}] settings: {engine} batch {batch_size} patience {patience} ...", file=sys.stderr, flush=True)
        result = run_worker(engine, args, ct2_dir, os.path.join(work_dir, f"settings_{batch_size}_{patience}.json"),
                            src=val_src, ref=val_ref, batch_size=batch_size, patience=patience)
        rows.append({"engine": engine, "batch_size": batch_size, "patience": patience,
                     **worker_summary(result, [result["seconds"]], refs), **result["work"]})
    exact = rows[0]["bleu"]
    for r in rows:
        r["bleu_vs_exact_batch64"] = round(r["bleu"] - exact, 2)
    return rows


def openmp_order(order: str, *, ctranslate2: bool) -> str:
    """Import ctranslate2 before torch for `--openmp own` in a process that runs it (`ctranslate2`); says
    which order the process has (the main process then also needs `separate_runtimes`)."""
    if order == "own" and ctranslate2:
        if "torch" in sys.modules:  # e.g. main() called from a test: the order is already set
            return "torch (torch was imported first)"
        with contextlib.suppress(ImportError):
            import ctranslate2  # noqa: F401
    return order


def separate_runtimes(model: str, ct2_dir: str, threads: int) -> bool:
    """Before this process imports torch (see the module docstring): export `model` to `ct2_dir` in a child
    process and translate one token with CTranslate2 here, so that its OpenMP threads stay on its own
    runtime for the rest of the process. False (nothing done) without ctranslate2, whose absence
    `require_ctranslate2` then reports."""
    try:
        import ctranslate2
    except ImportError:
        return False
    proc = subprocess.run([sys.executable, "-m", "seqed", "export", "--format", "ctranslate2", "-c", model,
                           "-o", ct2_dir], capture_output=True, text=True, env=benchlib.thread_env(threads))
    if proc.returncode != 0:
        raise BenchError(f"seqed export failed: {proc.stderr.strip()[-500:]}")
    warm = ctranslate2.Translator(ct2_dir, device="cpu", compute_type="int8", intra_threads=threads)
    piece = json.loads(Path(ct2_dir, "shared_vocabulary.json").read_text(encoding="utf-8"))[4]
    warm.translate_batch([[piece]], beam_size=1, max_decoding_length=1)
    return True


def worker(args) -> int:
    """One isolated timing (`--worker ENGINE`): load that engine alone in this process, warm it up,
    translate the test file once (batch `--batch-size`, the checkpoint's by default; seqed's optional
    `--patience` stop) and write the seconds, output tokens and texts, and for seqed's engines the
    search work of that pass, to `--worker-out`."""
    from seqed.loading import load_model

    benchlib.set_threads(args.threads)
    sentences, _ = benchlib.test_set(args)
    loaded = load_model(args.model, device="cpu")
    s = loaded.config.search
    tr = make_translator(args.worker, loaded, args.ct2_dir, beam=args.beam, length_penalty=s.length_penalty,
                         batch_size=args.batch_size or s.batch_size, threads=args.threads, patience=args.patience)
    tr.translate(sentences[:args.warmup])
    seqed = args.worker.startswith("seqed_")
    with counted_steps(tr) if seqed else contextlib.nullcontext() as steps:
        took, hyps, texts = timed(tr, sentences)
    benchlib.write_json(Path(args.worker_out), {"seconds": took, "tokens": [h[0].tokens for h in hyps], "texts": texts,
                                                "work": work(steps) if seqed else None})
    return 0


def run_worker(engine: str, args, ct2_dir: str, out: str, *, src: str, ref: str, batch_size: int = 0,
               patience=None) -> dict:
    """`worker` in a fresh process; its result (see `worker`)."""
    argv = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--src", src, "--ref", ref,
            "--limit", str(args.limit), "--beam", str(args.beam), "--threads", str(args.threads),
            "--warmup", str(args.warmup), "--worker", engine, "--ct2-dir", ct2_dir, "--worker-out", out,
            "--batch-size", str(batch_size), "--openmp", args.openmp] + ([] if patience is None else ["--patience", str(patience)])
    proc = subprocess.run(argv, capture_output=True, text=True, env=benchlib.thread_env(args.threads), timeout=3600)
    if proc.returncode != 0:
        raise BenchError(f"{engine} in its own process failed: {proc.stderr.strip()[-500:]}")
    return json.loads(Path(out).read_text(encoding="utf-8"))


def best_round(hyps: list, texts: list[str], seconds: list[float], refs: list[str]) -> dict:
    """`summarize` at the best of the rounds' `seconds`, the rounds kept, the output texts left out."""
    row = summarize(hyps, texts, [min(seconds)], refs)
    row["round_seconds"] = [round(x, 3) for x in seconds]
    row.pop("output")
    return row


def worker_summary(result: dict, seconds: list[float], refs: list[str]) -> dict:
    """`best_round` of a worker's output."""
    from seqed.search import Hypothesis

    hyps = [[Hypothesis(tokens=t, score=0.0, log_prob=0.0)] for t in result["tokens"]]
    return best_round(hyps, result["texts"], seconds, refs)


def isolated(names: list[str], args, ct2_dir: str, refs: list[str], work_dir: str) -> dict:
    """Every engine timed in a fresh process of its own (`worker`), `args.isolated_rounds` rounds in
    alternating order; per engine the best round, as `summarize` gives it."""
    seconds, out = {e: [] for e in names}, {}
    for r in range(args.isolated_rounds):
        for e in names if r % 2 == 0 else names[::-1]:
            result = run_worker(e, args, ct2_dir, os.path.join(work_dir, f"isolated_{e}_{r}.json"), src=args.src,
                                ref=args.ref)
            seconds[e].append(result["seconds"])
            out.setdefault(e, result)
            print(f"[{SECTION}] isolated round {r + 1}/{args.isolated_rounds} {e}: "
                  f"{len(refs) / result['seconds']:.1f} sent/s", file=sys.stderr, flush=True)
    return {e: worker_summary(out[e], seconds[e], refs) for e in names}


def targets(engines: dict, flags: list[str], profile) -> dict:
    """The issue's targets from the engine rows (see the module docstring)."""
    ct2 = engines.get("ctranslate2_int8")
    fp32 = engines.get("seqed_fp32")
    if ct2 is None or fp32 is None:
        return {}

    def best(names):
        ok = [n for n in names if n in engines and abs(engines[n]["bleu"] - fp32["bleu"]) <= BLEU_TOLERANCE]
        return max(ok, key=lambda n: engines[n]["sentences_per_s"]) if ok else None

    out = {}
    for case, names, goal in (("native_bf16", ("seqed_fp32", "seqed_bf16", "seqed_int8"), 1.3),
                              ("fp32_only", ("seqed_fp32", "seqed_int8"), 1.0)):
        if case == "native_bf16" and not native_bf16(flags):
            continue
        name = best(names)
        if name is None:
            continue
        ratio = engines[name]["sentences_per_s"] / ct2["sentences_per_s"]
        out[case] = {"engine": name, "speed_vs_ctranslate2_int8": round(ratio, 3), "goal": goal,
                     "bleu": engines[name]["bleu"],
                     "bleu_minus_ctranslate2_int8": round(engines[name]["bleu"] - ct2["bleu"], 2),
                     # "at equal BLEU": no more than the tolerance below CTranslate2's (a higher BLEU is no miss)
                     "met": ratio >= goal and engines[name]["bleu"] >= ct2["bleu"] - BLEU_TOLERANCE}
        if case == "fp32_only":
            out[case]["note"] = ("emulated: this CPU has " + ", ".join(flags) + "; an AVX2-only CPU has neither "
                                 "native bf16 nor AVX512-VNNI int8, so its figures will differ")
            if not out[case]["met"] and profile is not None:
                out[case]["profile"] = profile(name)
    return out


def portable_model(payload: dict, model: str) -> dict:
    """`payload` with the model path relative to the repository where `benchlib.portable_paths` leaves it
    absolute (a run directory outside the repository, the data and the home directory, e.g. /work/runs/x)."""
    path = os.path.abspath(model)
    if benchlib.portable_paths(path) != path:
        return payload
    return json.loads(json.dumps(payload).replace(json.dumps(path)[1:-1], os.path.relpath(path, benchlib.REPO)))


def table(payload: dict) -> str:
    cfg, engines = payload["config"], payload["engines"]
    ct2 = engines.get("ctranslate2_int8", {}).get("sentences_per_s")
    rows = [[name, r["sentences_per_s"], r["output_tokens_per_s"], f"{r['sentences_per_s'] / ct2:.2f}x" if ct2 else "",
             r["bleu"], r.get("decoder_steps", ""), r.get("rows_per_step", "")] for name, r in engines.items()]
    text = (f"Checkpoint `{cfg['model']}` (step {cfg['step']}), `{cfg['src']}` ({cfg['sentences']} sentences), beam "
            f"{cfg['beam']}, length penalty {cfg['length_penalty']}, batch {cfg['batch_size']}, "
            f"{cfg['threads']} threads, "
            f"best of {cfg['rounds']} rounds; CPU flags {', '.join(cfg['cpu_flags'])}. "
            f"{benchlib.env_line(payload['environment'])}.\n\n")
    text += benchlib.md_table(["engine", "sent/s", "out tok/s", "vs CTranslate2 int8", "BLEU", "decoder steps",
                               "rows per step"], rows)
    for case, t in payload.get("targets", {}).items():
        text += (f"\n\nTarget ({case}): {t['engine']} at {t['speed_vs_ctranslate2_int8']:.2f}x CTranslate2 int8 "
                 f"(goal {t['goal']}x), BLEU {t['bleu_minus_ctranslate2_int8']:+.2f} against it: "
                 f"{'met' if t['met'] else 'not met'}.")
    if payload.get("settings"):
        text += "\n\nSettings on the validation file (one pass each):\n\n" + benchlib.md_table(
            ["engine", "batch", "patience", "sent/s", "BLEU", "vs exact batch 64", "rows per step"],
            [[r["engine"], r["batch_size"], r["patience"] or "exact", r["sentences_per_s"], r["bleu"],
              f"{r['bleu_vs_exact_batch64']:+.2f}", r["rows_per_step"]] for r in payload["settings"]])
    if payload.get("engines_isolated"):
        iso = payload["engines_isolated"]
        ct2_iso = iso.get("ctranslate2_int8", {}).get("sentences_per_s")
        text += (f"\n\nEach engine in a process of its own (best of {cfg.get('isolated_rounds')} fresh processes per "
                 f"engine, alternating order):\n\n")
        text += benchlib.md_table(
            ["engine", "sent/s", "out tok/s", "vs CTranslate2 int8", "BLEU", "one process, sent/s"],
            [[name, r["sentences_per_s"], r["output_tokens_per_s"],
              f"{r['sentences_per_s'] / ct2_iso:.2f}x" if ct2_iso else "", r["bleu"],
              engines.get(name, {}).get("sentences_per_s", "")] for name, r in iso.items()])
        for case, t in payload.get("targets_isolated", {}).items():
            text += (f"\n\nTarget ({case}, isolated): {t['engine']} at {t['speed_vs_ctranslate2_int8']:.2f}x "
                     f"CTranslate2 int8 (goal {t['goal']}x), BLEU {t['bleu_minus_ctranslate2_int8']:+.2f} against it: "
                     f"{'met' if t['met'] else 'not met'}.")
    s = payload.get("startup")
    if s:
        text += (f"\n\n`seqed translate` on one line in a fresh process: {s['best_seconds']:.2f} s (best of "
                 f"{len(s['translate_one_line_seconds'])}), of which importing the CLI {s['import_cli_seconds']} s "
                 f"and loading the checkpoint {payload['config']['load_seconds']} s.")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-c", required=True, help="checkpoint file or run directory")
    benchlib.add_test_set_args(p)
    p.add_argument("--val-src", default=None, help="settings file (default $SEQED_DATA/multi30k/val.en)")
    p.add_argument("--val-ref", default=None, help="its reference (default $SEQED_DATA/multi30k/val.fr)")
    p.add_argument("--engines", nargs="+", default=None, choices=ENGINES,
                   help="default: all (seqed_bf16 only on a CPU with native bf16)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--limit", type=int, default=0, help="first N sentences of the test and validation files (0 = all)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per engine, alternating order; best counts")
    p.add_argument("--warmup", type=int, default=16, help="untimed sentences translated first by each engine")
    p.add_argument("--threads", type=int, default=2, help="torch and CTranslate2 threads (default 2)")
    p.add_argument("--startup-runs", type=int, default=3, help="fresh `seqed translate` processes timed (0: skip)")
    p.add_argument("--no-settings", action="store_true", help="skip the batch size / patience measurements")
    p.add_argument("--isolated-rounds", type=int, default=3,
                   help="rounds of each engine timed in a fresh process of its own (0: skip; see above)")
    p.add_argument("--openmp", default="own", choices=("own", "torch"),
                   help="own (default): CTranslate2 translates once before torch is imported, each engine on its "
                        "own OpenMP runtime; torch: without that step, torch's threads then sleep around its kernels "
                        "(see above)")
    p.add_argument("--worker", default=None, choices=ENGINES, help=argparse.SUPPRESS)  # one isolated timing
    p.add_argument("--ct2-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=0, help=argparse.SUPPRESS)  # the worker's (0: the checkpoint's)
    p.add_argument("--patience", type=float, default=None, help=argparse.SUPPRESS)
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    openmp = openmp_order(args.openmp, ctranslate2=not args.worker or args.worker.startswith("ctranslate2"))
    if args.worker:
        return worker(args)
    try:
        if args.threads < 1 or args.rounds < 1 or args.isolated_rounds < 0:
            raise BenchError(f"--threads and --rounds must be positive and --isolated-rounds >= 0, got {args.threads}, "
                             f"{args.rounds} and {args.isolated_rounds}")
        benchlib.WORK.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=benchlib.WORK, prefix="cpu_decode_") as work:
            ct2_dir = os.path.join(work, "ct2")
            exported = openmp == "own" and separate_runtimes(args.model, ct2_dir, args.threads)
            from seqed.checkpoint import CheckpointError
            from seqed.export import ExportError, export_ctranslate2, require_ctranslate2
            from seqed.loading import load_model

            benchlib.set_threads(args.threads)
            ct2 = require_ctranslate2()
            flags = cpu_flags()
            names = list(args.engines or [e for e in ENGINES if e != "seqed_bf16" or native_bf16(flags)])
            sentences, refs = benchlib.test_set(args)
            start = time.perf_counter()
            try:
                loaded = load_model(args.model, device="cpu")
            except CheckpointError as err:
                raise BenchError(str(err)) from None
            load_seconds = time.perf_counter() - start
            s = loaded.config.search
            if not exported:
                try:
                    export_ctranslate2(args.model, ct2_dir)
                except ExportError as err:
                    raise BenchError(str(err)) from None
            # First, while no engine has run in this process: each engine in a process of its own.
            engines_isolated = isolated(names, args, ct2_dir, refs, work) if args.isolated_rounds else {}
            common = dict(beam=args.beam, length_penalty=s.length_penalty, batch_size=s.batch_size,
                          threads=args.threads)
            translators = {e: make_translator(e, loaded, ct2_dir, **common) for e in names}
            for e in names:
                translators[e].translate(sentences[:args.warmup])
            seconds, out = {e: [] for e in names}, {}
            for r in range(args.rounds):
                for e in names if r % 2 == 0 else names[::-1]:
                    took, *result = timed(translators[e], sentences)
                    seconds[e].append(took)
                    out.setdefault(e, result)
                    print(f"[{SECTION}] round {r + 1}/{args.rounds} {e}: {len(sentences) / took:.1f} sent/s",
                          file=sys.stderr, flush=True)
            engines = {}
            for e in names:
                engines[e] = best_round(*out[e], seconds[e], refs)
                if e.startswith("seqed_"):
                    engines[e].update(search_work(translators[e], sentences))
            first = sentences[: s.batch_size]
            result_targets = targets(engines, flags, lambda e: profile_top(translators[e], first))
            rows = []
            if not args.no_settings and any(e.startswith("seqed_") for e in engines):
                val_args = argparse.Namespace(src=args.val_src, ref=args.val_ref, limit=args.limit)
                if val_args.src is None or val_args.ref is None:
                    m30k = benchlib.data_dir() / "multi30k"
                    val_args.src = val_args.src or str(m30k / "val.en")
                    val_args.ref = val_args.ref or str(m30k / "val.fr")
                _, val_refs = benchlib.test_set(val_args)
                timings = engines_isolated or engines  # the isolated ones where measured (see the docstring)
                fastest = max((e for e in timings if e.startswith("seqed_")),
                              key=lambda e: timings[e]["sentences_per_s"])
                rows = settings(fastest, args, ct2_dir, val_args.src, val_args.ref, val_refs, work)
                args.val_src, args.val_ref = val_args.src, val_args.ref
            boot = startup(args.model, args.threads, args.startup_runs, work) if args.startup_runs else None
        payload = {"benchmark": SECTION,
                   "config": {"model": args.model, "step": loaded.step, "src": args.src, "ref": args.ref,
                              "val_src": args.val_src, "val_ref": args.val_ref, "sentences": len(sentences),
                              "beam": args.beam, "length_penalty": s.length_penalty, "max_len_a": s.max_len_a,
                              "max_len_b": s.max_len_b, "batch_size": s.batch_size, "threads": args.threads,
                              "rounds": args.rounds, "isolated_rounds": args.isolated_rounds,
                              "warmup_sentences": args.warmup,
                              "load_seconds": round(load_seconds, 2), "cpu_flags": flags,
                              "ctranslate2_version": ct2.__version__, "openmp": openmp},
                   "environment": benchlib.environment(args.threads), "engines": engines,
                   "targets": result_targets, "engines_isolated": engines_isolated,
                   "targets_isolated": targets(engines_isolated, flags, None) if engines_isolated else {},
                   "settings": rows, "startup": boot}
        payload = portable_model(payload, args.model)
        return benchlib.publish(SECTION, SECTION, args.out, payload, table(payload), readme=not args.no_readme)
    except (BenchError, FileNotFoundError, ValueError) as err:
        return benchlib.fail(SECTION, err)


if __name__ == "__main__":
    sys.exit(main())
