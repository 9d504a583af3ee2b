"""seqed vs its CTranslate2 export: beam-5 decoding speed and BLEU on Multi30k test2016, in one run.

Engines: seqed fp32 and bf16 (`seqed.translator.Translator`, precision "fp32" / "bf16"), and the
checkpoint exported with `seqed.export.export_ctranslate2` run by `seqed.translator_ct2.
CTranslate2Translator` with compute type float32 and int8 (weights quantized at load time). Every
engine translates text to text (SentencePiece, length-sorted batches, search, detokenization) with
the checkpoint's search settings (length penalty, max length) and beam 5, after an untimed warm-up,
on the same threads. Reported per engine: sentences/s, output tokens/s, seconds, sacreBLEU BLEU and
chrF, and the share of sentences whose output equals seqed fp32's.

CTranslate2 ranks with seqed's GNMT length penalty but may stop its beam search earlier when alpha > 0
(see seqed/translator_ct2.py), so fp32 outputs can differ slightly; with --length-penalty 0 they are
identical except at the length limit.

    python benchmarks/export_ctranslate2.py -c runs/multi30k_transformer/checkpoint_best.pt

bf16 runs slowly on a CPU without native bf16 matrix units: `--bf16-limit N` translates only the first
N sentences for that engine (its row says so, and its BLEU is then over those N only).

On a shared machine one timing per engine is noisy: `--rounds N` times every engine N times, in
alternating order (forward, then backward, ...), and reports the median. `--baseline REV` adds the
CTranslate2 engines once more with `seqed/translator_ct2.py` as it was at git revision REV (rows
`ctranslate2_int8@REV`, ...): the before/after of a change to the translator, in the same run.

    python benchmarks/export_ctranslate2.py -c RUN/checkpoint_best.pt --rounds 3 --baseline cc5d83f

Writes benchmarks/results/export_ctranslate2.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import benchlib
from benchlib import BenchError

SECTION = "export_ctranslate2"
ENGINES = ("seqed_fp32", "seqed_bf16", "ctranslate2_fp32", "ctranslate2_int8")
CT2_COMPUTE = {"ctranslate2_fp32": "float32", "ctranslate2_int8": "int8"}


def translator_module_at(revision: str, work: str):
    """`seqed/translator_ct2.py` as it was at git `revision`, imported as a module of its own (it uses
    the current package for everything else)."""
    import importlib.util
    import subprocess

    proc = subprocess.run(["git", "show", f"{revision}:seqed/translator_ct2.py"], cwd=benchlib.REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"--baseline {revision}: git show failed: {proc.stderr.strip()}")
    path = os.path.join(work, "translator_ct2_baseline.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(proc.stdout)
    spec = importlib.util.spec_from_file_location("translator_ct2_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_translator(engine: str, loaded, ct2_dir: str, *, beam: int, length_penalty: float, batch_size: int,
                    threads: int, baseline=None, patience=None):
    """The translator of one engine (`ctranslate2_X@REV`: the `baseline` module's; `seqed_int8`: seqed's
    own int8 engine, used by cpu_decode.py), with the checkpoint's length limits; `patience`: seqed's
    optional patience stop."""
    from seqed.translator import Translator
    from seqed.translator_ct2 import CTranslate2Translator

    engine, at, _ = engine.partition("@")
    if at:
        CTranslate2Translator = baseline.CTranslate2Translator  # noqa: N806

    s = loaded.config.search
    common = dict(beam_size=beam, length_penalty=length_penalty, max_len_a=s.max_len_a, max_len_b=s.max_len_b,
                  min_len=s.min_len, batch_size=batch_size, max_src_len=loaded.config.model.max_pieces,
                  max_len_cap=loaded.config.model.max_output_len)
    if engine.startswith("seqed_"):
        kind = engine.split("_")[1]
        return Translator(loaded.model, loaded.tokenizer, device=loaded.device, patience=patience,
                          precision="fp32" if kind == "int8" else kind,
                          quantization="int8" if kind == "int8" else None, **common)
    return CTranslate2Translator(ct2_dir, compute_type=CT2_COMPUTE[engine], threads=threads, **common)


def timed(translator, sentences: list[str]) -> tuple[float, list, list[str]]:
    """Seconds to translate `sentences` (text to text), the hypotheses and their text."""
    start = time.perf_counter()
    hyps = translator.translate(sentences)
    texts = translator.tokenizer.decode_tgt([h[0].tokens for h in hyps])
    return time.perf_counter() - start, hyps, texts


def summarize(hyps: list, texts: list[str], seconds: list[float], refs: list[str]) -> dict:
    """Rates at the median of the rounds' `seconds`, BLEU and the output `texts` of `hyps`."""
    from seqed.scoring import score

    median = statistics.median(seconds)
    out_tokens = sum(len(h[0].tokens) for h in hyps)
    sc = score(texts, refs)
    return {"seconds": round(median, 3), "round_seconds": [round(x, 3) for x in seconds], "sentences": len(hyps),
            "output_tokens": out_tokens, "sentences_per_s": len(hyps) / median,
            "output_tokens_per_s": out_tokens / median, "bleu": sc.bleu, "chrf": sc.chrf,
            "bleu_signature": sc.bleu_signature, "output": texts}


def table(payload: dict) -> str:
    cfg = payload["config"]
    engines = payload["engines"]
    base = engines.get("seqed_fp32", {}).get("sentences_per_s")
    rows = []
    for name, r in engines.items():
        speedup = f"{r['sentences_per_s'] / base:.2f}x" if base else ""
        same = f"{100 * r['same_as_seqed_fp32']:.1f}%" if r.get("same_as_seqed_fp32") is not None else ""
        rows.append([name, r["sentences"], r["sentences_per_s"], r["output_tokens_per_s"], r["seconds"], speedup,
                     r["bleu"], r["chrf"], same])
    head = (f"Checkpoint `{cfg['checkpoint']}` (step {cfg['step']}), `{cfg['src']}`, beam {cfg['beam']}, "
            f"length penalty {cfg['length_penalty']}, batch {cfg['batch_size']} sentences, {cfg['threads']} threads "
            f"(torch and CTranslate2 {cfg['ctranslate2_version']}), export {cfg['export_seconds']:.1f} s. "
            f"{benchlib.env_line(payload['environment'])}.")
    text = head + "\n\n" + benchlib.md_table(
        ["engine", "sentences", "sent/s", "out tok/s", "seconds", "vs seqed fp32", "BLEU", "chrF",
         "same output as seqed fp32"], rows)
    partial = [n for n, r in engines.items() if r["sentences"] != cfg["sentences"]]
    if partial:
        text += (f"\n\n{', '.join(partial)}: only the first {engines[partial[0]]['sentences']} sentences "
                 f"(--bf16-limit), so its BLEU is not comparable with the other rows; its speed is.")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    benchlib.add_test_set_args(p)
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=None, help="sentences per batch (default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=0, help="first N sentences only, every engine (0 = all)")
    p.add_argument("--bf16-limit", type=int, default=0, help="first N sentences only for seqed_bf16 (0 = as --limit)")
    p.add_argument("--warmup", type=int, default=16, help="untimed sentences translated first (default 16)")
    p.add_argument("--threads", type=int, default=2, help="torch and CTranslate2 threads (default 2)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every engine this many times, alternating the order; report the median (default 1)")
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="also run the CTranslate2 engines with seqed/translator_ct2.py of git revision REV")
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    try:
        from seqed.checkpoint import CheckpointError
        from seqed.export import ExportError, export_ctranslate2, require_ctranslate2
        from seqed.loading import load_model

        if args.threads < 1:
            raise BenchError(f"--threads must be positive (both engines get the same count), got {args.threads}")
        if args.rounds < 1:
            raise BenchError(f"--rounds must be at least 1, got {args.rounds}")
        benchlib.set_threads(args.threads)
        ct2 = require_ctranslate2()
        sentences, refs = benchlib.test_set(args)
        try:
            loaded = load_model(args.checkpoint, device="cpu")
        except CheckpointError as err:
            raise BenchError(str(err)) from None
        s = loaded.config.search
        alpha = s.length_penalty if args.length_penalty is None else args.length_penalty
        batch_size = args.batch_size or s.batch_size
        benchlib.WORK.mkdir(parents=True, exist_ok=True)
        engines, outputs = {}, {}
        with tempfile.TemporaryDirectory(dir=benchlib.WORK, prefix="ct2_") as work:
            ct2_dir = os.path.join(work, "model")
            start = time.perf_counter()
            try:
                export_ctranslate2(args.checkpoint, ct2_dir)
            except ExportError as err:
                raise BenchError(str(err)) from None
            export_seconds = time.perf_counter() - start
            names = list(args.engines)
            baseline = None
            if args.baseline:
                baseline = translator_module_at(args.baseline, work)
                names += [f"{e}@{args.baseline}" for e in args.engines if e.startswith("ctranslate2_")]
            translators, sizes, seconds, hyps = {}, {}, {e: [] for e in names}, {}
            for engine in names:
                n = args.bf16_limit if engine == "seqed_bf16" and args.bf16_limit else len(sentences)
                translators[engine] = make_translator(engine, loaded, ct2_dir, beam=args.beam, length_penalty=alpha,
                                                      batch_size=batch_size, threads=args.threads, baseline=baseline)
                sizes[engine] = n
                if args.warmup:
                    translators[engine].translate_text(sentences[:min(args.warmup, n)])
            for r in range(args.rounds):
                for engine in names if r % 2 == 0 else names[::-1]:
                    n = sizes[engine]
                    print(f"[{SECTION}] round {r + 1}/{args.rounds}: {engine} on {n} sentences ...",
                          file=sys.stderr, flush=True)
                    took, *out = timed(translators[engine], sentences[:n])
                    seconds[engine].append(took)
                    hyps.setdefault(engine, out)  # (hypotheses, texts) of the first round
                    print(f"[{SECTION}]   {n / took:.1f} sent/s", file=sys.stderr, flush=True)
            for engine in names:
                r = summarize(*hyps[engine], seconds[engine], refs[:sizes[engine]])
                outputs[engine] = r.pop("output")
                engines[engine] = r
        if "seqed_fp32" in outputs:
            ref_out = outputs["seqed_fp32"]
            for engine, out in outputs.items():
                engines[engine]["same_as_seqed_fp32"] = sum(a == b for a, b in zip(out, ref_out)) / len(out)
        payload = {"benchmark": SECTION,
                   "config": {"checkpoint": args.checkpoint, "step": loaded.step, "src": args.src, "ref": args.ref,
                              "sentences": len(sentences), "beam": args.beam, "length_penalty": alpha,
                              "max_len_a": s.max_len_a, "max_len_b": s.max_len_b, "batch_size": batch_size,
                              "threads": args.threads, "warmup_sentences": args.warmup, "rounds": args.rounds,
                              "baseline": args.baseline,
                              "bf16_limit": args.bf16_limit, "export_seconds": round(export_seconds, 2),
                              "ctranslate2_version": ct2.__version__,
                              "ctranslate2_compute_types": sorted(ct2.get_supported_compute_types("cpu"))},
                   "environment": benchlib.environment(args.threads), "engines": engines}
        return benchlib.publish(SECTION, SECTION, args.out, payload, table(payload), readme=not args.no_readme)
    except (BenchError, FileNotFoundError, ValueError) as err:
        return benchlib.fail(SECTION, err)


if __name__ == "__main__":
    sys.exit(main())
