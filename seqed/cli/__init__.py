"""The `seqed` command line, one module per command family (see `main.py`)."""

from seqed.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
