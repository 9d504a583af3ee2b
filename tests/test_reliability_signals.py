"""Issue 6, with real processes: signals, `kill -9` and broken pipes.

* SIGINT/SIGTERM stop training after the current step with a saved checkpoint and a resume command;
  the resumed run ends bit-identical to an uninterrupted one (parameters, optimizer, logged losses).
* Fault injection: SIGKILL at random moments, resume each time: still bit-identical (CPU, same seed).
* `kill -9` while a checkpoint is being written leaves the previous one loadable.
* `seqed translate | head -1` exits 0 quietly; Ctrl-C during translation exits 130 with one line.
"""

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from seqed.checkpoint import load_checkpoint, remove_stale_temps
from seqed.runlog import read_records
from tiny_runs import assert_same_tensors, child_env, load_state, seqed_argv, write_config, write_task

pytestmark = pytest.mark.slow  # every test trains through subprocesses

# Dropout and word dropout on: the resumed run must restore the torch RNG and reseed the noise generator.
STEPS, EVERY = 80, 4
TRAIN = f"max_steps: {STEPS}, valid_every: {EVERY}, word_dropout: 0.1"


def _default_sigint() -> None:
    # A test run launched in the background (`pytest &` in a script) inherits SIGINT ignored, and so would
    # the child: Python installs its KeyboardInterrupt handler only where SIGINT is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(seqed_argv(*args), env=child_env(), text=True, preexec_fn=_default_sigint, **kwargs)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll until predicate() holds (True) or the process ended first (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.005)
    raise TimeoutError("the child process made no progress")


def inode(path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def assert_same_run(run, reference) -> None:
    a, b = load_state(run / "checkpoint_last.pt"), load_state(reference / "checkpoint_last.pt")
    assert a["train_state"]["step"] == b["train_state"]["step"] == STEPS
    assert_same_tensors(a["model"], b["model"], "model.")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer.")
    for key in ("step", "valid_nll", "train_loss", "valid_bleu"):
        assert [h[key] for h in a["train_state"]["history"]] == [h[key] for h in b["train_state"]["history"]], key
    log = read_records(run / "train.log.jsonl")
    assert len(log) == STEPS // EVERY  # lines of steps redone after a kill were dropped on resume
    # The training lines (sums kept on the device, saved with the checkpoint) match the uninterrupted run's.
    lines, ref = (read_records(r / "train.log.jsonl", event="train") for r in (run, reference))
    assert [(r["step"], r["train_loss"], r["target_tokens"]) for r in lines] == \
        [(r["step"], r["train_loss"], r["target_tokens"]) for r in ref]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def reference(task, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce exactly."""
    root = tmp_path_factory.mktemp("reference")
    cfg = write_config(root / "cfg.yaml", task, root / "run", train=TRAIN)
    proc = subprocess.run(seqed_argv("train", cfg, "--no-progress"), env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_sigint_saves_a_checkpoint_and_resume_is_exact(task, reference, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", task, run, train=TRAIN)
    proc = start("train", cfg, "--no-progress", stderr=subprocess.PIPE)
    assert wait_for(lambda: (run / "checkpoint_last.pt").exists(), proc), "finished before the first checkpoint"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "got SIGINT: finishing this step, then saving a checkpoint" in err
    stopped = load_checkpoint(run / "checkpoint_last.pt")["train_state"]["step"]
    assert 0 < stopped < STEPS
    match = re.search(r"stopped by SIGINT at step (\d+); saved .*checkpoint_last\.pt\. Resume with: (.*)", err)
    assert match and int(match.group(1)) == stopped, err[-3000:]
    argv = shlex.split(match.group(2))
    assert argv == ["seqed", "train", str(cfg), "--no-progress", "--resume"]
    proc = subprocess.run(seqed_argv(*argv[1:]), env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from step {stopped}" in proc.stderr
    assert_same_run(run, reference)


def test_killed_at_random_points_and_resumed_ends_bit_identical(task, reference, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", task, run, train=TRAIN)
    rng = random.Random(6)
    last = run / "checkpoint_last.pt"
    stops = []
    for attempt in range(4):
        seen = inode(last)
        resume = ["--resume"] if last.exists() else []
        proc = start("train", cfg, "--no-progress", *resume, stderr=subprocess.DEVNULL)
        # Wait for a new checkpoint, then kill at a random moment of the next steps (or checkpoint write).
        if not wait_for(lambda: inode(last) != seen, proc):
            break
        time.sleep(rng.uniform(0.0, 0.05))  # a few steps at most: the run must not finish here
        if proc.poll() is not None:
            break
        if attempt == 0:  # a graceful stop first, then kill -9 without warning
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) in (0, 128 + signal.SIGTERM)
        else:
            proc.kill()
            proc.wait(timeout=60)
        stops.append(load_checkpoint(last)["train_state"]["step"])  # always loadable
    assert len(stops) >= 3 and stops[-1] < STEPS, stops
    print("stopped at steps", stops)
    proc = subprocess.run(seqed_argv("train", cfg, "--no-progress", "--resume"), env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(run, reference)


SAVER = """
import os, stat, sys, time
import torch
from seqed.checkpoint import save_atomic

path, mode = sys.argv[1], sys.argv[2]
big = torch.zeros(2_000_000)
real_fsync = os.fsync

def stalled_fsync(fd):  # the file is fully written but not yet renamed into place: stop here
    real_fsync(fd)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        print("writing", flush=True)
        time.sleep(600)

for i in range(1, 10_000):
    if mode == "stall" and i == 2:
        os.fsync = stalled_fsync
    save_atomic({"model": {"w": big + i}, "config": {"i": i}}, path)
    print(i, flush=True)
"""


@pytest.mark.parametrize("mode", ["stall", "random"])
def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, mode):
    path = tmp_path / "checkpoint_last.pt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), mode], stdout=subprocess.PIPE, text=True,
                            env=child_env())
    done = int(proc.stdout.readline())  # the first checkpoint is complete
    if mode == "stall":
        assert proc.stdout.readline().strip() == "writing"
    else:
        time.sleep(random.Random(9).uniform(0.05, 0.3))
    proc.kill()
    rest = proc.communicate()[0].split()
    done = max([done] + [int(x) for x in rest if x.isdigit()])
    state = load_checkpoint(path)
    assert state["config"]["i"] in (done, done + 1)  # the last complete one (or one renamed just before the kill)
    assert float(state["model"]["w"][0]) == state["config"]["i"]
    stale = remove_stale_temps(tmp_path)
    if mode == "stall":
        assert len(stale) == 1 and state["config"]["i"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]


def test_translate_into_a_closed_pipe_and_ctrl_c(reference, task, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text((task / "train.src").read_text() * 100)  # 30,000 lines: far from done when the signal comes
    common = ["translate", "-c", reference, "--device", "cpu", "--beam", "1", "-i", text, "--buffer-size", "16"]

    # `seqed translate ... | head -1`
    proc = start(*common, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""

    # Ctrl-C in the middle of a translation
    proc = start(*common, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert err == "seqed: interrupted\n"
    assert len(out.splitlines()) < 29_999  # stopped early
