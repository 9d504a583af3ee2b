"""What a batch's make-up costs seqed's decoder: the same sentences in batches of different sizes and
orders, in one process (issue 26: why a server at 32 single-sentence clients stays below offline).

Every sentence of the test file is translated (beam 5, the checkpoint's search settings, fp32 unless
`--precision`) in batches of N sentences taken either in length order (what `seqed translate` does
with a whole file) or in the file's order (what a server's call holds: whatever arrived together).
Exact search does the same work per sentence in any batch, so the row-steps (beam rows x decoder
steps, summed) are equal across compositions; what changes is the number of decoder steps, each with
a cost that does not shrink with its rows. Reported per composition: sentences/s (best of `--rounds`),
decoder steps, row-steps; and a least-squares fit ``seconds = fixed + per_step * steps`` over all
compositions, so the cost of one more step (``per_step``) and of the rows themselves (``fixed``,
the same for all) are seen apart.

    python benchmarks/batch_composition.py -c runs/multi30k_transformer --threads 2

Writes benchmarks/results/batch_composition.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import benchlib
from benchlib import BenchError
from cpu_decode import counted_steps
from cpu_decode import work as count_work

SECTION = "batch_composition"
COMPOSITIONS = ("sorted:64", "sorted:32", "sorted:8", "arrival:64", "arrival:32", "arrival:8")


def parse_composition(text: str) -> tuple[str, int]:
    order, _, size = text.partition(":")
    if order not in ("sorted", "arrival") or not size.isdigit() or int(size) < 1:
        raise BenchError(f"composition {text!r}: want ORDER:SIZE, ORDER sorted or arrival, SIZE >= 1")
    return order, int(size)


def batches(ids: list[list[int]], order: str, size: int, seed: int) -> list[list[list[int]]]:
    """`ids` in batches of `size`: longest first ("sorted"), or shuffled once with `seed` ("arrival")."""
    idx = list(range(len(ids)))
    if order == "sorted":
        idx.sort(key=lambda i: -len(ids[i]))
    else:
        random.Random(seed).shuffle(idx)
    return [[ids[i] for i in idx[j:j + size]] for j in range(0, len(idx), size)]


def fit(points: list[tuple[int, float]]) -> dict:
    """Least squares ``seconds = fixed + per_step * steps`` over (steps, seconds) points."""
    n = len(points)
    mx = sum(s for s, _ in points) / n
    my = sum(t for _, t in points) / n
    var = sum((s - mx) ** 2 for s, _ in points)
    slope = sum((s - mx) * (t - my) for s, t in points) / var if var else 0.0
    return {"per_step_ms": round(1000 * slope, 3), "fixed_s": round(my - slope * mx, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-c", required=True, help="checkpoint file or run directory")
    benchlib.add_test_set_args(p)
    p.add_argument("--compositions", nargs="+", default=list(COMPOSITIONS),
                   help="ORDER:SIZE, ORDER sorted (longest first) or arrival (file order shuffled once)")
    p.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or auto")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per composition; best counts")
    p.add_argument("--limit", type=int, default=0, help="first N sentences (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the arrival order")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    try:
        compositions = [parse_composition(c) for c in args.compositions]
        sentences, _ = benchlib.test_set(args)
    except BenchError as err:
        return benchlib.fail("batch_composition", err)
    benchlib.set_threads(args.threads)
    from seqed import load_translator
    from seqed.checkpoint import CheckpointError

    try:
        translator = load_translator(args.model, beam=args.beam, precision=args.precision)
    except (OSError, ValueError, CheckpointError) as err:
        return benchlib.fail("batch_composition", err)
    env = benchlib.environment(args.threads)
    ids = translator.tokenizer.encode_src(sentences)
    translator.translate_ids(ids[:16], translator.settings)  # warm-up
    rows = []
    for order, size in compositions:
        work = batches(ids, order, size, args.seed)
        best = None
        for _ in range(args.rounds):
            with counted_steps(translator) as steps:  # every round does the same search work
                start = time.perf_counter()
                for batch in work:
                    translator.translate_ids(batch, translator.settings.replace(batch_size=size))
                seconds = time.perf_counter() - start
            best = seconds if best is None else min(best, seconds)
        search = count_work(steps)
        rows.append({"order": order, "batch": size, "seconds": round(best, 3),
                     "sentences_per_s": round(len(ids) / best, 1), "decoder_steps": search["decoder_steps"],
                     "row_steps": search["row_steps"]})
        print(f"[batch_composition] {order}:{size}: {rows[-1]['sentences_per_s']} sent/s, "
              f"{search['decoder_steps']} steps, {search['row_steps']} row-steps", file=sys.stderr, flush=True)
    model_fit = fit([(r["decoder_steps"], r["seconds"]) for r in rows])
    payload = {"model": args.model, "src": args.src, "sentences": len(ids), "beam": args.beam,
               "precision": translator.precision, "rounds": args.rounds, "seed": args.seed,
               "compositions": rows, "fit": model_fit, "environment": env}
    table = benchlib.md_table(
        ["batch order", "sentences per batch", "sentences/s", "decoder steps", "row-steps"],
        [[r["order"], r["batch"], r["sentences_per_s"], r["decoder_steps"], r["row_steps"]] for r in rows])
    table += (f"\n\nFit over the rows: seconds = {model_fit['fixed_s']} + {model_fit['per_step_ms']} ms x decoder "
              f"steps. {len(ids)} sentences, beam {args.beam}, {translator.precision}; {benchlib.env_line(env)}.")
    return benchlib.publish("batch_composition", SECTION, args.out, payload, table, readme=not args.no_readme)


if __name__ == "__main__":
    sys.exit(main())
