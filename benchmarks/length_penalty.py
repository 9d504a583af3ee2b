"""Beam search under the length penalty: BLEU, brevity penalty, length ratio and speed, against a baseline revision.

For one checkpoint, decodes the validation set and test2016 with greedy search and with beam 5 at each
length penalty alpha (default 0, 0.6, 1.0, 1.5, 2.0), through `seqed.translator.Translator` (fp32, batch
64, length-sorted, as `seqed translate` runs). The same rows are decoded by the package of a baseline
revision (`--baseline`, default the commit before the exact stopping rule), extracted with `git archive`
into a temporary folder and run in a child process, so the before/after speed ratio comes from one
invocation on one machine. Both sides run one after the other with the same threads.

    python benchmarks/length_penalty.py -c runs/quick/checkpoint_best.pt

Writes benchmarks/results/length_penalty.json and the table in benchmarks/README.md.
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
from typing import Optional

import benchlib
from benchlib import BenchError

SECTION = "length_penalty"
BASELINE = "589e113"  # main before the exact stopping rule (issue 15)


def decode_rows(spec: dict) -> dict:
    """Run every (split, beam, alpha) row of `spec` with the `seqed` package on sys.path.

    BLEU, its brevity penalty and the length ratio (in BLEU's 13a tokens) come from sacreBLEU directly,
    so both sides score alike whatever their `seqed.scoring` holds.
    """
    from sacrebleu.metrics import BLEU

    from seqed.data.corpus import read_lines
    from seqed.loading import load_model
    from seqed.translator import Translator

    benchlib.set_threads(spec["threads"])
    loaded = load_model(readable_checkpoint(spec["checkpoint"], spec["side"], spec.get("work")), device="cpu")
    s = loaded.config.search
    # Packages from before `max_pieces` derive the source limit in the Translator themselves.
    limit = {"max_src_len": loaded.config.model.max_pieces} if hasattr(loaded.config.model, "max_pieces") else {}
    rows = []
    for split, (src, ref) in spec["splits"].items():
        sentences, refs = read_lines(src), read_lines(ref)
        if spec.get("limit"):
            sentences, refs = sentences[: spec["limit"]], refs[: spec["limit"]]
        for beam, alpha in spec["searches"]:
            translator = Translator(loaded.model, loaded.tokenizer, device=loaded.device, beam_size=beam,
                                    length_penalty=alpha, max_len_a=s.max_len_a, max_len_b=s.max_len_b,
                                    min_len=s.min_len, batch_size=64, **limit)
            translator.translate(sentences[:16])  # warm-up, untimed
            start = time.perf_counter()
            hyps = translator.translate(sentences)
            texts = loaded.tokenizer.decode_tgt([h[0].tokens for h in hyps])
            seconds = time.perf_counter() - start
            bleu = BLEU().corpus_score(texts, [refs])
            rows.append({"split": split, "beam": beam, "alpha": alpha, "bleu": round(bleu.score, 2),
                         "brevity_penalty": round(bleu.bp, 4), "length_ratio": round(bleu.sys_len / bleu.ref_len, 4),
                         "output_words": bleu.sys_len, "reference_words": bleu.ref_len,
                         "seconds": round(seconds, 3), "sentences_per_s": round(len(sentences) / seconds, 1)})
            print(f"[length_penalty] {spec['side']} {split} beam {beam} alpha {alpha}: BLEU {rows[-1]['bleu']}, "
                  f"length ratio {rows[-1]['length_ratio']}, {rows[-1]['sentences_per_s']} sent/s",
                  file=sys.stderr, flush=True)
    return {"step": loaded.step, "rows": rows}


def readable_checkpoint(path: str, side: str, work: Optional[str]) -> str:
    """`path`, or for an older package that rejects config keys added since, a copy in `work` (weights,
    tokenizer and a config of only the keys this package's `Config` knows; the dropped ones are printed)."""
    import dataclasses
    import typing

    import torch

    from seqed.config import Config, config_from_dict

    state = torch.load(path, map_location="cpu", weights_only=False)
    dropped = []

    def dataclass_in(hint):
        if dataclasses.is_dataclass(hint):
            return hint
        return next((d for d in map(dataclass_in, typing.get_args(hint)) if d is not None), None)

    def known(data: dict, cls, where: str) -> dict:
        hints, out = typing.get_type_hints(cls), {}
        for key, value in data.items():
            if key not in hints:
                dropped.append(f"{where}{key}={value!r}")
                continue
            sub = dataclass_in(hints[key])
            if sub is not None and isinstance(value, dict):
                value = known(value, sub, f"{where}{key}.")
            elif sub is not None and isinstance(value, list):
                value = [known(v, sub, f"{where}{key}.") if isinstance(v, dict) else v for v in value]
            out[key] = value
        return out

    config = known(state["config"], Config, "")
    if not dropped:
        return path
    config_from_dict(config)  # what this package makes of the rest
    print(f"[length_penalty] {side}: this package does not know {', '.join(dropped)}: left out", file=sys.stderr)
    copy = Path(work or tempfile.mkdtemp(prefix="seqed_lp_")) / Path(path).name
    torch.save({k: v for k, v in state.items() if k not in ("optimizer", "scheduler")} | {"config": config}, copy)
    return str(copy)


def run_side(spec: dict, package_root: Path) -> dict:
    """decode_rows in a child process whose `seqed` is the one under `package_root`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package_root), str(Path(__file__).parent)]),
               **benchlib.thread_env(spec["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise BenchError(f"the {spec['side']} side failed (exit {proc.returncode}); see its messages above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extract(rev: str, into: Path) -> Path:
    """The `seqed/` package of git revision `rev`, unpacked under `into`."""
    repo = benchlib.REPO
    archive = into / "seqed.tar"
    with archive.open("wb") as f:
        proc = subprocess.run(["git", "-C", str(repo), "archive", rev, "seqed"], stdout=f)
    if proc.returncode != 0:
        raise BenchError(f"git archive {rev} failed: is {rev!r} a revision of this repository?")
    with tarfile.open(archive) as tar:
        tar.extractall(into / "pkg", filter="data")
    return into / "pkg"


def table(payload: dict) -> str:
    base = {(r["split"], r["beam"], r["alpha"]): r for r in payload["baseline"]}
    rows = []
    for r in payload["runs"]:
        b = base.get((r["split"], r["beam"], r["alpha"]))
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}, alpha {r['alpha']}"
        rows.append([r["split"], search, r["bleu"], r["brevity_penalty"], r["length_ratio"], r["sentences_per_s"],
                     b["bleu"] if b else "", b["length_ratio"] if b else "",
                     f"{r['sentences_per_s'] / b['sentences_per_s']:.2f}x" if b else ""])
    cfg = payload["config"]
    part = f"first {cfg['limit']} sentences of each split" if cfg.get("limit") else "whole splits"
    head = (f"Checkpoint `{cfg['checkpoint']}` (step {cfg['step']}), {part}, fp32, batch 64, {cfg['threads']} threads; "
            f"baseline = the package at `{cfg['baseline']}` (stop once a step's best candidate is EOS). "
            f"{benchlib.env_line(payload['environment'])}.")
    return head + "\n\n" + benchlib.md_table(
        ["split", "search", "BLEU", "BP", "hyp/ref", "sent/s", "baseline BLEU", "baseline hyp/ref",
         "speed vs baseline"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "-c", help="checkpoint file")
    p.add_argument("--alphas", nargs="+", type=float, default=[0.0, 0.6, 1.0, 1.5, 2.0])
    p.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="first N sentences of each split (0 = all; BLEU is then partial)")
    p.add_argument("--out", default=str(benchlib.RESULTS / "length_penalty.json"))
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(decode_rows(json.loads(args.child))))
        return 0
    try:
        if not args.checkpoint or not Path(args.checkpoint).is_file():
            raise BenchError(f"--checkpoint: no checkpoint file at {args.checkpoint!r}")
        m30k = benchlib.data_dir() / "multi30k"
        splits = {name: (str(m30k / f"{name}.en"), str(m30k / f"{name}.fr")) for name in ("val", "test2016")}
        for src, ref in splits.values():
            for path in (src, ref):
                if not Path(path).is_file():
                    raise BenchError(f"missing {path}: set SEQED_DATA to the folder holding multi30k/")
        searches = [(1, 0.0)] + [(5, a) for a in args.alphas]
        spec = {"checkpoint": args.checkpoint, "splits": splits, "searches": searches, "threads": args.threads,
                "limit": args.limit}
        current = run_side(dict(spec, side="current"), benchlib.REPO)
        with tempfile.TemporaryDirectory() as tmp:
            baseline = run_side(dict(spec, side="baseline", work=tmp, splits={"test2016": splits["test2016"]},
                                     searches=[(1, 0.0), (5, 1.0)]),
                                extract(args.baseline, Path(tmp)))["rows"]
        runs, step = current["rows"], current["step"]
        best_val = max((r for r in runs if r["split"] == "val" and r["beam"] > 1), key=lambda r: r["bleu"])
        payload = {"benchmark": SECTION,
                   "config": {"checkpoint": args.checkpoint, "step": step, "threads": args.threads,
                              "baseline": args.baseline, "batch_size": 64, "precision": "fp32",
                              "limit": args.limit},
                   "chosen_alpha_on_val": best_val["alpha"],
                   "environment": benchlib.environment(args.threads), "runs": runs, "baseline": baseline}
        return benchlib.publish("length_penalty", SECTION, args.out, payload, table(payload),
                                readme=not args.no_readme)
    except (BenchError, FileNotFoundError, ValueError) as err:
        return benchlib.fail("length_penalty", err)


if __name__ == "__main__":
    sys.exit(main())
