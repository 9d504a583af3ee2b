"""The training loop: one optimizer update after another, with validation, checkpoints and exact resume.

One process or many (`torchrun ... -m seqed train`, DistributedDataParallel): every rank reads the
same data and takes its shard of each epoch's batches; only rank 0 logs, validates and saves. One
update (noise, forward, backward, clipping, the step) is `seqed/update.py`, the checkpoint format
`seqed/checkpoint.py`, validation `seqed/evaluate.py`, the process (devices, distributed helpers,
signals, RNG) `seqed/runtime.py`, the logs `seqed/runlog.py`.

On the device the loop keeps the GPU's queue full: losses and token counts are summed there and read
every `train.log_every` updates, and the non-finite guard skips an update on the device (fused AdamW's
`found_inf`). The host reads one flag per update (was the update applied?): the step count, and with it
the learning rate, the noise seed and the KL weight of the next update, depend on it.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import torch
import yaml
from torch import nn
from tqdm import tqdm

from seqed.checkpoint import (Checkpoint, init_weights, remove_stale_temps, restore_weights, resume_checkpoint,
                              save_step)
from seqed.config import Config, to_dict
from seqed.data.batching import TokenBatchSampler
from seqed.data.pipeline import prepare_data
from seqed.data.preprocess import build_missing, train_tokenizer
from seqed.errors import TrainingError
from seqed.evaluate import Validator
from seqed.model import EncoderDecoder, build_model, count_parameters
from seqed.noise import Noiser
from seqed.optim import Schedule, build_optimizer
from seqed.runlog import RunLog
from seqed.precision import resolve as resolve_precision
from seqed.precision import warn_if_emulated
from seqed.runtime import (Dist, StopSignals, all_reduce_sum, broadcast_object, device_kind, gather_rng,
                           init_distributed, resolve_device, seed_everything, set_rng_state, versions)
from seqed.tokenizer import Tokenizer
from seqed.trainstate import Pending, TrainState, Window, diverged
from seqed.update import Update
from seqed.vocab import UNK_ID


class Trainer:
    """Trains `cfg` into `cfg.out_dir`; `run()` returns the final `TrainState`.

    Args:
        cfg: a validated config.
        resume: continue from `out_dir/checkpoint_last.pt`.
        progress: show a progress bar (rank 0 only).
        resume_command: the command line to print when a signal stops training.

    After `run()`, `stop_signal` holds the signal that stopped training (SIGINT/SIGTERM), or None.
    """

    def __init__(self, cfg: Config, *, resume: bool = False, progress: bool = True,
                 resume_command: Optional[str] = None):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.resume = resume
        self.progress = progress
        self.resume_command = resume_command or f"seqed train <config> out_dir={shlex.quote(str(self.out))} --resume"
        self.signals = StopSignals()
        self.dist = Dist()

    @property
    def stop_signal(self) -> Optional[int]:
        return self.signals.received

    def log(self, msg: str) -> None:
        if self.dist.main:
            RunLog.message(msg)

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        self.dist = init_distributed(device_kind(t.device), t.dist_timeout_minutes)
        self.device = resolve_device(t.device, self.dist.local_rank)
        self.precision = resolve_precision(t.precision, self.device)  # "auto" -> bf16 where native, else fp32
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        ckpt = resume_checkpoint(self.out, to_dict(cfg), resume=self.resume)
        seed_everything(t.seed)
        tokenizer = Tokenizer.from_dict(ckpt["tokenizer"]) if ckpt else None
        if cfg.data.binarized and self.dist.world > 1:  # rank 0 builds a missing store while the others wait
            failure = (build_missing(cfg, self.log, tokenizer=tokenizer, progress=self.progress)
                       if self.dist.main else None)
            message = broadcast_object(None if failure is None else str(failure), self.dist)  # the first collective
            if failure is not None:
                raise failure
            if message is not None:
                raise TrainingError(f"rank 0 could not preprocess the training data: {message}")
        elif tokenizer is None and self.dist.world > 1:  # rank 0 trains it, every rank gets the same model
            tokenizer = Tokenizer.from_dict(broadcast_object(
                train_tokenizer(cfg, self.log).to_dict() if self.dist.main else None, self.dist))
        self.data = prepare_data(cfg, tokenizer, self.log, build=self.dist.world == 1)
        self.tokenizer = self.data.tokenizer
        self.log(self.data.report)
        if self.dist.main:  # only now: a data error leaves no run directory behind
            self.out.mkdir(parents=True, exist_ok=True)
            for p in remove_stale_temps(self.out):
                self.log(f"removed {p.name}, a partial checkpoint left by an earlier run that was killed")
            if not ckpt:
                self.tokenizer.save(self.out / "tokenizer")
                (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.runlog = RunLog(self.out, enabled=self.dist.main, tensorboard=t.tensorboard,
                             env={"versions": versions(), "seed": t.seed, "precision": self.precision},
                             fresh=not ckpt)
        self.model: EncoderDecoder = build_model(cfg, self.tokenizer.src_vocab_size,
                                                 self.tokenizer.tgt_vocab_size).to(self.device)
        self.log(f"model: {cfg.model.encoder.type} encoder + {cfg.model.decoder.type} decoder, "
                 f"{count_parameters(self.model):,} parameters, device {self.device}, precision {self.precision}"
                 + (" (train.precision=auto)" if t.precision == "auto" else ""))
        warn_if_emulated(self.precision, self.device, setting="train.precision", log=self.log)
        self.optimizer = build_optimizer(self.model.parameters(), name=t.optimizer, lr=t.lr, betas=t.betas,
                                         eps=t.eps, weight_decay=t.weight_decay)
        self.schedule = Schedule(self.optimizer, kind=t.schedule, lr=t.lr, warmup=t.warmup,
                                 factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_lr,
                                 total=t.max_steps, decay_fraction=t.decay_fraction)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(self.precision == "fp16" and self.device.type == "cuda"))
        src_lens, tgt_lens = self.data.train.lengths()
        self.sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens=t.max_tokens,
                                         max_sentences=t.max_sentences or None, shuffle=True, seed=t.seed,
                                         num_shards=self.dist.world, shard_index=self.dist.rank,
                                         pad_to_multiple=t.pad_to_multiple)
        self.validator = Validator(cfg, self.data, self.tokenizer, self.device, precision=self.precision)
        self.state = TrainState()
        if ckpt:
            self._restore(ckpt)
            self.runlog.truncate(self.state.step)  # drop the lines of steps the resumed run will redo
        elif t.init_from:  # fine-tuning: the weights only
            init_weights(t.init_from, model=self.model, tokenizer=self.tokenizer)
            self.log(f"weights from {t.init_from}; fresh optimizer, schedule and step")
        if t.skip_oom and self.dist.world > 1:
            self.log("train.skip_oom has no effect with several processes: an out-of-memory batch stops training")
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if t.compile:
            # Opt-in: batch shapes vary, so compile for dynamic shapes; the first steps are slow.
            self.net = torch.compile(self.net, dynamic=True)
        noiser = (Noiser(cfg.data.noise, vocab_size=self.tokenizer.src_vocab_size, mask_id=UNK_ID)
                  if cfg.data.noise.active else None)
        self.update = Update(t, net=self.net, model=self.model, optimizer=self.optimizer, scaler=self.scaler,
                             noiser=noiser, device=self.device, dist=self.dist, log=self.log, precision=self.precision)

    def _restore(self, ckpt: dict) -> None:
        restore_weights(ckpt, model=self.model, optimizer=self.optimizer, schedule=self.schedule,
                        scaler=self.scaler)
        s = ckpt["train_state"]
        self.state = TrainState.from_dict(s)
        note = self.state.reshard(int(s.get("world", 1)), self.dist.world)
        if note:
            self.log(note)
        rng = ckpt["rng"]
        if self.dist.world > 1 and "per_rank" in rng and self.dist.rank < len(rng["per_rank"]):
            rng = rng["per_rank"][self.dist.rank]
        set_rng_state(rng, self.device)
        self.schedule.set_step(self.state.step)
        self.log(f"resumed from step {self.state.step} (epoch {self.state.epoch}, "
                 f"batch {self.state.batch_in_epoch})")

    def save(self, is_best: bool) -> Path:
        """Write checkpoint_<step>.pt and point checkpoint_last.pt (and _best) at it (rank 0).

        Raises:
            TrainingError: the disk is full or not writable; the previous checkpoints are intact.
        """
        rng = gather_rng(self.device, self.dist)  # every rank joins the gather
        self.state.log_window = self.window.snapshot(self.dist)  # so is every rank's window
        step_path = self.out / f"checkpoint_{self.state.step}.pt"
        if not self.dist.main:
            return step_path
        ckpt = Checkpoint(model=self.model.state_dict(), config=to_dict(self.cfg),
                          tokenizer=self.tokenizer.to_dict(), optimizer=self.optimizer.state_dict(),
                          scheduler=self.schedule.state_dict(),
                          scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                          train_state=dict(self.state.to_dict(), world=self.dist.world), rng=rng,
                          versions=versions())
        try:
            return save_step(ckpt, self.out, self.state.step, is_best=is_best, keep_last=self.cfg.train.keep_last)
        except OSError as err:  # seqed.files.WriteError: a full disk, no permission (torch.save's too)
            last = self.out / "checkpoint_last.pt"
            raise TrainingError(
                f"cannot write checkpoint {err.filename or step_path}: {err.strerror or err}. The last good "
                f"checkpoint, {last if last.is_file() else 'none yet'}, is intact: free disk space or choose "
                f"another out_dir, then resume with: {self.resume_command}") from None

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> TrainState:
        try:
            self.setup()
            with self.signals.installed(announce=self.dist.main):
                state = self._loop()
            if self.dist.world > 1:
                import torch.distributed as dist

                dist.barrier()  # tear down together: rank 0 may still be writing the last checkpoint
            return state
        finally:
            if self.dist.world > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
            if hasattr(self, "runlog"):
                self.runlog.close()

    def _loop(self) -> TrainState:
        t, st = self.cfg.train, self.state
        self.bar = bar = tqdm(total=t.max_steps or None, initial=st.step, unit="step", dynamic_ncols=True,
                              desc="train", disable=not (self.progress and self.dist.main))
        self.window = Window(self.device)
        self.window.restore(st.log_window, self.dist)
        self.bad_in_row = 0
        stop_reason = None
        session_start, start_seconds = time.perf_counter(), st.train_seconds
        # A resumed run that had already spent its budget stops here, without one more update.
        if t.max_steps and st.step >= t.max_steps:
            stop_reason = f"already reached train.max_steps={t.max_steps}"
        elif t.max_minutes and st.train_seconds >= t.max_minutes * 60:
            stop_reason = f"already reached train.max_minutes={t.max_minutes}"
        while stop_reason is None:
            if t.max_epochs and st.epoch >= t.max_epochs:
                stop_reason = f"reached train.max_epochs={t.max_epochs}"
                break
            batches = self.sampler.batches(st.epoch, st.epoch_start)
            if len(batches) < t.accum and not st.epoch_start:
                raise TrainingError(f"an epoch has {len(batches)} batches, fewer than train.accum={t.accum} "
                                    f"(x {self.dist.world} processes): use more data or smaller train.max_tokens")
            while st.batch_in_epoch + t.accum <= len(batches):
                pos = st.batch_in_epoch
                group = [self.data.train.batch(idx, pad_to_multiple=t.pad_to_multiple)
                         for idx in batches[pos: pos + t.accum]]
                if self.device.type == "cuda":  # page-locked host memory: the copy overlaps compute
                    group = [b.pin_memory() for b in group]
                lr = self.schedule.set_step(st.step + 1)
                pending = self.update(group, st.step)
                st.batch_in_epoch = pos + t.accum
                st.train_seconds = start_seconds + (time.perf_counter() - session_start)
                ok = self._account(pending, bar)  # the one read of the device per update
                reached = bool(t.max_steps) and st.step >= t.max_steps
                out_of_time = bool(t.max_minutes) and st.train_seconds >= t.max_minutes * 60
                validating = (ok and st.step % t.valid_every == 0) or reached
                if validating or (ok and st.step % t.log_every == 0):
                    # Ranks agree on stopping (a signal or the clock may reach one rank first).
                    stop, out_of_time = self._agree([self.signals.received is not None, out_of_time])
                    self._report(lr)
                else:
                    stop = self.dist.world == 1 and self.signals.received is not None
                    out_of_time = out_of_time and self.dist.world == 1
                if validating or out_of_time:
                    stop_reason = self._validate_and_save(lr)
                    if stop_reason is None and (reached or out_of_time):
                        stop_reason = (f"reached train.max_steps={t.max_steps}" if reached
                                       else f"reached train.max_minutes={t.max_minutes}")
                elif stop:
                    self.save(is_best=False)  # no validation: a scheduler's grace period may be short
                if stop:
                    stop_reason = "interrupted"
                if stop_reason:
                    break
            else:
                st.epoch += 1
                st.batch_in_epoch = st.epoch_start = 0
        bar.close()
        if stop_reason == "interrupted":
            self.log(f"stopped by {self.signals.name} at step {st.step}; saved {self.out / 'checkpoint_last.pt'}. "
                     f"Resume with: {self.resume_command}")
        else:
            self.log(f"done: {stop_reason} at step {st.step}; checkpoints in {self.out}")
            sched = self.schedule
            if sched.kind == "wsd" and st.step < sched.total:
                self.log(f"note: the wsd schedule decays over steps {sched.total - sched.decay_steps}-{sched.total}, "
                         f"but training stopped at step {st.step} (learning rate "
                         f"{self.optimizer.param_groups[0]['lr']:.2e}): "
                         f"set train.max_steps to the updates your budget reaches")
        return st

    def _account(self, p: Pending, bar) -> bool:
        """Book an update: step count, skip counters, the windows; True when the update was applied."""
        st, t = self.state, self.cfg.train
        if p.status == "oom":
            st.oom_skipped += 1
            return False
        if not bool(p.finite):
            self.bad_in_row += 1
            st.skipped_steps += 1
            self.log(f"step {st.step + 1}: non-finite loss or gradient, update skipped "
                     f"({self.bad_in_row} in a row, {st.skipped_steps} in all)")
            if self.bad_in_row >= t.max_bad_steps:
                raise TrainingError(diverged(self.bad_in_row, t))
            return False
        self.bad_in_row = 0
        st.step += 1
        self.window.add(p)
        bar.update(1)
        return True

    def _agree(self, flags: list[bool]) -> list[bool]:
        """Each flag true on any rank (identity in one process); read at log and validation steps only."""
        if self.dist.world == 1:
            return flags
        summed = all_reduce_sum(torch.tensor([float(f) for f in flags], device=self.device), self.dist)
        return [v > 0 for v in summed.tolist()]

    def _report(self, lr: float) -> None:
        """Read the device-side window sums (all ranks): progress bar, JSONL and TensorBoard lines."""
        w = self.window.read(self.dist)
        st = self.state
        st.window_loss += w["loss"]
        st.window_tokens += w["tokens"]
        if w["updates"] and self.dist.main:
            record = {"step": st.step, "train_loss": w["loss"] / max(w["tokens"], 1), "target_tokens": w["tokens"],
                      "lr": lr,
                      "tokens_per_s": w["all_tokens"] / max(w["seconds"], 1e-9),
                      "train_seconds": round(st.train_seconds, 2)}
            self.runlog.train(record)
            self.bar.set_postfix(loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                 lr=f"{lr:.2e}", refresh=False)

    def _validate_and_save(self, lr: float) -> Optional[str]:
        """Validate (rank 0), log, save a checkpoint; returns a reason to stop early, or None."""
        st, t = self.state, self.cfg.train
        result, improved = {}, False
        if self.dist.main:
            tick = time.perf_counter()
            final = (bool(t.max_steps) and st.step >= t.max_steps) or \
                (bool(t.max_minutes) and st.train_seconds >= t.max_minutes * 60)
            result = self.validator(self.model, st, autocast=self.update.autocast, final=final)
            if st.window_tokens:
                result["train_loss"] = st.window_loss / st.window_tokens  # label-smoothed, per target token
            result.update(epoch=st.epoch, lr=lr, precision=self.precision,
                          train_seconds=round(st.train_seconds, 2),
                          valid_seconds=round(time.perf_counter() - tick, 2), skipped_steps=st.skipped_steps)
            if st.oom_skipped:
                result["oom_skipped"] = st.oom_skipped
            improved = self.validator.improved(result, st)
            result["best"] = bool(improved)
            if "valid_nll" in result:
                self.schedule.on_validation(result["valid_nll"])
            st.history.append(result)
            self.runlog.validation(result)
        st.window_loss, st.window_tokens = 0.0, 0
        improved, schedule = broadcast_object([improved, self.schedule.state_dict()], self.dist)
        self.schedule.load_state_dict(schedule)
        if improved is not None:  # a loss-only validation between BLEU ones neither counts nor resets patience
            st.bad_validations = 0 if improved else st.bad_validations + 1
        self.save(is_best=bool(improved))
        if t.patience and st.bad_validations >= t.patience:
            return f"early stopping: no improvement in {st.bad_validations} validations"
        return None


def train(cfg: Config, *, resume: bool = False, progress: bool = True) -> TrainState:
    return Trainer(cfg, resume=resume, progress=progress).run()
