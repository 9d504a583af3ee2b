"""uvicorn around the app, with a SIGTERM that drains instead of cutting requests off.

On SIGTERM the service starts draining: new requests get 503, queued and running ones finish; once
nothing is in flight (or `grace_s` has passed) the server stops and `serve` returns normally, so the
process exits 0. A second SIGTERM, or SIGINT, stops at once as uvicorn does.
"""

from __future__ import annotations

import signal
import time
from typing import Optional

import uvicorn

from seqed.serve.service import Service


class DrainingServer(uvicorn.Server):
    """`uvicorn.Server` whose first SIGTERM drains `service` for at most `grace_s` seconds."""

    def __init__(self, config: uvicorn.Config, service: Service, grace_s: float = 30.0):
        super().__init__(config)
        self.service, self.grace_s = service, grace_s
        self._drain_deadline: Optional[float] = None

    def handle_exit(self, sig, frame) -> None:
        if sig == signal.SIGTERM and self._drain_deadline is None:
            self.drain()
            return  # not recorded as a captured signal: uvicorn would raise it again on the way out
        super().handle_exit(sig, frame)

    def drain(self) -> None:
        self.service.draining = True
        self._drain_deadline = time.monotonic() + self.grace_s

    async def on_tick(self, counter: int) -> bool:
        if self.service.failed is not None:
            return True
        if self._drain_deadline is not None and (self.service.idle or time.monotonic() > self._drain_deadline):
            return True
        return await super().on_tick(counter)


def serve(app, service: Service, *, host: str = "127.0.0.1", port: int = 8000, grace_s: float = 30.0,
          log_level: str = "info") -> DrainingServer:
    """Run until stopped (blocking); returns the server (its `service.failed` says whether loading failed)."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace_s,
                            access_log=False, lifespan="off")
    server = DrainingServer(config, service, grace_s)
    server.run()
    return server
