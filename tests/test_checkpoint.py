import os
import pickle

import pytest
import torch

from seqed.checkpoint import (CheckpointError, average_checkpoints, load_checkpoint, rotate, save_atomic,
                              step_checkpoints)


def fake_ckpt(value: float) -> dict:
    return {"model": {"w": torch.full((2, 2), value), "n": torch.tensor(3)}, "config": {"x": 1},
            "optimizer": {}, "tokenizer": {"m": b"\x00\x01"}}


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    save_atomic(fake_ckpt(1.0), path)
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.ones(2, 2)) and state["tokenizer"]["m"] == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temp files left


def test_missing_truncated_and_foreign(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "c.pt"
    save_atomic(fake_ckpt(1.0), path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "garbage.pt").write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"just": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a seqed checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = fake_ckpt(1.0)
    state["payload"] = Evil()
    torch.save(state, tmp_path / "evil.pt", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_atomic(fake_ckpt(1.0), path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_atomic(fake_ckpt(2.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_rotate_and_average(tmp_path):
    for step, v in ((10, 1.0), (20, 2.0), (30, 3.0), (40, 6.0)):
        save_atomic(fake_ckpt(v), tmp_path / f"checkpoint_{step}.pt")
    rotate(tmp_path, keep_last=3)
    names = [p.name for p in step_checkpoints(tmp_path)]
    assert names == ["checkpoint_20.pt", "checkpoint_30.pt", "checkpoint_40.pt"]
    avg = average_checkpoints(step_checkpoints(tmp_path))
    assert torch.allclose(avg["model"]["w"], torch.full((2, 2), 11 / 3))
    assert "optimizer" not in avg and avg["model"]["n"].item() == 3


def test_train_state_reads_the_names_of_older_checkpoints():
    from seqed.runtime import Dist
    from seqed.trainstate import TrainState, Window

    old = {"step": 7, "window_loss": 1.5, "window_tokens": 3, "log_window": [2.0, 4.0, 2, 9, 0.25]}
    state = TrainState.from_dict(old)
    assert (state.step, state.loss_since_validation, state.tokens_since_validation) == (7, 1.5, 3)
    assert state.since_report == {"loss": 2.0, "tokens": 4.0, "updates": 2, "all_tokens": 9, "seconds": 0.25}
    window = Window(torch.device("cpu"))
    window.restore(state.since_report, Dist())
    sums = window.read(Dist())
    assert (sums.loss, sums.tokens, sums.updates, sums.all_tokens, sums.seconds) == (2.0, 4, 2, 9, 0.25)
    assert window.read(Dist()).updates == 0  # read starts the window again
    assert TrainState.from_dict(state.to_dict()) == state
