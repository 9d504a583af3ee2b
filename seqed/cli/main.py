"""The `seqed` command line: parser assembly, warnings, and one error path for every command.

Every predictable mistake (bad path, bad config key, broken checkpoint) ends with a one-line
`seqed: error: ...` message and exit status 2, never a traceback. Each command family lives in its own
module of this package and adds its subcommands in `register(sub)`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Optional, Sequence

from seqed.cli import autoencoder, checkpoints, export, plot, prepare, preprocess, serve, train, translate

# The order of `seqed --help`.
COMMAND_MODULES = (train, translate, serve, checkpoints, export, autoencoder, prepare, preprocess, plot)


def build_parser() -> argparse.ArgumentParser:
    """The full `seqed` parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="seqed",
        description="seqed: sequence-to-sequence learning (translation and sequence autoencoders).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `seqed COMMAND --help` for the options of each command.")
    from seqed import __version__

    parser.add_argument("--version", action="version", version=f"seqed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """seqed's own warnings as one `seqed: warning: ...` line; other libraries' as Python shows them."""
    if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
        print(f"seqed: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # seqed/
_python_show_warning = warnings.showwarning


def main(argv: Optional[Sequence[str]] = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from seqed.errors import USER_ERRORS

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
    except USER_ERRORS as err:
        # seqed's own errors (`seqed.errors.SeqedError`: config, checkpoint, training, a full disk, ...),
        # missing or unreadable files, bad values (BrokenPipeError is handled above).
        if os.environ.get("SEQED_DEBUG"):
            raise
        print(f"seqed: error: {err}", file=sys.stderr)
        return 2
