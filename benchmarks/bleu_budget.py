"""Test BLEU of a training run at wall-clock budgets ("time to quality").

For each budget (minutes of training, validation included), take the checkpoints the run wrote
within the budget, choose the best by validation BLEU (never by test), decode the test sets with
beam search and score them with sacreBLEU. Writes one JSON file.

    python benchmarks/bleu_budget.py runs/m30k_tf --budgets 10 15 \
        --test test2016=$SEQED_DATA/multi30k/test2016 --test test2017=$SEQED_DATA/multi30k/test2017 \
        -o benchmarks/results/multi30k_transformer_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from seqed.checkpoint import average_checkpoints, save_atomic
from seqed.data.corpus import read_parallel
from seqed.loading import load_model
from seqed.model import count_parameters
from seqed.plot import read_log
from seqed.scoring import score
from seqed.translator import Translator

from benchlib import portable_paths  # benchmarks/ is on sys.path when this script runs


def pick(rows: list[dict], run: Path, budget_s: float) -> tuple[dict, list[dict]] | None:
    inside = [r for r in rows if r["train_seconds"] <= budget_s and (run / f"checkpoint_{r['step']}.pt").is_file()]
    if not inside:
        return None
    best = max(inside, key=lambda r: (r.get("valid_bleu", -r.get("valid_nll", 0.0)), r["step"]))
    return best, inside


def decode(ckpt: str, tests: dict[str, str], beam: int, batch_size: int, precision: str) -> dict:
    loaded = load_model(ckpt, device="cpu")
    s = loaded.config.search
    tr = Translator(loaded.model, loaded.tokenizer, beam_size=beam, length_penalty=s.length_penalty,
                    max_len_a=s.max_len_a, max_len_b=s.max_len_b, batch_size=batch_size,
                    max_src_len=loaded.config.model.max_pieces, progress=False)
    out = {"checkpoint": ckpt, "parameters": count_parameters(loaded.model)}
    for name, prefix in tests.items():
        src, ref = read_parallel(prefix + ".en", prefix + ".fr")
        tick = time.perf_counter()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
        with ctx:
            hyps = [h[0][0] for h in tr.translate_text(src)]
        secs = time.perf_counter() - tick
        sc = score(hyps, ref)
        out[name] = {"bleu": sc.bleu, "chrf": sc.chrf, "bleu_signature": sc.bleu_signature,
                     "chrf_signature": sc.chrf_signature, "sentences": len(src),
                     "decode_seconds": round(secs, 2), "sentences_per_second": round(len(src) / secs, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run directory (train.log.jsonl + checkpoint_<step>.pt files)")
    ap.add_argument("--budgets", type=float, nargs="+", required=True, help="minutes")
    ap.add_argument("--test", action="append", required=True, metavar="NAME=PREFIX",
                    help="test set: PREFIX.en / PREFIX.fr")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--average", type=int, default=0,
                    help="also score the average of the last N checkpoints inside each budget")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="decoding precision")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    args = ap.parse_args()
    run = Path(args.run)
    rows = read_log(run)
    tests = dict(t.split("=", 1) for t in args.test)
    cfg_text = (run / "config.yaml").read_text()
    result = {"run": str(run), "config": cfg_text, "beam": args.beam, "decode_precision": args.precision,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "torch": str(torch.__version__), "note": args.note,
              "validation_log": rows, "budgets": {}}
    for budget in args.budgets:
        chosen = pick(rows, run, budget * 60)
        if chosen is None:
            result["budgets"][str(budget)] = None
            continue
        best, inside = chosen
        entry = {"selected_by": "best validation BLEU among checkpoints within the budget",
                 "step": best["step"], "train_seconds": best["train_seconds"],
                 "valid_bleu": best.get("valid_bleu"),
                 "best": decode(str(run / f"checkpoint_{best['step']}.pt"), tests, args.beam,
                                args.batch_size, args.precision)}
        if args.average > 1 and len(inside) >= 2:
            last = [str(run / f"checkpoint_{r['step']}.pt") for r in inside[-args.average:]]
            avg_path = run / f"avg_budget{budget:g}.pt"
            save_atomic(average_checkpoints(last), avg_path)
            entry["average"] = decode(str(avg_path), tests, args.beam, args.batch_size, args.precision)
            entry["average"]["averaged"] = last
        result["budgets"][str(budget)] = entry
        print(json.dumps({k: v for k, v in entry.items() if k != "validation_log"}, indent=1))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(portable_paths(result), indent=1) + "\n")


if __name__ == "__main__":
    main()
