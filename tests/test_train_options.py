"""Trainer options without other tests: early stopping (`train.patience`), fp16 with the gradient scaler,
and the wsd schedule by updates and by the clock (a fake one: no test sleeps).

Each test trains the tiny reversal Transformer of `tiny_runs` in this process for a few dozen updates.
On CPU seqed's Trainer disables the fp16 GradScaler (its scaling protects fp16 gradients on CUDA); the
scaler's path through an update, the checkpoint and `--resume` is pinned on CPU with a CPU GradScaler
standing in for the CUDA one, and once more for real on CUDA where there is one.
"""

import signal

import pytest
import torch

from seqed.checkpoint import load_checkpoint
from seqed.config import load_config
from seqed.runlog import read_records
from seqed.train import Trainer
from tiny_runs import assert_same_tensors, write_config, write_task


@pytest.fixture
def tiny(tmp_path):
    """(config path, run directory) of the tiny reversal task."""
    data = write_task(tmp_path, n_train=120, n_valid=10)
    run = tmp_path / "run"
    return write_config(tmp_path / "tiny.yaml", data, run), run


def train(cfg_path, *overrides, resume=False):
    trainer = Trainer(load_config(str(cfg_path), list(overrides)), resume=resume, progress=False)
    state = trainer.run()
    return trainer, state


def log_of(run):
    return read_records(run / "train.log.jsonl")


def test_patience_stops_after_n_validations_without_improvement(tiny, capsys):
    cfg, run = tiny
    # A learning rate of ~0 leaves the model, hence validation BLEU, unchanged: only the first validation
    # improves on "no best yet", and with patience 2 the third one stops the run, long before max_steps.
    trainer, state = train(cfg, "train.lr=1e-12", "train.warmup=0", "train.schedule=constant",
                           "train.early_stop_metric=bleu", "train.valid_every=5", "train.max_steps=100",
                           "train.patience=2")
    log = log_of(run)
    assert [r["step"] for r in log] == [5, 10, 15]
    assert [r["best"] for r in log] == [True, False, False]
    assert state.step == 15 and state.bad_validations == 2
    assert "early stopping: no improvement in 2 validations at step 15" in capsys.readouterr().err


def test_fp16_on_cpu_trains_without_a_scaler(tiny):
    cfg, run = tiny
    trainer, state = train(cfg, "train.precision=fp16", "train.max_steps=10", "train.valid_every=10")
    assert not trainer.scaler.is_enabled()  # seqed scales fp16 gradients on CUDA only
    assert state.step == 10 and state.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    ckpt = load_checkpoint(run / "checkpoint_last.pt")
    assert ckpt["scaler"] is None and ckpt["config"]["train"]["precision"] == "fp16"
    assert torch.isfinite(torch.tensor(log_of(run)[-1]["valid_nll"]))


@pytest.fixture
def cpu_scaler(monkeypatch):
    """seqed's Trainer asks for `GradScaler("cuda", enabled=fp16 and cuda)`; give it an enabled CPU scaler
    instead (a low initial scale, grown every 2 steps, so its state changes within a few updates)."""
    real = torch.amp.GradScaler
    made = []

    def factory(device="cuda", enabled=True, **kw):
        scaler = real("cpu", init_scale=2.0 ** 8, growth_interval=2, enabled=True)
        made.append(scaler)
        return scaler

    monkeypatch.setattr(torch.amp, "GradScaler", factory)
    return made


def test_fp16_scaler_state_round_trips_through_checkpoint_and_resume(tiny, cpu_scaler):
    cfg, run = tiny
    args = ["train.precision=fp16", "train.valid_every=6", "train.valid_bleu=false"]
    trainer, state = train(cfg, *args, "train.max_steps=6")
    assert trainer.scaler.is_enabled() and state.step == 6
    saved = load_checkpoint(run / "checkpoint_last.pt")["scaler"]
    assert saved is not None and saved["scale"] == trainer.scaler.get_scale()
    assert saved["scale"] > 2.0 ** 8  # the scale grew: the scaler stepped through finite updates
    assert saved["_growth_tracker"] == trainer.scaler._get_growth_tracker()
    # --resume loads it into the new run's scaler, which then goes on from there.
    resumed = Trainer(load_config(str(cfg), [*args, "train.max_steps=8"]), resume=True, progress=False)
    resumed.setup()
    assert resumed.scaler.get_scale() == saved["scale"]
    assert resumed.scaler._get_growth_tracker() == saved["_growth_tracker"]
    state = resumed._loop()
    assert state.step == 8 and resumed.scaler.get_scale() >= saved["scale"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fp16 GradScaler is enabled on CUDA only")
def test_fp16_gradient_scaler_on_cuda(tiny):
    cfg, run = tiny
    args = ["train.precision=fp16", "train.device=cuda", "train.valid_every=10", "train.valid_bleu=false"]
    trainer, state = train(cfg, *args, "train.max_steps=10")
    assert trainer.scaler.is_enabled() and state.step == 10
    saved = load_checkpoint(run / "checkpoint_last.pt")["scaler"]
    assert saved is not None and saved["scale"] == trainer.scaler.get_scale() > 0
    resumed = Trainer(load_config(str(cfg), [*args, "train.max_steps=12"]), resume=True, progress=False)
    resumed.setup()
    assert resumed.scaler.is_enabled() and resumed.scaler.get_scale() == saved["scale"]
    assert resumed._loop().step == 12


def test_wsd_schedule_ends_at_min_lr_and_warns_when_a_budget_cuts_it_short(tiny, capsys):
    cfg, run = tiny
    trainer, state = train(cfg, "train.schedule=wsd", "train.warmup=2", "train.max_steps=10",
                           "train.decay_fraction=0.5", "train.min_lr=0", "train.valid_every=5")
    assert state.step == 10 and trainer.optimizer.param_groups[0]["lr"] == 0.0
    assert [round(r["lr"] / 2e-3, 6) for r in log_of(run)] == [1.0, 0.0]  # peak at step 5 (decay 6-10)
    assert "wsd schedule decays" not in capsys.readouterr().err
    # An epoch limit (like train.max_minutes) stops the run before the decay: say so.
    train(cfg, "train.schedule=wsd", "train.max_steps=100000", "train.max_epochs=1", "train.valid_every=5",
          f"out_dir={run}_short")
    assert "the wsd schedule decays over steps 80000-100000, but training stopped at step" in capsys.readouterr().err


class FakeClock:
    """`Trainer(clock=...)`: `step` seconds pass per call (the loop reads it once at its start and once
    per update); at call `stop_at` it plays a SIGTERM arriving."""

    def __init__(self, start: float = 0.0, step: float = 3.0, stop_at: int = 0):
        self.now, self.step, self.calls, self.stop_at, self.trainer = start - step, step, 0, stop_at, None

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == self.stop_at:
            self.trainer.signals.received = signal.SIGTERM
        self.now += self.step
        return self.now


def clock_train(cfg_path, clock, *overrides, resume=False):
    trainer = Trainer(load_config(str(cfg_path), list(overrides)), resume=resume, progress=False, clock=clock)
    clock.trainer = trainer
    return trainer, trainer.run()


def test_wsd_by_the_clock_cools_down_over_the_last_minutes_and_resumes_from_the_recorded_seconds(tiny, capsys):
    cfg, run = tiny
    args = ["train.schedule=wsd", "train.max_steps=0", "train.max_minutes=1", "train.decay_fraction=0.5",
            "train.warmup=2", "train.min_lr=0", "train.valid_every=5", "train.valid_bleu=false"]
    # 3 fake seconds per update: the 60-second budget is 20 updates, the decay the last 30 seconds.
    trainer, state = clock_train(cfg, FakeClock(), *args)
    assert state.step == 20 and state.train_seconds == 60.0
    assert "done: reached train.max_minutes=1.0 at step 20" in capsys.readouterr().err
    # Update k starts 3(k-1) seconds in: the peak until second 30, then down to 10% at update 20 (second 57).
    lrs = [r["lr"] / 2e-3 for r in log_of(run)]
    assert [round(x, 6) for x in lrs] == [1.0, 1.0, 0.6, 0.1]
    assert [r["train_seconds"] for r in log_of(run)] == [15.0, 30.0, 45.0, 60.0]
    # Stopped by a signal after update 8 and resumed (the new session's clock starts anywhere): the run
    # goes on from the recorded 24 seconds, with the same learning rates and the same weights.
    other = run.parent / "interrupted"
    _, state = clock_train(cfg, FakeClock(stop_at=9), *args, f"out_dir={other}")
    assert state.step == 8 and state.train_seconds == 24.0
    _, state = clock_train(cfg, FakeClock(start=1000.0), *args, f"out_dir={other}", resume=True)
    assert state.step == 20 and state.train_seconds == 60.0
    assert [(r["step"], r["lr"], r["train_seconds"]) for r in log_of(other)] == \
        [(r["step"], r["lr"], r["train_seconds"]) for r in log_of(run)]
    assert_same_tensors(load_checkpoint(run / "checkpoint_last.pt")["model"],
                        load_checkpoint(other / "checkpoint_last.pt")["model"], "model.")


def test_wsd_by_the_clock_says_when_another_limit_cuts_the_decay_short(tiny, capsys):
    cfg, run = tiny
    train(cfg, "train.schedule=wsd", "train.max_steps=0", "train.max_minutes=600", "train.max_epochs=1",
          "train.valid_every=5", "train.valid_bleu=false")
    err = capsys.readouterr().err
    assert "done: reached train.max_epochs=1" in err
    assert "the wsd schedule decays over minutes 480.0-600 of training, but training stopped after 0.0 minutes" in err
