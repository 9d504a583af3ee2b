"""`seqed export`: a checkpoint as a model directory for another runtime (CTranslate2)."""

from __future__ import annotations

import argparse
import sys

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
