"""`seqed preprocess`: tokenize the training corpora once into a binarized directory (`seqed.data.preprocess`)."""

from __future__ import annotations

import argparse
import sys

EPILOG_PREPROCESS = """examples:
  seqed preprocess recipes/wmt14_en_fr/transformer_base.yaml                # prints the directory
  seqed preprocess my.yaml data.binarized=/data/wmt14.bin --workers 16
  torchrun --standalone --nproc_per_node 8 -m seqed train my.yaml          # then: every rank maps it
"""


def register(sub) -> None:
    p = sub.add_parser("preprocess", help="tokenize the training corpora once into memory-mapped files",
                       description="Build the binarized training data of a config (data.binarized: a directory, "
                                   "or auto for one under $SEQED_CACHE): train or load the SentencePiece model, "
                                   "stream and encode the data.train corpora on every core, apply the filters "
                                   "and write flat token ids with a manifest. `seqed train` with the same config "
                                   "and overrides then uses it without encoding anything. An up-to-date "
                                   "directory is left as it is; a stale one is rebuilt.",
                       epilog=EPILOG_PREPROCESS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the training YAML (data.binarized must be set: a path or auto)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="config overrides, the same as for `seqed train`")
    p.add_argument("--workers", type=int, default=0, help="encoding processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess)


def cmd_preprocess(args: argparse.Namespace) -> int:
    """Preprocess and print the directory (errors are ValueError/OSError: main prints them)."""
    from seqed.config import load_config
    from seqed.data.preprocess import preprocess

    cfg = load_config(args.config, args.overrides)
    directory = preprocess(cfg, lambda m: print(f"[seqed] {m}", file=sys.stderr), workers=args.workers,
                           progress=not args.no_progress)
    print(directory)
    return 0
