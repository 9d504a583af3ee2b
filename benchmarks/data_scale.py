"""Corpus size vs preprocessing speed, memory and start-up time of training on binarized data (issue 12).

For each size (default 1M, 4M and 16M pairs) a synthetic parallel corpus is written to a work directory
(default /tmp/seqed_data_scale, never committed): pairs drawn at random from a base of `--base` distinct
pairs of the demo grammar (`data/demo/generate.py`; generating 16M pairs with the grammar itself would
take half an hour). One SentencePiece model (8k joint unigram, trained once on the base) is reused
through `tokenizer.model`, so the numbers are encoding, not tokenizer training. Measured, each in a fresh
process:

* preprocess: `seqed.data.preprocess.preprocess` with `--workers` encoding processes: pairs/s, wall time,
  peak RSS of the main process and of the largest worker, bytes on disk.
* train_1proc: `python -m seqed train ... train.max_steps=1` on the binarized directory: process start to
  the end of the first update (the wall clock of the first line of `train.log.jsonl`), process start to
  exit (imports, mapping, sampler, model, one update, one checkpoint) and peak RSS.
* train_2proc: the same under `torchrun --nproc_per_node 2` (gloo, one thread per process): launch to
  exit, and each rank's peak RSS.
* first_batch_{1,2}proc: 1 and 2 concurrent processes that each map the directory, build their shard's
  sampler and collate their first batch (what every DDP rank does before its first update): seconds
  and peak RSS per process.

    python benchmarks/data_scale.py                       # 1M, 4M, 16M
    python benchmarks/data_scale.py --sizes 100000 --out /tmp/x.json --no-readme   # smoke run

Writes benchmarks/results/data_scale.json and the table in benchmarks/README.md, with a projection to
WMT14 English-French from the measured bytes per piece and pairs per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import benchlib
from benchlib import BenchError

SECTION = "data_scale"
WMT14_PAIRS = 36_000_000   # WMT14 en-fr training pairs before filtering (about 35.8-40.8M by source)
WMT14_PIECES = 32.0        # assumed pieces per sentence and side with a 32k joint BPE/unigram vocabulary
MODEL = ["model.encoder.layers=3", "model.decoder.layers=3", "model.encoder.hidden=256",
         "model.decoder.hidden=256", "model.encoder.ffn=1024", "model.decoder.ffn=1024"]


def base_pairs(work: Path, n: int) -> Path:
    """`n` distinct (en, fr) pairs of the demo grammar, cached as base.tsv."""
    path = work / f"base{n}.tsv"
    if path.is_file():
        return path
    sys.path.insert(0, str(benchlib.REPO / "data" / "demo"))
    import generate  # noqa: E402  (the demo grammar)

    rng = random.Random(1)
    pairs: dict = {}
    while len(pairs) < n:
        en, fr = generate.random_pair(rng)
        pairs.setdefault(en, fr)
    path.write_text("".join(f"{e}\t{f}\n" for e, f in pairs.items()), encoding="utf-8")
    return path


def write_corpus(work: Path, base: Path, n: int) -> tuple[Path, Path]:
    """train{n}.en / .fr: `n` pairs drawn uniformly (seeded) from the base."""
    import numpy as np

    en, fr = work / f"train{n}.en", work / f"train{n}.fr"
    if en.is_file() and fr.is_file():
        return en, fr
    rows = base.read_text(encoding="utf-8").splitlines()
    src = np.array([r.split("\t")[0] for r in rows], dtype=object)
    tgt = np.array([r.split("\t")[1] for r in rows], dtype=object)
    rng = np.random.default_rng(n)
    with open(en, "w", encoding="utf-8") as fe, open(fr, "w", encoding="utf-8") as ff:
        for start in range(0, n, 1_000_000):
            idx = rng.integers(0, len(rows), min(1_000_000, n - start))
            fe.write("\n".join(src[idx]) + "\n")
            ff.write("\n".join(tgt[idx]) + "\n")
    return en, fr


def overrides(en: Path, fr: Path, binarized: Path, tokenizer: Path) -> list[str]:
    return [f"data.train={{format: text, src: {en}, tgt: {fr}}}", f"data.binarized={binarized}",
            f"tokenizer.model={tokenizer}", "data.max_len=100", "train.max_tokens=4096", "train.seed=1"]


def run_child(code: str, env: dict) -> str:
    """Run a `python -c` snippet; returns its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=benchlib.REPO)
    if proc.returncode:
        raise BenchError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


PREPROCESS = """
import json, resource, sys, time
from seqed.config import load_config
from seqed.data.preprocess import preprocess
cfg = load_config(None, {overrides!r})
tick = time.perf_counter()
d = preprocess(cfg, lambda m: print(m, file=sys.stderr), workers={workers}, progress=False)
seconds = time.perf_counter() - tick
import multiprocessing.forkserver as fs
if hasattr(fs._forkserver, "_stop"):  # the workers' fork server: reaping it makes RUSAGE_CHILDREN count them
    fs._forkserver._stop()
m = json.loads((d / "manifest.json").read_text())
size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
print(json.dumps(dict(seconds=seconds, pairs=m["report"]["total"], kept=m["pairs"], ids=m["ids"], disk_bytes=size,
    ids_bytes=(d / "ids.bin").stat().st_size,
    main_rss_mb=int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
    worker_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)))  # the largest worker
"""

FIRST_BATCH = """
import json, resource, time
tick = time.perf_counter()
import torch
from seqed.data.batching import TokenBatchSampler
from seqed.data.store import BinarizedData
imported = time.perf_counter()
data = BinarizedData({directory!r})
sampler = TokenBatchSampler(*data.lengths(), max_tokens=4096, seed=1, num_shards={world}, shard_index={rank})
batches = sampler.batches(0)
batch = data.batch(batches[0])
done = time.perf_counter()
print(json.dumps(dict(seconds=done - tick, after_import_s=done - imported, batches=len(batches),
                      batch_shape=list(batch.src.shape),
                      rss_mb=int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)))
"""


def first_batch(directory: Path, world: int, env: dict) -> list[dict]:
    """`world` concurrent processes, each mapping `directory` and collating its shard's first batch."""
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_BATCH.format(directory=str(directory), world=world,
                                                                        rank=r)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    out = []
    for p in procs:
        o, e = p.communicate()
        if p.returncode:
            raise BenchError(f"first-batch child failed: {e[-2000:]}")
        out.append(json.loads(o.strip().splitlines()[-1]))
    return out


def measure(n: int, work: Path, base: Path, tokenizer: Path, workers: int, threads: int) -> dict:
    env = benchlib.thread_env(threads)
    env["PYTHONPATH"] = str(benchlib.REPO) + os.pathsep + env.get("PYTHONPATH", "")
    tick = time.perf_counter()
    en, fr = write_corpus(work, base, n)
    gen_s = time.perf_counter() - tick
    binarized = work / f"bin{n}"
    shutil.rmtree(binarized, ignore_errors=True)
    ov = overrides(en, fr, binarized, tokenizer)
    print(f"[data_scale] {n:,} pairs: preprocessing", file=sys.stderr)
    load = os.getloadavg()[0]
    out = run_child(PREPROCESS.format(overrides=ov, workers=workers), env)
    pre = json.loads(out.strip().splitlines()[-1])
    pre["pairs_per_s"] = pre["pairs"] / pre["seconds"]
    pre["loadavg_1min_at_start"] = round(load, 2)
    print(f"[data_scale] {n:,} pairs: {pre['pairs_per_s']:,.0f} pairs/s; training start-up", file=sys.stderr)
    run_dir = work / f"run{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [sys.executable, "-m", "seqed", "train", str(benchlib.REPO / "recipes" / "demo" / "transformer.yaml"),
            *ov, *MODEL, f"out_dir={run_dir}", "train.max_steps=1", "train.valid_every=1", "data.valid=null",
            "train.device=cpu", f"train.threads={threads}"]
    load, launched = os.getloadavg()[0], time.time()
    try:
        seconds, rss = run_wait4(argv, env)
        train = {"seconds_to_first_update": first_update_seconds(run_dir, launched),
                 "seconds_to_exit_after_1_update": seconds, "rss_mb": rss, "loadavg_1min_at_start": round(load, 2)}
    except BenchError as err:
        train = {"error": str(err)[-800:]}
    shutil.rmtree(run_dir, ignore_errors=True)
    load, launched = os.getloadavg()[0], time.time()
    try:
        seconds, ranks = run_wait4(argv[:-1] + ["train.threads=1"], env, nproc=2)
        train2 = {"seconds_to_first_update": first_update_seconds(run_dir, launched),
                  "seconds_to_exit_after_1_update": seconds, "rss_mb": ranks, "loadavg_1min_at_start": round(load, 2)}
    except BenchError as err:
        train2 = {"error": str(err)[-800:]}
    shutil.rmtree(run_dir, ignore_errors=True)
    fb = {f"first_batch_{w}proc": first_batch(binarized, w, env) for w in (1, 2)}
    return {"pairs": n, "corpus_seconds": round(gen_s, 1), "preprocess": pre, "train_1proc": train,
            "train_2proc": train2, **fb}


def first_update_seconds(run_dir: Path, launched: float) -> Optional[float]:
    """Launch (`time.time()` before starting the process) to the end of the first update: the wall clock of
    the first training line of `train.log.jsonl`, written once the update's loss is read back."""
    from seqed.runlog import LOG_NAME, read_records

    rows = read_records(run_dir / LOG_NAME, event="train") if (run_dir / LOG_NAME).is_file() else []
    return round(rows[0]["time"] - launched, 2) if rows and "time" in rows[0] else None


# `python -m seqed ...` that writes its peak RSS (VmHWM) at exit (one file per torchrun rank). Not ru_maxrss: Linux
# carries it over fork and exec from the parent, so a child would report at least this script's own RSS.
HWM_WRAPPER = ("import atexit, os, runpy, sys\n"
               "def hwm():\n"
               "    status = open('/proc/self/status').read()\n"
               "    path = os.environ['SEQED_BENCH_HWM'] + os.environ.get('RANK', '')\n"
               "    open(path, 'w').write(status.split('VmHWM:')[1].split()[0])\n"
               "atexit.register(hwm)\n"
               "sys.argv = ['seqed'] + sys.argv[1:]\n"
               "runpy.run_module('seqed', run_name='__main__')\n")


def run_wait4(argv, env, nproc: int = 1):
    """(seconds, peak RSS MiB) of `python -m seqed ARGS` (argv = [python, "-m", "seqed", ARGS...]); with
    `nproc` > 1 under `torchrun --standalone`, the RSS is a list, one per rank."""
    hwm = Path(env.get("TMPDIR", "/tmp")) / f"seqed_bench_hwm_{os.getpid()}_"
    env = dict(env, SEQED_BENCH_HWM=str(hwm))
    cmd = [sys.executable, "-c", HWM_WRAPPER, *argv[3:]]
    if nproc > 1:
        wrapper = hwm.with_name(hwm.name + "wrapper.py")
        wrapper.write_text(HWM_WRAPPER)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(wrapper), *argv[3:]]
    tick = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=benchlib.REPO,
                          text=True)
    seconds = time.perf_counter() - tick
    if proc.returncode:
        raise BenchError(f"{' '.join(argv)[:300]} failed:\n{proc.stderr[-2000:]}")
    files = [Path(f"{hwm}{r}") for r in range(nproc)] if nproc > 1 else [hwm]
    rss = [int(f.read_text()) / 1024 for f in files]
    for f in files:
        f.unlink()
    if nproc > 1:
        wrapper.unlink()
    return seconds, rss if nproc > 1 else rss[0]


def projection(runs: list[dict]) -> dict:
    """Full WMT14 en-fr from the largest run's bytes per piece and pairs/s, scaled by pieces per sentence."""
    r = max(runs, key=lambda x: x["pairs"])
    p = r["preprocess"]
    pieces_per_side = p["ids"] / (2 * p["kept"])
    ids_gb = WMT14_PAIRS * 2 * WMT14_PIECES * 2 / 1e9  # uint16 for a 32k vocabulary
    index_gb = WMT14_PAIRS * (8 + 2) * 2 / 1e9        # int64 offset + uint16 length per side
    rate = p["pairs_per_s"] * pieces_per_side / WMT14_PIECES  # encoding cost grows with the pieces
    rss = [x["train_1proc"].get("rss_mb") for x in runs if x["train_1proc"].get("rss_mb")]
    return {"assumed_pairs": WMT14_PAIRS, "assumed_pieces_per_side": WMT14_PIECES,
            "measured_pieces_per_side": round(pieces_per_side, 2),
            "disk_gb": round(ids_gb + index_gb, 2), "ids_gb": round(ids_gb, 2), "index_gb": round(index_gb, 2),
            "lengths_mapped_per_rank_mb": round(WMT14_PAIRS * 4 / 2 ** 20, 1),
            "dedup_memory_gb": round(WMT14_PAIRS * 8 / 1e9, 2),
            "preprocess_hours_at_measured_rate": round(WMT14_PAIRS / rate / 3600, 2),
            "training_rss_mb_measured_max": round(max(rss), 1) if rss else None}


def _seconds(t: dict, key: str):
    """A table cell: seconds to one decimal, "failed", or "not measured" (runs from before the key existed)."""
    if "error" in t:
        return "failed"
    return round(t[key], 1) if t.get(key) is not None else "not measured"


def table(payload: dict) -> str:
    rows = []
    for r in payload["runs"]:
        p, t, t2 = r["preprocess"], r["train_1proc"], r.get("train_2proc", {})
        fb1, fb2 = r["first_batch_1proc"][0], r["first_batch_2proc"]
        rows.append([f"{r['pairs']:,}", p["pairs_per_s"], round(p["seconds"], 1), round(p["main_rss_mb"]),
                     round(p["worker_rss_mb"]), round(p["disk_bytes"] / 2 ** 20),
                     _seconds(t, "seconds_to_first_update"), _seconds(t2, "seconds_to_first_update"),
                     round(t["seconds_to_exit_after_1_update"], 1) if "seconds_to_exit_after_1_update" in t else "failed",
                     round(t["rss_mb"]) if "rss_mb" in t else "",
                     round(t2["seconds_to_exit_after_1_update"], 1) if "seconds_to_exit_after_1_update" in t2
                     else ("failed" if t2 else "not run"),
                     " / ".join(f"{x:.0f}" for x in t2.get("rss_mb", [])),
                     round(fb1["after_import_s"], 2), round(fb1["rss_mb"]),
                     " / ".join(f"{x['after_import_s']:.2f}" for x in fb2), " / ".join(f"{x['rss_mb']:.0f}" for x in fb2),
                     p["loadavg_1min_at_start"]])
    head = ["pairs", "preprocess pairs/s", "preprocess s", "preprocess RSS main MiB", "worker RSS MiB",
            "disk MiB", "train: start→first update s", "2 procs: start→first update s",
            "train: start→exit after 1 update s", "train RSS MiB",
            "train 2 procs (torchrun): start→exit s", "train 2 procs RSS MiB", "first batch 1 proc s (after imports)",
            "1 proc RSS MiB", "first batch 2 procs s", "2 procs RSS MiB", "load avg"]
    pr = payload["projection"]
    note = (f"\n\nWMT14 en-fr projection ({pr['assumed_pairs']:,} pairs, {pr['assumed_pieces_per_side']:.0f} pieces per "
            f"side assumed; {pr['measured_pieces_per_side']} measured here): {pr['disk_gb']} GB on disk "
            f"({pr['ids_gb']} GB ids + {pr['index_gb']} GB offsets/lengths), {pr['lengths_mapped_per_rank_mb']} MiB "
            f"of lengths mapped per rank (shared page cache), {pr['dedup_memory_gb']} GB for duplicate removal while "
            f"preprocessing, about {pr['preprocess_hours_at_measured_rate']} h of preprocessing at this machine's "
            f"rate.\n\n" + benchlib.env_line(payload["environment"]))
    return benchlib.md_table(head, rows) + note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000,16000000", help="comma-separated corpus sizes")
    parser.add_argument("--work", default="/tmp/seqed_data_scale", help="scratch directory (corpora, outputs)")
    parser.add_argument("--base", type=int, default=100_000, help="distinct grammar pairs the corpora draw from")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the corpora and outputs in --work")
    parser.add_argument("--out", default=str(benchlib.RESULTS / "data_scale.json"))
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of other sizes already in --out (e.g. add 16M to a 1M+4M file)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        env = benchlib.environment(args.threads)
        base = base_pairs(work, args.base)
        tok_dir = work / "tokenizer"
        if not (tok_dir / "tokenizer.json").is_file():
            from seqed.tokenizer import Tokenizer

            rows = base.read_text(encoding="utf-8").splitlines()
            Tokenizer.train([r.split("\t")[0] for r in rows], [r.split("\t")[1] for r in rows], vocab_size=8000,
                            seed=1).save(tok_dir)
        runs = []
        for n in sizes:
            runs.append(measure(n, work, base, tok_dir, args.workers, args.threads))
            if not args.keep:
                for p in (work / f"train{n}.en", work / f"train{n}.fr"):
                    p.unlink(missing_ok=True)
                shutil.rmtree(work / f"bin{n}", ignore_errors=True)
        old = benchlib.read_json(Path(args.out)) if args.merge else None
        if old:
            runs = sorted([r for r in old["runs"] if r["pairs"] not in sizes] + runs, key=lambda r: r["pairs"])
            env = dict(env, earlier_runs_environment=old["environment"])
        payload = {"environment": env, "workers": args.workers, "base_pairs": args.base, "runs": runs,
                   "projection": projection(runs),
                   "notes": ["2 shared cores: other developers' jobs ran at the same time (see each row's load "
                             "average); rates are lower bounds",
                             "train_1proc is `seqed train` (one process) with train.max_steps=1: seconds_to_first_update "
                             "runs from process start to the wall clock of the first train.log.jsonl line (imports, "
                             "mapping, sampler, model, the update); seconds_to_exit_after_1_update adds the "
                             "checkpoint write and the exit",
                             "train_2proc: the same under torchrun with 2 gloo processes of 1 thread (launcher "
                             "start-up included); rss_mb per rank",
                             "first_batch_2proc measures what each rank does before its first update"]}
        return benchlib.publish("data_scale.py", SECTION, args.out, payload, table(payload),
                                readme=not args.no_readme)
    except BenchError as err:
        return benchlib.fail("data_scale.py", err)


if __name__ == "__main__":
    sys.exit(main())
