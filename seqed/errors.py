"""User errors: the one base class of every mistake seqed reports as a one-line message.

`SeqedError` is what `seqed/cli/main.py` prints as `seqed: error: ...` (exit status 2). Each concern
derives its own class from it (`ConfigError`, `CheckpointError`, `TrainingError`, `WriteError`, ...),
keeping the builtin it always was (ValueError, RuntimeError) as a second base so older `except` clauses
still catch it.
"""

from __future__ import annotations


class SeqedError(Exception):
    """A predictable mistake or fault; the message says what, where, and what to do."""


class TrainingError(SeqedError, RuntimeError):
    """Training cannot go on; the message says why and what to try."""


# What the command line reports in one line: seqed's own errors, plus the two builtin families that
# user mistakes reach it as from Python and the libraries (files: OSError; argument values: ValueError).
USER_ERRORS = (SeqedError, OSError, ValueError)
