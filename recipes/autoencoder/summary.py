"""Results of an autoencoder recipe run: RUN/results.json, and rows for recipes/autoencoder/README.md.

  python recipes/autoencoder/summary.py write RUN --config rnn_code --checkpoint RUN/checkpoint_best.pt
  python recipes/autoencoder/summary.py row recipes/autoencoder/results/*.json

`write` gathers what run.sh measured (RUN/test2016.eval.json, RUN/test2016.mask15.eval.json, written by
`seqed evaluate`), the training time and updates (the last line of RUN/train.log.jsonl), the model and
its parameter count (the checkpoint), the thread count and the command (RUN/env.json, RUN/config.yaml)
into RUN/results.json. `row` prints one markdown row per results file; every number comes from it (files
that are not a run's results, such as results/train_vs_test.json, are skipped with a note).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # recipes/: the shared results helpers
from results import hardware, model_summary, portable_paths  # noqa: E402

EVALS = {"clean": "test2016.eval.json", "mask15": "test2016.mask15.eval.json",
         "mask15_fill": "test2016.mask15.fill.eval.json"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _noise(noise) -> dict:
    """The training noise's non-zero rates ({} for a model trained on clean input)."""
    rates = {k: getattr(noise, k) for k in ("drop", "mask", "substitute", "shuffle_k", "infill")}
    if not any(rates.values()):
        return {}
    return {k: v for k, v in vars(noise).items() if v and (k != "infill_lambda" or rates["infill"])}


def write(run: Path, config: str, checkpoint: str) -> dict:
    from seqed.loading import load_model
    from seqed.model import count_parameters

    loaded = load_model(checkpoint, device="cpu")
    cfg, model = loaded.config, loaded.model
    log = [r for r in (json.loads(line) for line in (run / "train.log.jsonl").read_text().splitlines()
                                if line.strip()) if r.get("event", "valid") == "valid"]
    last = log[-1] if log else {}
    env = _read(run / "env.json") if (run / "env.json").is_file() else {}
    argv = env.get("argv", [])
    evals = {}
    for key, name in EVALS.items():
        if (run / name).is_file():
            report = _read(run / name)
            report.pop("checkpoint", None)
            evals[key] = report
    result = {
        "recipe": "autoencoder",
        "config": config,
        "command": argv[1:],
        "overrides": [a for a in argv[3:] if "=" in a and not a.startswith(("out_dir=", "-"))],
        "run_dir": str(run),
        "checkpoint": Path(checkpoint).name,
        "model": {"summary": model_summary(cfg), "params": count_parameters(model),
                  "bottleneck": cfg.model.bottleneck, "code_dim": cfg.model.code_dim,
                  "tie_encoder_decoder": cfg.model.tie_encoder_decoder,
                  "vocab_size": loaded.tokenizer.tgt_vocab_size},
        "noise": _noise(cfg.data.noise),
        "hardware": hardware(cfg.train.device if cfg.train.device != "auto" else "cpu", cfg.train.threads),
        "training": {"seconds": last.get("train_seconds"), "minutes": round(last.get("train_seconds", 0) / 60, 1),
                     "steps": last.get("step"), "epochs": last.get("epoch"),
                     # resolved ("auto" -> bf16 or fp32): the log's, else the run's env.json
                     "precision": last.get("precision") or env.get("precision") or cfg.train.precision,
                     "max_minutes": cfg.train.max_minutes,
                     "note": "wall clock of the training loop (validations included), from train.log.jsonl"},
        "evaluations": evals,
        "versions": env.get("versions", {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run / "results.json").write_text(json.dumps(portable_paths(result), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return result


def row(result: dict) -> list[str]:
    """Markdown rows: config | parameters | threads | minutes | updates | BLEU | chrF | exact % | token acc. %
    | notes; one per evaluation (clean input, 15% masked)."""
    t, hw = result["training"], result["hardware"]
    head = [f"`{result['config']}`" + (f" `{' '.join(result['overrides'])}`" if result["overrides"] else ""),
            f"{result['model']['params'] / 1e6:.2f}M", str(hw["torch_threads"]), f"{t['minutes']}", str(t["steps"])]
    rows = []
    for key, ev in result["evaluations"].items():
        notes = [] if key == "clean" else [f"input: 15% of pieces masked ({ev['decoding']} decoding)"]
        if "completion_accuracy" in ev:
            notes.append(f"completion accuracy **{ev['completion_accuracy']}%** of {ev['masked_tokens']} "
                         f"masked pieces")
        if "noisy_input" in ev:
            n = ev["noisy_input"]
            notes.append(f"corrupted input itself: BLEU {n['bleu']}, exact {n['exact_match']}%")
        if "variational" in ev:
            v = ev["variational"]
            notes.append(f"KL {v['kl']:.2f}, NLL {v['nll']:.2f}, active units {v['active_units']}/{v['latent_dim']}")
        cells = head + [f"{ev['bleu']:.1f}", f"{ev['chrf']:.1f}", f"{ev['exact_match']:.1f}",
                        f"{ev['token_accuracy']:.1f}", "; ".join(notes)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("write", help="write RUN/results.json")
    p.add_argument("run", type=Path)
    p.add_argument("--config", required=True, help="the recipe config name (rnn_code, attention, ...)")
    p.add_argument("--checkpoint", required=True, help="the checkpoint run.sh evaluated")
    p = sub.add_parser("row", help="markdown rows for the README's results table")
    p.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "write":
        write(args.run, args.config, args.checkpoint)
        print(f"wrote {args.run / 'results.json'}", file=sys.stderr)
    else:
        for path in args.results:
            result = _read(path)
            if "training" not in result:  # a measurement beside the runs (train_vs_test.json, ...): no row
                print(f"summary.py: skipping {path}: not a run's results.json", file=sys.stderr)
                continue
            print("\n".join(row(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
