"""Checkpoint ensembles at decoding time: BLEU of each model alone and of their ensemble, in one run.

For two or more checkpoints trained with one tokenizer, translates the test set with each model alone
and with all of them as an ensemble (`seqed.loading.load_ensemble`: the log of the members' mean
probability at every step, as `seqed translate -c A.pt -c B.pt` does), with beam search and greedy
search, through `seqed.translator.Translator` (fp32, text to text, length-sorted batches). Reported per
row: sacreBLEU BLEU and chrF, the hypothesis/reference length ratio, sentences/s.

    python benchmarks/ensemble.py -c runs/a/checkpoint_best.pt -c runs/b/checkpoint_best.pt

Writes benchmarks/results/ensemble.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib
from benchlib import BenchError

SECTION = "ensemble"


def measure(loaded, sentences: list[str], refs: list[str], *, beam: int, length_penalty: float,
            batch_size: int) -> dict:
    """Translate `sentences` with one loaded model (or ensemble); BLEU, chrF, length ratio, speed."""
    from seqed.scoring import score
    from seqed.translator import Translator

    s = loaded.config.search
    translator = Translator(loaded.model, loaded.tokenizer, device=loaded.device, beam_size=beam,
                            length_penalty=length_penalty, max_len_a=s.max_len_a, max_len_b=s.max_len_b,
                            min_len=s.min_len, batch_size=batch_size, max_src_len=loaded.max_pieces,
                            max_len_cap=loaded.max_output_len)
    start = time.perf_counter()
    texts = [nbest[0][0] for nbest in translator.translate_text(sentences)]
    seconds = time.perf_counter() - start
    sc = score(texts, refs)
    return {"bleu": sc.bleu, "chrf": sc.chrf, "length_ratio": sc.length_ratio, "seconds": round(seconds, 2),
            "sentences_per_s": len(sentences) / seconds, "bleu_signature": sc.bleu_signature}


def table(payload: dict) -> str:
    cfg = payload["config"]
    rows = []
    for r in payload["rows"]:
        rows.append([r["models"], r["search"], r["bleu"], r["chrf"], r["length_ratio"], r["sentences_per_s"]])
    members = ", ".join(f"`{m['checkpoint']}` (step {m['step']})" for m in cfg["members"])
    head = (f"Members: {members}. `{cfg['src']}` ({cfg['sentences']} sentences), beam {cfg['beam']} with "
            f"length penalty {cfg['length_penalty']}, greedy without; batch {cfg['batch_size']}, "
            f"{cfg['threads']} threads. {benchlib.env_line(payload['environment'])}.")
    return head + "\n\n" + benchlib.md_table(["models", "search", "BLEU", "chrF", "hyp/ref", "sent/s"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "-c", action="append", required=True,
                   help="a member's checkpoint file or run directory (repeat: two or more)")
    benchlib.add_test_set_args(p)
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="GNMT alpha of the beam rows (default: the first checkpoint's)")
    p.add_argument("--batch-size", type=int, default=None, help="sentences per batch (default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    try:
        from seqed.checkpoint import CheckpointError
        from seqed.loading import load_ensemble, load_model

        if len(args.checkpoint) < 2:
            raise BenchError("give at least two checkpoints (-c A -c B)")
        benchlib.set_threads(args.threads)
        sentences, refs = benchlib.test_set(args)
        try:
            singles = [load_model(c, device="cpu") for c in args.checkpoint]
            ensemble = load_ensemble(args.checkpoint, device="cpu")
        except CheckpointError as err:
            raise BenchError(str(err)) from None
        s = singles[0].config.search
        alpha = s.length_penalty if args.length_penalty is None else args.length_penalty
        batch_size = args.batch_size or s.batch_size
        names = [f"model {i + 1}" for i in range(len(singles))]
        rows = []
        for name, loaded in [*zip(names, singles), (" + ".join(names), ensemble)]:
            for search, beam, lp in (("beam", args.beam, alpha), ("greedy", 1, 0.0)):
                print(f"[{SECTION}] {name}, {search} ...", file=sys.stderr, flush=True)
                r = measure(loaded, sentences, refs, beam=beam, length_penalty=lp, batch_size=batch_size)
                rows.append({"models": name, "search": f"{search} {beam}" if beam > 1 else search, **r})
                print(f"[{SECTION}]   BLEU {r['bleu']}, {r['sentences_per_s']:.1f} sent/s", file=sys.stderr,
                      flush=True)
        payload = {"benchmark": SECTION,
                   "config": {"members": [{"checkpoint": c, "step": m.step} for c, m in zip(args.checkpoint, singles)],
                              "src": args.src, "ref": args.ref, "sentences": len(sentences), "beam": args.beam,
                              "length_penalty": alpha, "batch_size": batch_size, "threads": args.threads},
                   "environment": benchlib.environment(args.threads), "rows": rows}
        return benchlib.publish(SECTION, SECTION, args.out, payload, table(payload), readme=not args.no_readme)
    except (BenchError, FileNotFoundError, ValueError) as err:
        return benchlib.fail(SECTION, err)


if __name__ == "__main__":
    sys.exit(main())
