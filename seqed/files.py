"""Atomic writes and the one UTF-8 line reader."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

BOM = b"\xef\xbb\xbf"


def decode_line(raw: bytes, name: str, number: int) -> str:
    """One line of a UTF-8 file as text, without its "\\n" or "\\r\\n" (and without a BOM on line 1).

    Args:
        raw: the line's bytes, as read from the file.
        name: the file, for the error message.
        number: the line's 1-based number.

    Raises:
        ValueError: `name:number: not valid UTF-8 (byte .. at column ..)` and how to convert the file.
    """
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if number == 1 and raw.startswith(BOM):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}:{number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                         f"convert the file first, e.g. `iconv -f latin1 -t utf-8 {name} > {Path(name).name}.utf8`"
                         ) from None


def decode_lines(raws: Sequence[bytes], name: str, first: int) -> list[str]:
    """`decode_line` over consecutive lines, the first of which has number `first`."""
    return [decode_line(raw, name, first + i) for i, raw in enumerate(raws)]


def open_lines(path) -> BinaryIO:
    """A file opened for reading bytes line by line; FileNotFoundError "no such file: PATH" when missing."""
    path = os.fspath(path)
    if not os.path.exists(path) or os.path.isdir(path):  # pipes such as <(cmd) are fine
        raise FileNotFoundError(f"no such file: {path}" + (" (it is a directory)" if os.path.isdir(path) else ""))
    return open(path, "rb")


def read_utf8_lines(path) -> Iterator[str]:
    """The lines of a UTF-8 file ("-": stdin), read lazily, each without "\\n" / "\\r\\n".

    Only "\\n" separates lines (not the other Unicode line breaks, which would break the alignment of
    parallel files). A bad byte raises ValueError naming the file, the line and the column.
    """
    stdin = os.fspath(path) == "-"
    handle = sys.stdin.buffer if stdin else open_lines(path)
    name = "<stdin>" if stdin else os.fspath(path)
    try:
        for number, raw in enumerate(handle, 1):
            yield decode_line(raw, name, number)
    finally:
        if not stdin:
            handle.close()
