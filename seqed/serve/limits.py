"""Request limits, API keys, and `RequestError`: the one error every route answers with.

Every limit is checked before any work is queued, and every refusal is a `RequestError` that the app
turns into JSON ``{"error": {"code", "message"}}`` with its HTTP status.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence


class RequestError(Exception):
    """A request the server refuses or cannot answer: HTTP `status`, a stable `code`, a message for people.

    Args:
        status: HTTP status code.
        code: short machine-readable name, e.g. "too_many_texts".
        message: what was wrong and what to do.
        headers: extra response headers (e.g. Retry-After).
    """

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def invalid(message: str) -> RequestError:
    """422: a well-formed request asking for something the server does not do."""
    return RequestError(422, "invalid_request", message)


@dataclass
class Limits:
    """What one request may ask for (each a `seqed serve` flag).

    Attributes:
        max_body_bytes: largest request body (413 above).
        max_texts: texts per request (422 above).
        max_sentences: non-blank lines per request, over all its texts (422 above): each is one sentence
            for the model, so this bounds the work one request can ask for.
        max_pieces: source pieces per sentence (a line of a text), counted with the model's own
            tokenizer; a model whose positions cover fewer lowers it (422 above, never truncation).
        max_beam: largest beam a request may ask for (422 above); nbest <= beam.
        max_queue: requests waiting per model (429 with Retry-After above).
        timeout_s: per-request deadline, queueing included (504 after).
    """

    max_body_bytes: int = 1 << 20
    max_texts: int = 64
    max_sentences: int = 512
    max_pieces: int = 256
    max_beam: int = 16
    max_queue: int = 256
    timeout_s: float = 30.0

    def __post_init__(self):
        for name in ("max_body_bytes", "max_texts", "max_sentences", "max_pieces", "max_beam", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout_s}")

    def check_texts(self, texts: Sequence[str]) -> None:
        if not texts:
            raise invalid("q holds no text; give a string or a list of strings")
        if len(texts) > self.max_texts:
            raise RequestError(422, "too_many_texts", f"{len(texts)} texts in one request; the limit is "
                                                      f"{self.max_texts} (--max-texts): split the request")

    def check_sentences(self, n: int) -> None:
        if n > self.max_sentences:
            raise RequestError(422, "too_many_sentences", f"{n} non-empty lines in one request; the limit is "
                                                          f"{self.max_sentences} (--max-sentences): split the request")

    def check_search(self, beam: int, nbest: int) -> None:
        if not 1 <= beam <= self.max_beam:
            raise invalid(f"beam must be between 1 and {self.max_beam} (--max-beam), got {beam}")
        if not 1 <= nbest <= beam:
            raise invalid(f"nbest must be between 1 and the beam size ({beam}), got {nbest}; raise beam for "
                          f"more alternatives")

    def check_pieces(self, counts: Sequence[Sequence[int]], max_pieces: int) -> None:
        """counts[t][l]: source pieces of line l of text t; `max_pieces` the model's limit (<= self's)."""
        for t, lines in enumerate(counts):
            for line, n in enumerate(lines):
                if n > max_pieces:
                    where = f"text {t}" + (f", line {line}" if len(lines) > 1 else "")
                    raise RequestError(422, "too_many_pieces",
                                       f"{where} has {n} source pieces; the limit is {max_pieces} per sentence "
                                       f"(--max-pieces, and what the model's positions cover): shorten or split it")


@dataclass
class ApiKeys:
    """The accepted API keys (none: every request is let in, and a given key is ignored).

    Keys are compared by their SHA-256 digests with `hmac.compare_digest`, against every key, so the
    time taken says nothing about how much of a key was right.
    """

    keys: Sequence[str] = ()
    _digests: list = field(init=False, repr=False)

    def __post_init__(self):
        self._digests = [hashlib.sha256(k.encode()).digest() for k in self.keys if k]

    @classmethod
    def from_sources(cls, given: Sequence[str] = (), environ: Optional[dict] = None) -> "ApiKeys":
        """--api-key values plus the comma-separated SEQED_API_KEYS variable."""
        env = (os.environ if environ is None else environ).get("SEQED_API_KEYS", "")
        return cls([k.strip() for k in [*given, *env.split(",")] if k.strip()])

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, key: Optional[str]) -> None:
        """Raises 401 when keys are configured and none was given, 403 when the given one is wrong."""
        if not self.enabled:
            return
        if not key:
            raise RequestError(401, "missing_api_key", "this server needs an API key: send the header "
                                                       "'Authorization: Bearer KEY' (or api_key=KEY)")
        digest = hashlib.sha256(key.encode()).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        if not found:
            raise RequestError(403, "invalid_api_key", "the API key is not valid")
