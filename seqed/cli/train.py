"""`seqed train`."""

from __future__ import annotations

import argparse
import os

EPILOG_TRAIN = """examples:
  seqed train recipes/demo/transformer.yaml
  seqed train my.yaml model.encoder.layers=2 train.lr=1e-3 out_dir=runs/small
  seqed train my.yaml out_dir=runs/small --resume     # continue an interrupted run exactly
  torchrun --standalone --nproc_per_node 4 -m seqed train my.yaml   # data-parallel on 4 GPUs (docs/distributed.md)
"""



def register(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train a model. The YAML config (see recipes/ for commented examples) is "
                                   "read into typed sections data/tokenizer/model/train/search; any key can be "
                                   "overridden as key.path=value. The run directory (out_dir) receives the "
                                   "tokenizer, config.yaml, env.json, train.log.jsonl and checkpoints.",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="config overrides, e.g. train.lr=1e-3 model.encoder.layers=2")
    p.add_argument("--resume", action="store_true",
                   help="continue from out_dir/checkpoint_last.pt (model, optimizer, schedule, data position, RNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Train; a run stopped by SIGINT/SIGTERM saves a checkpoint and exits with 128 + the signal number."""
    import shlex

    from seqed.config import load_config
    from seqed.train import Trainer

    cfg = load_config(args.config, args.overrides)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        again = "the same torchrun command, with --resume"
    else:
        again = shlex.join(["seqed", "train", args.config, *args.overrides,
                            *(["--no-progress"] if args.no_progress else []), "--resume"])
    trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress, resume_command=again)
    trainer.run()
    return 128 + trainer.stop_signal if trainer.stop_signal else 0
