"""Live servers for the serve tests (not a test module): the app on a free port in a thread."""

import socket
import threading
import time

import uvicorn

from seqed.cli.main import build_parser
from seqed.serve.engine import load_engine
from seqed.serve.server import DrainingServer


def serve_args(*argv):
    """`seqed serve` options as the CLI parses them (the engines' search settings)."""
    return build_parser().parse_args(["serve", "-c", "unused", *map(str, argv)])


def engine(name, path, kind="seqed", *argv):
    return load_engine(name, str(path), kind, serve_args(*argv))


class LiveServer:
    """`app` served by a `DrainingServer` on 127.0.0.1 at a free port, in a daemon thread."""

    def __init__(self, app, service, grace_s=10.0):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = DrainingServer(config, service, grace_s)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
