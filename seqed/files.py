"""Atomic writes and the one UTF-8 line reader.

Every file seqed writes for keeps (checkpoints, the run log's rewrites, prepared corpora, exported
codes, reports) goes through `atomic_open`: a temporary file in the same directory, fsync, then a rename
over the target, so a crash or a full disk leaves the old file or the new one, never half a file, and no
temporary file behind. Streams whose lines count one by one (translation output, the run log's appended
lines) are written in place (`open_stream`, `append_text`). A failed write raises `WriteError`, which
names the path and the system's reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, BinaryIO, Iterator, Optional, Sequence

from seqed.errors import SeqedError

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


# -- writing ----------------------------------------------------------------------------------------
# What torch.save raises (as RuntimeError) when its file writer cannot write every byte, e.g. on a full
# disk: "[enforce fail at inline_container.cc:...] . unexpected pos 64 vs 0" or "... file write failed".
_SHORT_WRITE = ("unexpected pos", "file write failed")


class WriteError(SeqedError, OSError):
    """A file could not be written (full disk, no permission, ...).

    Attributes:
        path: the file that was being written.
        reason: the system's words for why (the errno text).
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: Optional[int] = None):
        super().__init__(code, reason, str(path))
        self.path, self.reason = Path(path), reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


def write_failure(err: BaseException) -> Optional[tuple[str, Optional[int]]]:
    """(reason, errno) when `err` says that writing failed; None for any other error."""
    if isinstance(err, WriteError):
        return err.reason, err.errno
    if isinstance(err, OSError):
        return err.strerror or str(err), err.errno
    if isinstance(err, RuntimeError) and any(s in str(err) for s in _SHORT_WRITE):
        return (f"{os.strerror(errno.ENOSPC)}? (torch.save wrote fewer bytes than it meant to: "
                f"{str(err).splitlines()[0].strip()})", errno.ENOSPC)
    return None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`.

    Args:
        path: the target; its directory is created when missing.
        mode: "wb", or "w" for UTF-8 text.
        fsync: flush the data (and the rename) to the disk before returning.

    Raises:
        WriteError: writing failed (an OSError, or torch.save's short write); the temporary file is
            removed and `path` is untouched. Any other error inside the block also removes the
            temporary file and propagates as it is.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(path, err.strerror or str(err), err.errno) from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failure = write_failure(err)
        # An OSError about another file (an input read inside the block) is not this write's failure.
        if failure is None or (isinstance(err, OSError) and err.filename not in (None, tmp, str(path))):
            raise
        raise WriteError(path, *failure) from None


def write_atomic(path: str | os.PathLike, data: bytes | str, *, fsync: bool = True) -> None:
    """Write `data` (str as UTF-8) to `path` through `atomic_open`: never half a file.

    Raises:
        WriteError: the disk is full or not writable; `path` is untouched.
    """
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def link_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Point `dst` at the same data as `src` (hard link, or a copy), replacing it atomically.

    Raises:
        WriteError: the copy or the rename failed; `dst` is untouched and no temporary file is left.
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(dst, err.strerror or str(err), err.errno) from None


@contextlib.contextmanager
def open_stream(path: str | os.PathLike) -> Iterator[IO]:
    """Open `path` for writing UTF-8 text in place: for a stream whose finished lines count on their own
    (translations: after Ctrl-C the lines written are complete), where `atomic_open` would keep nothing.

    Raises:
        WriteError: writing failed (a full disk, no permission); the lines written before stay.
    """
    try:
        with open(path, "w", encoding="utf-8") as f:
            yield f
    except OSError as err:
        # Not an OSError about another file (an input read inside the block), nor a reader that left.
        if isinstance(err, BrokenPipeError) or err.filename not in (None, str(path)):
            raise
        raise WriteError(path, err.strerror or str(err), err.errno) from None


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append UTF-8 `text` to `path` (a log).

    Raises:
        WriteError: the disk is full or not writable.
    """
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise WriteError(path, err.strerror or str(err), err.errno) from None


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
