"""Updates per minute of the recurrent autoencoder recipes, this tree against an earlier revision (issue 14).

For each config of `recipes/autoencoder/` (default `attention` and `rnn_code`) and each code version
("before": the `seqed/` package of `--before REV`, extracted with `git archive`; "after": this tree), one
child process builds the recipe's Trainer on Multi30k (same tokenizer, seed and batch order in both),
runs `--warmup` updates, then times `--updates` more with the Trainer's `Update` (the real update: forward,
backward, clipping, Adam) and, with `--validate`, in the first round one validation (validation
loss on val.en and greedy BLEU on its first 300 sentences, as the recipe does). Rounds alternate the order of the two
versions, so that a change in the machine's load falls on both. Both versions train from the same
initial weights on the same batches, so their losses must agree: the JSON keeps them side by side.

    python benchmarks/ae_throughput.py --before 343fbfe --validate      # 2 rounds x 15 updates, 1 thread
    python benchmarks/ae_throughput.py --before 343fbfe --threads 2 --out benchmarks/results/x.json

Reports updates per minute (wall clock over the timed updates) and CPU seconds per update (the
process's CPU time: less sensitive to other processes on a shared machine than the wall clock).
Writes benchmarks/results/ae_throughput.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import BenchError

SECTION = "ae_throughput"
VERSIONS = ("before", "after")


def child(args: argparse.Namespace) -> int:
    """Measure one (config, version) in this process; print one JSON line."""
    import torch

    from seqed.config import load_config
    from seqed.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        yaml = benchlib.REPO / "recipes" / "autoencoder" / f"{args.config}.yaml"
        cfg = load_config(str(yaml), [f"out_dir={tmp}/run", f"train.threads={args.threads}", "train.device=cpu"])
        trainer = Trainer(cfg, progress=False)
        trainer.setup()
        batches = trainer.sampler.batches(0)
        losses, tokens = [], 0

        def update(i: int) -> None:
            nonlocal tokens
            batch = trainer.data.train.batch(batches[i])
            trainer.schedule.set_step(i + 1)
            if hasattr(trainer, "update"):
                result = trainer.update([batch], trainer.state.step)
            else:  # revisions before the update moved to seqed/update.py
                result = trainer.train_step([batch])
            losses.append(float(result.loss) / max(result.n_tgt, 1))  # a device tensor since the Trainer split
            tokens += result.n_all

        for i in range(args.warmup):
            update(i)
        tokens = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(args.warmup, args.warmup + args.updates):
            update(i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out = {"config": args.config, "updates": args.updates, "wall_s": wall, "cpu_s": cpu, "tokens": tokens,
               "losses": losses, "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg()}
        if args.validate:
            tick = time.perf_counter()
            if hasattr(trainer, "update"):
                trainer.validator(trainer.model, trainer.state, autocast=trainer.update.autocast)
            elif hasattr(trainer, "validator"):  # revisions between the Trainer split and seqed/update.py
                trainer.validator(trainer.model, trainer.state, autocast=trainer.autocast)
            else:
                trainer.validate()
            out["validate_s"] = time.perf_counter() - tick
    print("RESULT " + json.dumps(out))
    return 0


def extract(rev: str) -> Path:
    """`seqed/` of git revision `rev`, extracted under benchmarks/work/ (reused when already there)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=benchlib.REPO,
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise BenchError(f"--before {rev}: not a commit of this repository")
    root = benchlib.WORK / "ae_throughput" / sha.stdout.strip()[:12]
    if not (root / "seqed" / "__init__.py").is_file():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", sha.stdout.strip(), "seqed"],
                                 cwd=benchlib.REPO, capture_output=True, check=True).stdout
        with tempfile.TemporaryFile() as f:
            f.write(archive)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(root, filter="data")
    return root


def measure(config: str, root: Path, args: argparse.Namespace, validate: bool) -> dict:
    env = benchlib.thread_env(args.threads)
    env["PYTHONPATH"] = str(root)
    env["SEQED_DATA"] = str(args.data)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--config", config, "--threads",
           str(args.threads), "--warmup", str(args.warmup), "--updates", str(args.per_round)]
    if validate:
        cmd.append("--validate")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=benchlib.REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"{config} ({root}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(runs: list[dict]) -> dict:
    updates = sum(r["updates"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    out = {"updates": updates, "wall_s": round(wall, 2), "updates_per_min": 60 * updates / wall,
           "cpu_s_per_update": cpu / updates, "tokens_per_s": sum(r["tokens"] for r in runs) / wall,
           "rounds": runs}
    valid = [r["validate_s"] for r in runs if "validate_s" in r]
    if valid:
        out["validate_s"] = valid[0]
    return out


def table(results: dict) -> str:
    rows = []
    for config, v in results.items():
        b, a = v["before"], v["after"]
        rows.append([f"`{config}`", b["updates_per_min"], a["updates_per_min"],
                     f"{a['updates_per_min'] / b['updates_per_min']:.2f}x", round(b["cpu_s_per_update"], 2),
                     round(a["cpu_s_per_update"], 2), b.get("validate_s") and round(b["validate_s"], 1),
                     a.get("validate_s") and round(a["validate_s"], 1), f"{v['max_loss_difference']:.1e}"])
    return benchlib.md_table(["config", "updates/min before", "after", "speed-up", "CPU s/update before", "after",
                              "validation s before", "after", "max loss difference"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="git revision whose seqed/ is 'before' (required unless --child)")
    p.add_argument("--configs", nargs="+", default=["attention", "rnn_code"])
    p.add_argument("--updates", type=int, default=30, help="timed updates per config and version, in all")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds the timed updates are split into")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(benchlib.RESULTS / "ae_throughput.json"))
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the table in benchmarks/README.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--validate", action="store_true", help="also time one validation per config and version")
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    try:
        if not args.before:
            raise BenchError("--before REV is required (the revision to compare this tree against)")
        if args.updates < args.rounds or args.rounds < 1:
            raise BenchError("--updates must be at least --rounds, and --rounds at least 1")
        args.per_round = args.updates // args.rounds
        args.data = benchlib.data_dir()
        benchlib.set_threads(args.threads)  # so the environment record shows the children's thread count
        env = benchlib.environment(args.threads)
        roots = {"before": extract(args.before), "after": benchlib.REPO}
        runs: dict = {c: {v: [] for v in VERSIONS} for c in args.configs}
        for r in range(args.rounds):
            for config in args.configs:
                for version in (VERSIONS if r % 2 == 0 else VERSIONS[::-1]):
                    res = measure(config, roots[version], args, validate=args.validate and r == 0)
                    print(f"[ae_throughput] round {r + 1} {config} {version}: "
                          f"{60 * res['updates'] / res['wall_s']:.1f} updates/min, "
                          f"{res['cpu_s'] / res['updates']:.2f} CPU s/update", file=sys.stderr)
                    runs[config][version].append(res)
        results = {}
        for config, by_version in runs.items():
            results[config] = {v: summarize(by_version[v]) for v in VERSIONS}
            lb = [x for rr in by_version["before"] for x in rr["losses"]]
            la = [x for rr in by_version["after"] for x in rr["losses"]]
            results[config]["max_loss_difference"] = max(abs(x - y) for x, y in zip(lb, la))
        payload = {"benchmark": SECTION, "before": args.before,
                   "config": {"configs": args.configs, "updates": args.per_round * args.rounds,
                              "rounds": args.rounds, "warmup": args.warmup, "threads": args.threads,
                              "data": str(args.data)},
                   "environment": env, "results": results}
        body = (table(results) + "\n\n" + benchlib.env_line(env) + f"; before = `{args.before}`, after = this "
                f"tree; {args.per_round * args.rounds} timed updates per row in {args.rounds} alternating rounds.")
        return benchlib.publish("ae_throughput.py", SECTION, args.out, payload, body, readme=not args.no_readme)
    except BenchError as err:
        return benchlib.fail("ae_throughput.py", err)


if __name__ == "__main__":
    sys.exit(main())
