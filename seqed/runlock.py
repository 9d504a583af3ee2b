"""The run directory's lock: one process at a time writes checkpoints and logs into a run directory.

`RUN/.lock` holds the owner's pid, host and start time as JSON. It is created complete or not at all
(written aside, then hard-linked to its name, which fails when the name exists), so two starting runs
cannot both take it. A lock whose process has died on this host is taken over; a live owner, or one on
another host (whose pid cannot be checked from here), refuses the newcomer.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

from seqed.errors import TrainingError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """Holds `directory/.lock` between `acquire()` and `release()` (also a context manager).

    Args:
        directory: the run directory (must exist).
        log: where the take-over of a stale lock is reported.
    """

    def __init__(self, directory: str | os.PathLike, log: Callable[[str], None] = print):
        self.path = Path(directory) / LOCK_NAME
        self.log = log
        self.held = False
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def acquire(self) -> "RunLock":
        """Take the lock, or take over a dead process's.

        Raises:
            TrainingError: another live process (or one on another host) holds it; the message names it.
        """
        for _ in range(3):  # a lost race against another newcomer's take-over: look again
            if self._create():
                self.held = True
                return self
            other = self._read()
            if other is None:  # vanished meanwhile, or not JSON (nothing this module writes)
                if self.path.exists():
                    self.log(f"note: {self.path} is not a lock this seqed can read: replacing it")
                    self.path.unlink(missing_ok=True)
                continue
            pid, host, since = other.get("pid"), other.get("host"), other.get("since", "?")
            if host == self.owner["host"] and isinstance(pid, int) and not _alive(pid):
                self.log(f"note: {self.path} was left by process {pid} (started {since}), which is no longer "
                         f"running: taking it over")
                self.path.unlink(missing_ok=True)
                continue
            where = "on this host" if host == self.owner["host"] else f"on host {host}"
            raise TrainingError(
                f"{self.path.parent} is in use: process {pid} {where} has been training into it since {since}. "
                f"Wait for it to finish or stop it, or choose another out_dir (if that process is gone, "
                f"delete {self.path})")
        raise TrainingError(f"cannot take the lock {self.path}: other processes keep replacing it")

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if self.held:
            self.held = False
            if (self._read() or {}).get("pid") == self.owner["pid"]:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.owner['pid']}.tmp")
        tmp.write_text(json.dumps(self.owner) + "\n")
        try:
            os.link(tmp, self.path)  # atomic, and complete: a reader never sees half a lock
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(self.owner) + "\n")
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> Optional[dict]:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None
