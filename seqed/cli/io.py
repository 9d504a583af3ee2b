"""What every command reads and writes: the UTF-8-checked line reader, the output stream, chunks."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from typing import Iterator, TextIO

from seqed.files import open_stream, read_utf8_lines


def check_input(path: str) -> None:
    """Fail early (before loading a model) on a missing input; pipes such as <(cmd) or /dev/stdin are fine."""
    if path == "-":
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input {path} is a directory; give a text file, one sentence per line")


def input_lines(path: str) -> Iterator[str]:
    """Lines of a UTF-8 file (or stdin for "-") without "\\n" / "\\r\\n"; bad bytes raise ValueError with file:line."""
    check_input(path)
    return read_utf8_lines(path)


@contextlib.contextmanager
def open_out(path: str) -> Iterator[TextIO]:
    """stdout for "-" (left open), else the file opened for writing in UTF-8 (closed at the end); a failed
    write (a full disk) raises `seqed.files.WriteError` naming the file."""
    if path == "-":
        yield sys.stdout
        return
    with open_stream(path) as f:
        yield f


def chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` lines, read lazily (a terminal gets answers line by line)."""
    while True:
        chunk = list(itertools.islice(lines, size))
        if not chunk:
            return
        yield chunk
