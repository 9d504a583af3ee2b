"""What every command reads and writes: the UTF-8-checked line reader, the output stream, chunks."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from typing import Iterator, TextIO


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


@contextlib.contextmanager
def open_out(path: str) -> Iterator[TextIO]:
    """stdout for "-" (left open), else the file opened for writing in UTF-8 (closed at the end)."""
    if path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as f:
        yield f


def chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` lines, read lazily (a terminal gets answers line by line)."""
    while True:
        chunk = list(itertools.islice(lines, size))
        if not chunk:
            return
        yield chunk
