"""The run directory's lock: a second `seqed train` into a directory a live process trains into is refused
with the owner named; a dead process's lock is taken over with a note; the lock goes when the run ends,
also when it ends in an error or by a signal."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from seqed.cli.main import main
from seqed.config import load_config
from seqed.runlock import RunLock
from seqed.errors import TrainingError
from seqed.train import Trainer
from tiny_runs import write_config, write_task


@pytest.fixture
def sleeper():
    """A live process of this host (not this one): its pid stands for another run's."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


@pytest.fixture
def tiny(tmp_path):
    data = write_task(tmp_path, n_train=60, n_valid=5)
    run = tmp_path / "run"
    return write_config(tmp_path / "tiny.yaml", data, run, train="max_steps: 4, valid_every: 4, valid_bleu: false"), run


def lock_of(run, pid, host=None):
    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                           "since": "2026-12-05 04:00:00 UTC"}))


def trainer_run(cfg_path, *overrides, resume=False):
    threads = torch.get_num_threads()
    try:
        return Trainer(load_config(str(cfg_path), list(overrides)), resume=resume, progress=False).run()
    finally:
        torch.set_num_threads(threads)


def test_a_live_owner_refuses_a_second_run_with_or_without_resume(tiny, sleeper, capsys):
    cfg, run = tiny
    lock_of(run, sleeper)
    before = (run / ".lock").read_text()
    for resume in ([], ["--resume"]):
        capsys.readouterr()
        assert main(["train", str(cfg), "--no-progress", *resume]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last == (f"seqed: error: {run} is in use: process {sleeper} on this host has been training into it "
                        f"since 2026-12-05 04:00:00 UTC. Wait for it to finish or stop it, or choose another out_dir "
                        f"(if that process is gone, delete {run / '.lock'})")
    assert (run / ".lock").read_text() == before  # the owner's lock is left alone
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # and nothing was written beside it


def test_an_owner_on_another_host_is_refused_too(tmp_path):
    lock_of(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(TrainingError, match="process 1 on host elsewhere.example has been training into it"):
        RunLock(tmp_path).acquire()


def test_a_dead_processs_lock_is_taken_over_with_a_note_and_released_at_the_end(tiny, dead_pid, capsys):
    cfg, run = tiny
    lock_of(run, dead_pid)
    state = trainer_run(cfg)
    assert state.step == 4
    err = capsys.readouterr().err
    assert f"note: {run / '.lock'} was left by process {dead_pid} (started 2026-12-05 04:00:00 UTC), which is " \
           f"no longer running: taking it over" in err
    assert not (run / ".lock").exists()


def test_the_lock_is_held_while_training_and_released_on_errors(tiny, tmp_path, monkeypatch):
    cfg, run = tiny
    seen = []
    real = Trainer._loop

    def loop(self):
        seen.append(json.loads((run / ".lock").read_text()))
        with pytest.raises(TrainingError, match="is in use: process"):  # a second trainer, same directory
            Trainer(self.cfg, resume=True, progress=False).setup()
        return real(self)

    monkeypatch.setattr(Trainer, "_loop", loop)
    trainer_run(cfg)
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (run / ".lock").exists()
    # An error inside the run (here: a data error before anything is written) releases the lock as well,
    # and a directory the run created and left empty goes with it.
    with pytest.raises(FileNotFoundError):
        trainer_run(cfg, f"data.train.src={tmp_path}/missing.src", f"out_dir={tmp_path}/fresh")
    assert not (tmp_path / "fresh").exists()


def test_a_signal_stops_the_run_and_releases_the_lock(tiny, monkeypatch):
    cfg, run = tiny
    real = Trainer._account

    def account(self, p, bar):
        self.signals.received = signal.SIGTERM  # as the handler does when SIGTERM arrives
        return real(self, p, bar)

    monkeypatch.setattr(Trainer, "_account", account)
    state = trainer_run(cfg)
    assert state.step == 1 and (run / "checkpoint_last.pt").is_file()
    assert not (run / ".lock").exists()
