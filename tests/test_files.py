"""Atomic writes: a full disk (or any OSError, or torch.save's short write) mid-write leaves the old file,
no temporary file, and one `WriteError` that names the path and the errno text."""

import errno
import os

import pytest
import torch

from seqed import files
from seqed.checkpoint import load_checkpoint, save_atomic
from seqed.cli.io import open_out
from seqed.errors import SeqedError
from seqed.files import WriteError, atomic_open, write_atomic
from seqed.runlog import RunLog

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
SHORT_WRITE = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4672 vs 4562")


def _only(directory):
    return sorted(p.name for p in directory.iterdir())


def test_write_atomic_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_atomic(path, "héllo\n")
    write_atomic(path, b"bytes")
    assert path.read_bytes() == b"bytes" and _only(path.parent) == ["a.txt"]


def test_a_full_disk_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with pytest.raises(WriteError) as info:
        with atomic_open(path, "w") as f:
            f.write("new, half")
            raise ENOSPC
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert isinstance(info.value, SeqedError) and isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "old\n" and _only(tmp_path) == ["out.txt"]


def test_other_errors_pass_through_and_still_clean_up(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(KeyError):
        with atomic_open(path) as f:
            f.write(b"x")
            raise KeyError("not a write failure")
    with pytest.raises(FileNotFoundError):  # an OSError about another file (an input) is not this write's
        with atomic_open(path) as f:
            open(tmp_path / "missing.txt")
    assert _only(tmp_path) == []


@pytest.mark.parametrize("failure", [ENOSPC, SHORT_WRITE], ids=["oserror", "torch-short-write"])
def test_checkpoint_save_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint_5.pt"
    save_atomic({"model": {"w": torch.ones(2)}, "config": {}}, path)
    real = torch.save

    def fake_save(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)  # some bytes reach the temporary file, then the disk is full
        raise failure

    monkeypatch.setattr(torch, "save", fake_save)
    with pytest.raises(WriteError) as info:
        save_atomic({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    msg = str(info.value)
    assert msg.startswith(f"cannot write {path}: No space left on device"), msg
    if failure is SHORT_WRITE:
        assert "unexpected pos" in msg
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert _only(tmp_path) == ["checkpoint_5.pt"]


def test_the_run_log_names_its_file_on_a_full_disk(tmp_path, monkeypatch):
    log = RunLog(tmp_path, env={"seed": 1})
    log.train({"step": 1, "train_loss": 1.0, "lr": 1e-3, "tokens_per_s": 1.0})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'train.log.jsonl'}: No space left on device"):
        log.train({"step": 2, "train_loss": 1.0, "lr": 1e-3, "tokens_per_s": 1.0})


def test_translation_output_names_its_file_on_a_full_disk(tmp_path):
    path = tmp_path / "hyp.txt"
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        with open_out(str(path)) as out:
            out.write("first line\n")
            out.flush()
            raise ENOSPC
    assert path.read_text() == "first line\n"  # written in place: finished lines stay (Ctrl-C keeps them too)
    with pytest.raises(BrokenPipeError):  # a reader that left is not a write failure (the CLI exits quietly)
        with open_out(str(path)):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_write_failure_recognises_only_write_errors():
    assert files.write_failure(ENOSPC) == ("No space left on device", errno.ENOSPC)
    assert files.write_failure(SHORT_WRITE)[1] == errno.ENOSPC
    assert files.write_failure(RuntimeError("shape mismatch")) is None
    assert files.write_failure(ValueError("x")) is None
