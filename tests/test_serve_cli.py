"""`seqed serve` as a command: its refusals, a real process that drains and exits 0 on SIGTERM, and the
serving benchmark run tiny."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from seqed.cli.main import main  # noqa: E402
from tiny_runs import child_env, seqed_argv  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_help_names_every_limit(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--engine", "--quantization", "--precision", "--device", "--threads", "--beam",
                 "--length-penalty", "--max-len-a", "--max-batch-tokens", "--max-wait-ms", "--idle-ms", "--max-body-bytes",
                 "--max-texts", "--max-sentences", "--max-pieces", "--max-beam", "--max-queue", "--timeout", "--grace",
                 "--api-key",
                 "--cors-origin"):
        assert flag in out


def test_user_errors_are_one_line(reversal_model, tmp_path, monkeypatch, capsys):
    run, _, _ = reversal_model
    assert main(["serve", "-c", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"seqed: error: model not found: {tmp_path / 'missing'}"
    assert main(["serve", "-c", f"a={run}", "-c", f"a={run}"]) == 2
    assert "two models are named 'a'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    assert main(["serve", "-c", str(run)]) == 2
    assert capsys.readouterr().err.strip() == ("seqed: error: seqed serve needs FastAPI and uvicorn: "
                                               "pip install 'seqed[serve]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            r = httpx.get(url + "/ready", timeout=2)
            if r.status_code == 200:
                return
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready")


@pytest.mark.slow
def test_process_serves_then_exits_0_on_sigterm(reversal_model, tmp_path):
    run, _, sources = reversal_model
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(seqed_argv("serve", "-c", f"rev={run}", "--port", port, "--threads", "1", "--grace", "20"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        wait_ready(url, proc)
        r = httpx.post(url + "/v1/translate", json={"q": sources[:3]}, timeout=30)
        assert r.status_code == 200 and len(r.json()["translations"]) == 3
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert proc.wait(30) == 0
        assert time.monotonic() - start < 20
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert "seqed: ready: rev on" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_broken_checkpoint_stops_the_server_with_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run(seqed_argv("serve", "-c", bad, "--port", free_port()), capture_output=True, text=True,
                          env=child_env(), timeout=120)
    assert proc.returncode == 2
    assert f"seqed: error: {bad}: " in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_serve_benchmark_runs_tiny(reversal_model, tmp_path):
    run, _, sources = reversal_model
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("\n".join(sources[:6]) + "\n")
    ref.write_text("\n".join(" ".join(reversed(s.split())) for s in sources[:6]) + "\n")
    out = tmp_path / "serve.json"
    proc = subprocess.run([sys.executable, str(BENCH / "serve.py"), "-c", str(run), "--src", str(src), "--ref",
                           str(ref), "--quick", "--clients", "1,3", "--soak", "60", "--invariance-limit", "3",
                           "--threads", "1",
                           "--out",
                           str(out), "--no-readme"], capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    for mode in ("batching", "no_batching"):
        rows = result["server"][mode]
        assert [r["clients"] for r in rows] == [1, 3]
        assert all(r["errors"] == 0 and r["same_as_offline"] == r["sentences"] == 6 for r in rows)
        assert result["server"][f"{mode}_exit_status"] == 0
    assert result["offline"]["in_process"]["sentences_per_s"] > 0 and result["offline"]["command"]["seconds"] > 0
    assert result["soak"]["requests"] == 60 and result["soak"]["unexpected"] == 0
    assert len(result["soak"]["rss_mb"]) >= 2
    assert set(result["invariance"]) == {"seqed_bf16", "ctranslate2_int8"}
