"""`seqed export`: a checkpoint as a model directory for another runtime (CTranslate2), and the
CTranslate2 translator behind `seqed translate --engine ctranslate2`."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Iterator

# CTranslate2 compute types: what `--quantization` accepts (the device decides which of them run).
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")

EPILOG_EXPORT = """examples:
  seqed export --format ctranslate2 -c runs/multi30k_transformer -o runs/multi30k_ct2
  seqed translate --engine ctranslate2 -c runs/multi30k_ct2 --quantization int8 -i test.en -o test.fr
"""


def register(sub) -> None:
    p = sub.add_parser("export", help="convert a Transformer checkpoint for CTranslate2",
                       description="Write a CTranslate2 model directory (model.bin, config.json, vocabularies, "
                                   "the SentencePiece models, seqed_export.json) that `seqed translate --engine "
                                   "ctranslate2` and CTranslate2 itself run. Only Transformer encoder-decoders "
                                   "with the memory bottleneck can be exported (no RNNs, no fixed-code or "
                                   "variational bottleneck, no encoder summary token). Needs "
                                   "pip install 'seqed[ctranslate2]'.",
                       epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=["ctranslate2"], help="target runtime")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file (or a run directory: best, else last)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--quantization", default=None, choices=QUANTIZATIONS,
                   help="store the weights quantized (default float32, from which `seqed translate "
                        "--quantization` can still quantize at load time)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from seqed.export import export_ctranslate2

    out = export_ctranslate2(args.checkpoint, args.output, quantization=args.quantization, force=args.force)
    print(f"exported {args.checkpoint} to {out} (CTranslate2)", file=sys.stderr)
    return 0


@contextlib.contextmanager
def ctranslate2_translator(args: argparse.Namespace) -> Iterator:
    """The `CTranslate2Translator` for `seqed translate --engine ctranslate2`.

    `--checkpoint` is an exported directory, or a checkpoint exported on the fly into a temporary
    directory (removed afterwards). Search settings default to the checkpoint's, as for --engine seqed.
    """
    from seqed.export import EXPORT_META, export_ctranslate2, read_export_meta
    from seqed.translator_ct2 import CTranslate2Translator

    if args.precision not in ("auto", "fp32"):
        raise ValueError(f"--precision {args.precision} is for --engine seqed; with --engine ctranslate2 use "
                         f"--quantization (e.g. bfloat16, int8)")
    for option, given in (("--sampling", args.sampling), ("--temperature", args.temperature),
                          ("--seed", args.seed), ("--print-alignment", args.print_alignment or None)):
        if given is not None:
            raise ValueError(f"{option} is for --engine seqed; --engine ctranslate2 runs greedy or beam search "
                             f"without alignments")
    if len(args.checkpoint) != 1:
        raise ValueError(f"--engine ctranslate2 runs one model, got {len(args.checkpoint)} -c options (ensembles "
                         f"are for --engine seqed)")
    checkpoint = args.checkpoint[0]
    with contextlib.ExitStack() as stack:
        model_dir = Path(checkpoint)
        if not (model_dir / EXPORT_META).is_file():
            model_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seqed-ct2-"))) / "model"
            print(f"seqed: exporting {checkpoint} to CTranslate2 for this run (`seqed export` keeps it)",
                  file=sys.stderr)
            export_ctranslate2(checkpoint, model_dir)
        s = read_export_meta(model_dir)["search"]
        beam = args.beam if args.beam is not None else s["beam"]
        if beam <= 0:
            raise ValueError(f"--beam must be positive, got {beam}")
        if args.nbest <= 0 or args.nbest > beam:
            raise ValueError(f"--nbest must be between 1 and the beam size ({beam}), got {args.nbest}")
        yield CTranslate2Translator(
            model_dir, device=args.device, compute_type=args.quantization or "default", beam_size=beam,
            nbest=args.nbest,
            length_penalty=s["length_penalty"] if args.length_penalty is None else args.length_penalty,
            max_len_a=s["max_len_a"] if args.max_len_a is None else args.max_len_a,
            max_len_b=s["max_len_b"] if args.max_len_b is None else args.max_len_b,
            min_len=s["min_len"] if args.min_len is None else args.min_len,
            batch_size=args.batch_size or s["batch_size"])
