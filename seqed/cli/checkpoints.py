"""`seqed average`: commands on checkpoints."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("average", help="average the weights of several checkpoints",
                       description="Average model weights (e.g. the last N checkpoints of a run) into one "
                                   "checkpoint that translates like any other.")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files")
    p.add_argument("--last", type=int, default=0, metavar="N",
                   help="with --run-dir: average the N newest checkpoint_<step>.pt files")
    p.add_argument("--run-dir", default=None, help="run directory for --last")
    p.add_argument("-o", "--output", required=True, help="where to write the averaged checkpoint")
    p.set_defaults(func=cmd_average)


def cmd_average(args: argparse.Namespace) -> int:
    from seqed.checkpoint import average_checkpoints, save_atomic, step_checkpoints

    paths = list(args.checkpoints)
    if args.last:
        if not args.run_dir:
            raise ValueError("--last needs --run-dir")
        found = step_checkpoints(args.run_dir)
        if not found:
            raise FileNotFoundError(f"no checkpoint_<step>.pt files in {args.run_dir}")
        paths += [str(p) for p in found[-args.last:]]
    if not paths:
        raise ValueError("give checkpoint files, or --run-dir DIR --last N")
    save_atomic(average_checkpoints(paths), args.output)
    print(f"averaged {len(paths)} checkpoints into {args.output}", file=sys.stderr)
    return 0
