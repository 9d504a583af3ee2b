"""The `seqed` command line: train, translate, score, average (and the autoencoder commands).

Every predictable mistake (bad path, bad config key, broken checkpoint) ends with a one-line
`seqed: error: ...` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import warnings
from typing import Iterator, Optional, Sequence, TextIO

EPILOG_TRAIN = """examples:
  seqed train recipes/demo/transformer.yaml
  seqed train my.yaml model.encoder.layers=2 train.lr=1e-3 out_dir=runs/small
  seqed train my.yaml out_dir=runs/small --resume     # continue an interrupted run exactly
  torchrun --standalone --nproc_per_node 4 -m seqed train my.yaml   # data-parallel on 4 GPUs (docs/distributed.md)
"""


def _add_search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=None, metavar="K",
                   help="beam size; 1 = greedy (default: the checkpoint's search.beam, usually 5)")
    g.add_argument("--nbest", type=int, default=1, metavar="N", help="hypotheses to print per input (<= beam)")
    g.add_argument("--length-penalty", type=float, default=None, metavar="ALPHA",
                   help="GNMT length penalty alpha; 0 = plain log-probability (default: checkpoint's)")
    g.add_argument("--max-len-a", type=float, default=None, help="max output length = a * |src| + b: the a")
    g.add_argument("--max-len-b", type=int, default=None, help="max output length = a * |src| + b: the b")
    g.add_argument("--min-len", type=int, default=None, help="minimum output length in pieces")
    g.add_argument("--batch-size", type=int, default=None, metavar="N", help="sentences per batch (default 64)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default), or bf16/fp16: weights cast once, autocast for the rest. bf16 is "
                        "~1.6x faster on CPUs with AVX512-BF16 or AMX and on GPUs; on Multi30k test2016 it "
                        "changed BLEU by -0.08 (Transformer) and -0.15 (attention RNN) (benchmarks/README.md); "
                        "fp16 is for GPUs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqed",
        description="seqed: sequence-to-sequence learning (translation and sequence autoencoders).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `seqed COMMAND --help` for the options of each command.")
    from seqed import __version__

    parser.add_argument("--version", action="version", version=f"seqed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser("translate", help="translate text with a checkpoint (stdin to stdout by default)",
                       description="Translate one sentence per line. Reads stdin and writes stdout unless -i/-o "
                                   "are given; output line i is the translation of input line i (empty lines "
                                   "stay empty). With --nbest N > 1 each input gives N lines "
                                   "'INDEX<TAB>SCORE<TAB>TEXT'.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file (or a run directory: best, else last)")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--scores", action="store_true", help="print 'SCORE<TAB>TEXT' per line")
    p.add_argument("--buffer-size", type=int, default=None,
                   help="lines read before translating (default: 1 on a terminal, else 2000)")
    _add_search_args(p)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("score", help="BLEU and chrF with sacreBLEU (signatures printed)",
                       description="Score detokenized hypotheses against one reference file with sacreBLEU.")
    p.add_argument("--ref", "-r", required=True, help="reference file, one segment per line")
    p.add_argument("--hyp", default="-", help="hypothesis file (default: stdin)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("average", help="average the weights of several checkpoints",
                       description="Average model weights (e.g. the last N checkpoints of a run) into one "
                                   "checkpoint that translates like any other.")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files")
    p.add_argument("--last", type=int, default=0, metavar="N",
                   help="with --run-dir: average the N newest checkpoint_<step>.pt files")
    p.add_argument("--run-dir", default=None, help="run directory for --last")
    p.add_argument("-o", "--output", required=True, help="where to write the averaged checkpoint")
    p.set_defaults(func=cmd_average)
    return parser


# ---------------------------------------------------------------------------------------------


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


def _check_input(path: str) -> None:
    """Fail early (before loading a model) on a missing input; pipes such as <(cmd) or /dev/stdin are fine."""
    if path == "-":
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input {path} is a directory; give a text file, one sentence per line")


def _input_lines(path: str) -> Iterator[str]:
    """Lines of a UTF-8 file (or stdin for "-") without "\\n" / "\\r\\n"; bad bytes raise ValueError with file:line."""
    _check_input(path)
    handle = sys.stdin.buffer if path == "-" else open(path, "rb")
    name = "<stdin>" if path == "-" else path
    try:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{name}:{number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                                 f"{err.start + 1}); convert the input first, e.g. with iconv -f latin1 -t utf-8"
                                 ) from None
            yield line.rstrip("\r\n")
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _open_out(path: str) -> TextIO:
    if path == "-":
        return sys.stdout
    return open(path, "w", encoding="utf-8")


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    while True:
        chunk = list(itertools.islice(lines, size))
        if not chunk:
            return
        yield chunk


def load_translator(args: argparse.Namespace, progress: bool):
    from seqed.inference import load_model
    from seqed.translator import Translator

    loaded = load_model(args.checkpoint, device=args.device)
    s = loaded.config.search
    beam = args.beam if args.beam is not None else s.beam
    if beam <= 0:
        raise ValueError(f"--beam must be positive, got {beam}")
    if args.nbest <= 0 or args.nbest > beam:
        raise ValueError(f"--nbest must be between 1 and the beam size ({beam}), got {args.nbest}")
    return Translator(loaded.model, loaded.tokenizer, device=loaded.device, beam_size=beam, nbest=args.nbest,
                      length_penalty=s.length_penalty if args.length_penalty is None else args.length_penalty,
                      max_len_a=s.max_len_a if args.max_len_a is None else args.max_len_a,
                      max_len_b=s.max_len_b if args.max_len_b is None else args.max_len_b,
                      min_len=s.min_len if args.min_len is None else args.min_len,
                      batch_size=args.batch_size or s.batch_size,
                      max_src_len=loaded.config.model.max_pieces, progress=progress,
                      max_len_cap=loaded.config.model.max_output_len,
                      precision=args.precision)


def cmd_translate(args: argparse.Namespace) -> int:
    """Output line i is the translation of input line i: empty lines stay empty, over-long ones are
    truncated with a warning, none is dropped."""
    _check_input(args.input)
    if args.buffer_size is not None and args.buffer_size < 1:
        raise ValueError(f"--buffer-size must be positive, got {args.buffer_size}")
    interactive = args.input == "-" and sys.stdin.isatty()
    size = args.buffer_size or (1 if interactive else 2000)
    translator = load_translator(args, progress=args.input != "-" and args.output != "-")
    out = _open_out(args.output)
    try:
        for chunk in _chunks(_input_lines(args.input), size):
            results = translator.translate_text(chunk)
            base = 0
            for i, nbest in enumerate(results):
                for text, sc in nbest[: args.nbest]:
                    if args.nbest > 1:
                        out.write(f"{base + i}\t{sc:.4f}\t{text}\n")
                    elif args.scores:
                        out.write(f"{sc:.4f}\t{text}\n")
                    else:
                        out.write(text + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from seqed.data.corpus import read_lines
    from seqed.scoring import score

    refs = read_lines(args.ref)
    if args.hyp == "-":
        hyps = [line.rstrip("\r\n") for line in sys.stdin]
    else:
        hyps = read_lines(args.hyp)
    if len(hyps) != len(refs):
        raise ValueError(f"{args.hyp}: {len(hyps)} lines but {args.ref}: {len(refs)} lines; they must match")
    result = score(hyps, refs)
    print(json.dumps(result.to_dict(), indent=2) if args.json else str(result))
    return 0


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


# ---------------------------------------------------------------------------------------------


def _register_extra(sub_parsers) -> None:
    """Commands defined in other modules (autoencoders, data preparation, plots)."""
    import importlib

    for module in ("seqed.cli_extra", "seqed.cli_data"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.register(sub_parsers)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """seqed's own warnings as one `seqed: warning: ...` line; other libraries' as Python shows them."""
    if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
        print(f"seqed: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_python_show_warning = warnings.showwarning


def main(argv: Optional[Sequence[str]] = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    _register_extra(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from seqed.checkpoint import CheckpointError
    from seqed.config import ConfigError

    try:
        return args.func(args)
    except BrokenPipeError:
        # `seqed translate ... | head`: the reader left; exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("seqed: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (OSError, ConfigError, CheckpointError, ValueError) as err:
        # OSError: missing or unreadable files, a full disk, permissions (BrokenPipeError is handled above).
        if os.environ.get("SEQED_DEBUG"):
            raise
        print(f"seqed: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from seqed.runtime import TrainingError

        if isinstance(err, TrainingError) and not os.environ.get("SEQED_DEBUG"):
            print(f"seqed: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
