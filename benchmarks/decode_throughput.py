"""Decoding throughput of a trained checkpoint on Multi30k test2016, with the BLEU of each output.

For every search (greedy, beam 5), batch size (1, 64) and precision (fp32; bf16: `Translator(precision=
"bf16")`, i.e. `seqed translate --precision bf16`: weights cast once, autocast) the whole
test set goes through `seqed.translator.Translator` as `seqed translate` runs it (text in: SentencePiece
encoding, length-sorted batches, search, detokenization: text out), after an untimed warm-up on the
first `--warmup` sentences. Reported: sentences/s, output tokens/s (pieces, EOS excluded), seconds and
sacreBLEU BLEU/chrF of the output against the reference. Outputs that differ between batch sizes of
the same search and precision by more than 0.1 BLEU are flagged: a speed-up may not change results.

    python benchmarks/decode_throughput.py --checkpoint runs/multi30k_transformer/checkpoint_best.pt

Writes benchmarks/results/decode_throughput.json and the table in benchmarks/README.md (`--out -`
prints the JSON only: compare_opennmt.py uses that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import benchlib
from benchlib import BenchError

SECTION = "decode_throughput"
SEARCHES = {"greedy": 1, "beam5": 5}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(loaded, sentences: list[str], refs: list[str], *, beam: int, batch_size: int, precision: str,
            warmup: int) -> dict:
    """Translate `sentences` once (after a warm-up) and time it; returns rates, BLEU and the output."""
    from seqed.scoring import score
    from seqed.translator import Translator

    s = loaded.config.search
    translator = Translator(loaded.model, loaded.tokenizer, device=loaded.device, beam_size=beam,
                            length_penalty=s.length_penalty, max_len_a=s.max_len_a, max_len_b=s.max_len_b,
                            min_len=s.min_len, batch_size=batch_size,
                            max_src_len=loaded.config.model.max_pieces, precision=precision)
    if warmup:
        translator.translate(sentences[:warmup])
    _sync(loaded.device)
    start = time.perf_counter()
    hyps = translator.translate(sentences)
    texts = loaded.tokenizer.decode_tgt([h[0].tokens for h in hyps])
    _sync(loaded.device)
    seconds = time.perf_counter() - start
    out_tokens = sum(len(h[0].tokens) for h in hyps)
    sc = score(texts, refs)
    return {"seconds": round(seconds, 3), "sentences": len(sentences), "output_tokens": out_tokens,
            "sentences_per_s": len(sentences) / seconds, "output_tokens_per_s": out_tokens / seconds,
            "bleu": sc.bleu, "chrf": sc.chrf, "bleu_signature": sc.bleu_signature, "output": texts}


def flags(runs: list[dict]) -> list[str]:
    """Pairs of runs (same search and precision) whose BLEU differs by more than 0.1."""
    out = []
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["search"], r["precision"]), []).append(r)
    for (search, precision), rs in groups.items():
        lo, hi = min(rs, key=lambda r: r["bleu"]), max(rs, key=lambda r: r["bleu"])
        if hi["bleu"] - lo["bleu"] > 0.1:
            out.append(f"{search} {precision}: BLEU {lo['bleu']} at batch {lo['batch_size']} vs {hi['bleu']} at "
                       f"batch {hi['batch_size']}")
    return out


def table(payload: dict) -> str:
    fp32 = {(r["search"], r["batch_size"]): r["bleu"] for r in payload["runs"] if r["precision"] == "fp32"}
    rows = []
    for r in payload["runs"]:
        ref = fp32.get((r["search"], r["batch_size"]))
        delta = f"{r['bleu'] - ref:+.2f}" if ref is not None and r["precision"] != "fp32" else ""
        rows.append([r["search"], r["batch_size"], r["precision"], r["sentences_per_s"], r["output_tokens_per_s"],
                     r["seconds"], r["bleu"], delta, r["chrf"]])
    cfg = payload["config"]
    head = (f"Checkpoint `{cfg['checkpoint']}` (step {cfg['step']}), {cfg['sentences']} sentences of "
            f"`{cfg['src']}`, device {cfg['device']}, {cfg['threads']} threads. "
            f"{benchlib.env_line(payload['environment'])}.")
    text = head + "\n\n" + benchlib.md_table(
        ["search", "batch", "precision", "sent/s", "out tok/s", "seconds", "BLEU", "vs fp32", "chrF"], rows)
    problems = payload.get("bleu_flags") or []
    text += "\n\n" + ("BLEU differs across batch sizes by more than 0.1: " + "; ".join(problems) if problems
                      else "BLEU is within 0.1 across batch sizes for every search and precision.")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    benchlib.add_test_set_args(p)
    p.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=list(SEARCHES))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all; BLEU is then partial)")
    p.add_argument("--warmup", type=int, default=16, help="untimed sentences translated first (default 16)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2; 0 = torch default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--out", default=str(benchlib.RESULTS / "decode_throughput.json"),
                   help="results JSON; '-' prints it to stdout and leaves the README alone")
    p.add_argument("--save-output", default=None, metavar="DIR", help="write each run's translations here")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the table in benchmarks/README.md")
    args = p.parse_args(argv)
    try:
        from seqed.checkpoint import CheckpointError
        from seqed.loading import load_model

        benchlib.set_threads(args.threads)
        if min(args.batch_sizes) < 1:
            raise BenchError(f"--batch-sizes must be positive, got {args.batch_sizes}")
        sentences, refs = benchlib.test_set(args)
        try:
            loaded = load_model(args.checkpoint, device=args.device)
        except CheckpointError as err:
            raise BenchError(str(err)) from None
        runs = []
        for search in args.searches:
            for precision in args.precisions:
                for bs in args.batch_sizes:
                    print(f"[decode_throughput] {search} batch {bs} {precision} ...", file=sys.stderr, flush=True)
                    r = measure(loaded, sentences, refs, beam=SEARCHES[search], batch_size=bs, precision=precision,
                                warmup=min(args.warmup, len(sentences)))
                    output = r.pop("output")
                    if args.save_output:
                        d = Path(args.save_output)
                        d.mkdir(parents=True, exist_ok=True)
                        (d / f"{search}.bs{bs}.{precision}.txt").write_text("".join(t + "\n" for t in output),
                                                                            encoding="utf-8")
                    runs.append(dict(search=search, beam=SEARCHES[search], batch_size=bs, precision=precision, **r))
                    print(f"[decode_throughput]   {r['sentences_per_s']:.1f} sent/s, {r['output_tokens_per_s']:.0f} "
                          f"tok/s, BLEU {r['bleu']}", file=sys.stderr, flush=True)
        s = loaded.config.search
        payload = {"benchmark": SECTION,
                   "config": {"checkpoint": args.checkpoint, "step": loaded.step, "src": args.src, "ref": args.ref,
                              "sentences": len(sentences), "device": str(loaded.device), "threads": args.threads,
                              "warmup_sentences": args.warmup, "length_penalty": s.length_penalty,
                              "max_len_a": s.max_len_a, "max_len_b": s.max_len_b},
                   "environment": benchlib.environment(args.threads), "runs": runs, "bleu_flags": flags(runs)}
        if args.out == "-":
            print(json.dumps(payload))
            return 0
        return benchlib.publish("decode_throughput", SECTION, args.out, payload, table(payload),
                                readme=not args.no_readme)
    except (BenchError, FileNotFoundError, ValueError) as err:
        return benchlib.fail("decode_throughput", err)


if __name__ == "__main__":
    sys.exit(main())
