"""Recipe bookkeeping for recipes/common.sh: pick the checkpoint by validation BLEU, write results.json.

  python recipes/results.py select RUN/select/*.score.json      # prints the winning checkpoint's name
  python recipes/results.py write --run RUN --recipe R --config C --checkpoint CKPT --data DIR \
      --tests "test2016 test2017" --beam 5 [--length-penalty 1.0] [--overrides "k=v ..."]
  python recipes/results.py row RESULTS.json [...]     # markdown rows for recipes/README.md's tables
  python recipes/results.py search RESULTS.json [...]  # rows of beam vs greedy: BLEU and length ratio

results.json holds what recipes/README.md's table shows: the model and its parameter count, the
hardware, the training time, BLEU and chrF with sacreBLEU signatures per test set, and decode speed.
Every number is read from files the recipe wrote (train.log.jsonl, *.score.json, *.decode.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # benchlib: portable_paths
from benchlib import portable_paths  # noqa: E402


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def select(score_files: list[str]) -> str:
    """The checkpoint whose validation score file (`<checkpoint name>.score.json`) has the highest BLEU;
    ties go to the first file given."""
    best_name, best_bleu = None, None
    for path in map(Path, score_files):
        bleu = _read_json(path)["bleu"]
        if best_bleu is None or bleu > best_bleu:
            best_name, best_bleu = path.name[: -len(".score.json")], bleu
    if best_name is None:
        raise SystemExit("results.py select: no score files given")
    return best_name


def hardware(device: str, threads: int) -> dict:
    """The machine this runs on (the recipe trains and decodes on the same machine).

    Args:
        device: the training device ("cpu", "cuda", "cuda:N").
        threads: the config's train.threads (0: torch's default, which this process reports).
    """
    import torch

    from seqed.runtime import cpu_model

    info = {"device": device, "cpu": cpu_model(), "cpu_cores": os.cpu_count(),
            "torch_threads": threads or torch.get_num_threads(), "gpu": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["gpu_count"] = torch.cuda.device_count()
    return info


def _averaged_from(path: Path) -> list[str]:
    from seqed.checkpoint import load_checkpoint

    return list(load_checkpoint(path).get("averaged_from", []))


def model_summary(cfg) -> str:
    enc, dec = cfg.model.encoder, cfg.model.decoder

    def side(s, name):
        if s.type == "transformer":
            return f"{name} transformer {s.layers}x d{s.hidden} h{s.heads} ffn{s.ffn}"
        kind = ("bi" if name == "encoder" and s.bidirectional else "") + s.cell.upper()
        extra = ""
        if name == "encoder" and s.reverse_source:
            extra = " reversed source"
        if name == "decoder":
            extra = f" attention {s.attention}" + (" + input feeding" if s.attention in ("dot", "general")
                                                    and s.input_feeding else "")
        return f"{name} {kind} {s.layers}x{s.hidden}{extra}"

    return f"{side(enc, 'encoder')}; {side(dec, 'decoder')}"


def write(args: argparse.Namespace) -> dict:
    from seqed.loading import load_model
    from seqed.model import count_parameters
    from seqed.precision import resolve

    run = Path(args.run)
    loaded = load_model(str(run / args.checkpoint), device="cpu")
    cfg = loaded.config
    log = [r for r in (json.loads(line) for line in (run / "train.log.jsonl").read_text().splitlines()
                                if line.strip()) if r.get("event", "valid") == "valid"]
    last = log[-1]
    bleus = [r["valid_bleu"] for r in log if "valid_bleu" in r]
    device = cfg.train.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    decode_precision = resolve("auto", device)  # what `seqed translate` (no --precision) decoded in here
    tests = {}
    for name in args.tests.split():
        score_path = run / f"{name}.score.json"
        if not score_path.is_file():
            continue
        sc = _read_json(score_path)
        timing = _read_json(run / f"{name}.decode.json")
        tests[name] = {
            "bleu": sc["bleu"], "chrf": sc["chrf"], "bleu_signature": sc["bleu_signature"],
            "chrf_signature": sc["chrf_signature"], "sentences": sc["n"], "beam": args.beam,
            "decode_seconds": round(timing["seconds"], 2),
            "sentences_per_second": round(sc["n"] / timing["seconds"], 1) if timing["seconds"] > 0 else None,
            "length_penalty": args.length_penalty, "brevity_penalty": sc.get("brevity_penalty"),
            "length_ratio": sc.get("length_ratio"), "precision": decode_precision,
            "decode_note": "wall time of `seqed translate` on the file, process start and model load included",
        }
        greedy_path = run / f"{name}.greedy.score.json"
        if greedy_path.is_file():
            g = _read_json(greedy_path)
            tests[name]["greedy"] = {"bleu": g["bleu"], "chrf": g["chrf"], "brevity_penalty": g.get("brevity_penalty"),
                                     "length_ratio": g.get("length_ratio")}
    selection_dir = run / "select"
    candidates = {p.name[: -len(".score.json")]: _read_json(p)["bleu"]
                  for p in sorted(selection_dir.glob("*.score.json"))
                  if not p.name.startswith("lp_")} if selection_dir.is_dir() else {}
    alphas = {p.name[len("lp_"): -len(".score.json")]: _read_json(p)["bleu"]
              for p in sorted(selection_dir.glob("lp_*.score.json"))} if selection_dir.is_dir() else {}
    prepared = Path(args.data) / "prepare.json"
    data = _read_json(prepared) if prepared.is_file() else {}
    env = _read_json(run / "env.json") if (run / "env.json").is_file() else {}
    result = {
        "recipe": args.recipe,
        "config": args.config,
        "overrides": args.overrides.split() if args.overrides else [],
        "run_dir": str(run),
        "checkpoint": args.checkpoint,
        "averaged_from": [Path(p).name for p in _averaged_from(run / args.checkpoint)],
        "selection": {"rule": f"highest validation BLEU (beam {args.beam}) among the candidates",
                      "valid_bleu": candidates},
        "length_penalty": {"chosen": args.length_penalty,
                           "rule": f"highest validation BLEU (beam {args.beam}) among the alphas tried",
                           "valid_bleu": alphas},
        "model": {"summary": model_summary(cfg), "params": count_parameters(loaded.model),
                  "vocab_size": loaded.tokenizer.tgt_vocab_size, "tokenizer": cfg.tokenizer.type},
        "hardware": hardware(device, cfg.train.threads),
        "training": {"seconds": last.get("train_seconds"), "minutes": round(last.get("train_seconds", 0) / 60, 1),
                     "steps": last.get("step"), "epochs": last.get("epoch"),
                     "precision": last.get("precision", cfg.train.precision),  # resolved (logs since auto)
                     "max_minutes": cfg.train.max_minutes,
                     "best_valid_bleu_greedy": max(bleus) if bleus else None,
                     "note": "wall clock of the training loop (validations included), from train.log.jsonl"},
        "data": {k: data.get(k) for k in ("source", "origin", "from", "verified", "seed", "limit") if k in data},
        "tests": tests,
        "versions": env.get("versions", {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = run / "results.json"
    out.write_text(json.dumps(portable_paths(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def row(result: dict, tests: list[str] | None = None) -> str:
    """One markdown table row: model | params | hardware | training time | BLEU / chrF per test set |
    BLEU signature | decode speed (the first test set's). `tests` picks and orders the test sets."""
    hw = result["hardware"]
    where = f"{hw['gpu']}" if hw.get("gpu") else f"{hw['cpu']}, {hw['torch_threads']} threads"
    tests = {name: result["tests"][name] for name in (tests or result["tests"])}
    scores = [f"{t['bleu']:.1f} / {t['chrf']:.1f}" for t in tests.values()]
    first = next(iter(tests.values()), {})
    speed = f"{first['sentences_per_second']} sent/s (beam {first['beam']})" if first else ""
    signature = f"`{first.get('bleu_signature', '')}`".replace("|", "\\|")  # a bare | would end the cell
    cells = [f"{result['config']}: {result['model']['summary']}", f"{result['model']['params'] / 1e6:.1f}M", where,
             f"{result['training']['minutes']} min", *scores, signature, speed]
    return "| " + " | ".join(cells) + " |"


def search_rows(result: dict, tests: list[str] | None = None) -> list[str]:
    """Markdown rows, one per test set: config | test | beam BLEU (alpha) | hyp/ref | greedy BLEU | hyp/ref |
    beam - greedy. Results from before greedy was decoded alongside say "not measured"."""
    rows = []
    for name in tests or result["tests"]:
        t = result["tests"][name]
        alpha = t.get("length_penalty")
        beam = f"{t['bleu']:.2f} (beam {t['beam']}, alpha {alpha if alpha is not None else 'not recorded'})"
        g = t.get("greedy")
        cells = [result["config"], name, beam, t.get("length_ratio", "not measured"),
                 f"{g['bleu']:.2f}" if g else "not measured", g["length_ratio"] if g else "not measured",
                 f"{t['bleu'] - g['bleu']:+.2f}" if g else ""]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("select")
    p.add_argument("score_files", nargs="+")
    p = sub.add_parser("write")
    for name in ("run", "recipe", "config", "checkpoint", "data", "tests"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--length-penalty", type=float, default=None, help="the alpha the tests were decoded with")
    p.add_argument("--overrides", default="")
    p = sub.add_parser("row")
    p.add_argument("results", nargs="+")
    p.add_argument("--tests", default=None, help="comma-separated test sets, in column order (default: all)")
    p = sub.add_parser("search")
    p.add_argument("results", nargs="+")
    p.add_argument("--tests", default=None, help="comma-separated test sets (default: all)")
    args = parser.parse_args(argv)
    if args.cmd == "search":
        for path in args.results:
            print("\n".join(search_rows(_read_json(Path(path)), args.tests.split(",") if args.tests else None)))
        return 0
    if args.cmd == "select":
        print(select(args.score_files))
        return 0
    if args.cmd == "row":
        for path in args.results:
            print(row(_read_json(Path(path)), args.tests.split(",") if args.tests else None))
        return 0
    result = write(args)
    for name, t in result["tests"].items():
        greedy = f"  greedy {t['greedy']['bleu']:.2f} (hyp/ref {t['greedy']['length_ratio']})" if "greedy" in t else ""
        print(f"{name}: BLEU {t['bleu']:.2f}  chrF {t['chrf']:.2f}  hyp/ref {t.get('length_ratio')}{greedy}  "
              f"({t['sentences_per_second']} sent/s)  {t['bleu_signature']}", file=sys.stderr)
    print(f"wrote {Path(args.run) / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
