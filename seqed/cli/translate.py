"""`seqed translate` and `seqed score`."""

from __future__ import annotations

import argparse
import sys

from seqed.cli.export import QUANTIZATIONS
from seqed.cli.io import check_input, chunks, input_lines, open_out
from seqed.alignment import pharaoh
from seqed.cli.options import add_decoding_args, add_search_args, load_translator


def register(sub) -> None:
    p = sub.add_parser("translate", help="translate text with a checkpoint (stdin to stdout by default)",
                       description="Translate one sentence per line. Reads stdin and writes stdout unless -i/-o "
                                   "are given; output line i is the translation of input line i (empty lines "
                                   "stay empty). With --nbest N > 1 each input gives N lines "
                                   "'INDEX<TAB>SCORE<TAB>TEXT' (INDEX counts input lines from 0).")
    p.add_argument("--checkpoint", "-c", required=True, action="append",
                   help="checkpoint file (or a run directory: best, else last); repeat it (-c A -c B) to decode "
                        "with an ensemble of models trained with the same tokenizer (log of their mean "
                        "probability at every step; search defaults from the first); with --engine ctranslate2 "
                        "one checkpoint or `seqed export` directory")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--scores", action="store_true", help="print 'SCORE<TAB>TEXT' per line")
    p.add_argument("--buffer-size", type=int, default=None,
                   help="lines read before translating (default: 1 on a terminal, else 2000)")
    add_search_args(p)
    add_decoding_args(p)
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="seqed", choices=["seqed", "ctranslate2"],
                   help="seqed (default): this package's search in PyTorch; ctranslate2: CTranslate2's C++ "
                        "search on a `seqed export` directory (or on a checkpoint, exported for this run). "
                        "Greedy and length-penalty-free beam outputs equal seqed's; with a length penalty "
                        "they may differ slightly (seqed/translator_ct2.py). Needs pip install "
                        "'seqed[ctranslate2]'")
    g.add_argument("--quantization", default=None, choices=QUANTIZATIONS, metavar="TYPE",
                   help="--engine ctranslate2: compute type, one of " + ", ".join(QUANTIZATIONS) +
                        " (default: as exported, float32); the device must support it. seqed's engine: int8 "
                        "(CPU: Linear layers with int8 weights, activations quantized per batch; "
                        "benchmarks/README.md compares both engines)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("score", help="BLEU and chrF with sacreBLEU (signatures printed)",
                       description="Score detokenized hypotheses against one reference file with sacreBLEU.")
    p.add_argument("--ref", "-r", required=True, help="reference file, one segment per line")
    p.add_argument("--hyp", default="-", help="hypothesis file (default: stdin)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=cmd_score)


def cmd_translate(args: argparse.Namespace) -> int:
    """Output line i is the translation of input line i: empty lines stay empty, over-long ones are
    truncated with a warning, none is dropped."""
    check_input(args.input)
    if args.buffer_size is not None and args.buffer_size < 1:
        raise ValueError(f"--buffer-size must be positive, got {args.buffer_size}")
    interactive = args.input == "-" and sys.stdin.isatty()
    size = args.buffer_size or (1 if interactive else 2000)
    translator = load_translator(args, progress=args.input != "-" and args.output != "-")
    return _translate_lines(args, translator, size)


def _translate_lines(args: argparse.Namespace, translator, size: int) -> int:
    with open_out(args.output) as out:
        base = 0
        for chunk in chunks(input_lines(args.input), size):
            results = translator.translate(chunk)
            for i, (texts, hyps) in enumerate(zip(translator.detokenize(results), results)):
                for text, hyp in zip(texts[: args.nbest], hyps):
                    if args.print_alignment:
                        text = f"{text} ||| {pharaoh(hyp.alignment)}"
                    if args.nbest > 1:
                        out.write(f"{base + i}\t{hyp.score:.4f}\t{text}\n")
                    elif args.scores:
                        out.write(f"{hyp.score:.4f}\t{text}\n")
                    else:
                        out.write(text + "\n")
            base += len(chunk)
            out.flush()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from seqed.scoring import score

    check_input(args.ref)
    refs = list(input_lines(args.ref))
    hyps = list(input_lines(args.hyp))
    if len(hyps) != len(refs):
        raise ValueError(f"{args.hyp}: {len(hyps)} lines but {args.ref}: {len(refs)} lines; they must match")
    result = score(hyps, refs)
    print(json.dumps(result.to_dict(), indent=2) if args.json else str(result))
    return 0
