"""The training loop: one optimizer update after another, with validation, checkpoints and exact resume.

One process or many (`torchrun ... -m seqed train`, DistributedDataParallel): every rank reads the
same data and takes its shard of each epoch's batches; only rank 0 logs, validates and saves. One
update (noise, forward, backward, clipping, the step) is `seqed/update.py`, the checkpoint format
`seqed/checkpoint.py`, validation `seqed/evaluate.py`, the process (devices, distributed helpers,
signals, RNG) `seqed/runtime.py`, the logs `seqed/runlog.py`, the run directory's lock `seqed/runlock.py`.
`build_run` wires the parts of a run (a `Run`); `Trainer._loop` is the loop.

On the device the loop keeps the GPU's queue full: losses and token counts are summed there and read
every `train.log_every` updates, and the non-finite guard skips an update on the device (fused AdamW's
`found_inf`). The host reads one flag per update (was the update applied?): the step count, and with it
the learning rate, the noise seed and the KL weight of the next update, depend on it.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml
from torch import nn
from tqdm import tqdm

from seqed.bottleneck import kl_weight
from seqed.checkpoint import (Checkpoint, init_weights, load_checkpoint, remove_stale_temps, restore_weights,
                              resume_checkpoint, save_step)
from seqed.config import Config, expand_path, to_dict
from seqed.data.batching import TokenBatchSampler
from seqed.data.pipeline import Prepared, prepare_data
from seqed.data.preprocess import build_missing, train_tokenizer
from seqed.errors import TrainingError
from seqed.evaluate import Validator
from seqed.model import EncoderDecoder, build_model, count_parameters
from seqed.noise import Noiser
from seqed.optim import Schedule, build_optimizer
from seqed.runlock import RunLock
from seqed.runlog import RunLog
from seqed.precision import resolve as resolve_precision
from seqed.precision import warn_if_emulated
from seqed.runtime import (Dist, StopSignals, all_reduce_sum, broadcast_object, device_kind, gather_rng,
                           init_distributed, resolve_device, seed_everything, set_rng_state, versions)
from seqed.tokenizer import Tokenizer
from seqed.trainstate import Budget, Pending, TrainState, Window, diverged
from seqed.update import Update
from seqed.vocab import UNK_ID


@dataclass
class Run:
    """The parts of one training run, wired by `build_run`; `Trainer._loop` drives them."""

    cfg: Config
    dist: Dist
    device: torch.device
    precision: str               # the resolved train.precision (`seqed.precision.resolve`)
    out: Path
    data: Prepared
    tokenizer: Tokenizer
    runlog: RunLog
    model: EncoderDecoder
    net: nn.Module               # what the forward runs through: the model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    sampler: TokenBatchSampler
    validator: Validator
    update: Update
    state: TrainState
    budget: Budget


def build_run(cfg: Config, dist: Dist, *, resume: bool = False, progress: bool = True,
              log: Callable[[str], None] = RunLog.message) -> Run:
    """Wire a run of `cfg` in this process (`dist`: its place among the ranks): a fresh one, or the one
    `cfg.out_dir/checkpoint_last.pt` continues (`resume`), or a fine-tuning one (`train.init_from`).

    Args:
        progress: show the data preparation's progress bars.
        log: the rank-0 message sink.
    """
    t, out = cfg.train, Path(cfg.out_dir)
    device = resolve_device(t.device, dist.local_rank)
    precision = resolve_precision(t.precision, device)  # "auto" -> bf16 where native, else fp32
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    ckpt = resume_checkpoint(out, to_dict(cfg), resume=resume)
    parent = load_checkpoint(expand_path(t.init_from)) if t.init_from and not ckpt else None
    seed_everything(t.seed)
    tokenizer = None
    if ckpt:
        tokenizer = Tokenizer.from_dict(ckpt["tokenizer"])
    elif parent and not cfg.tokenizer.model:  # fine-tuning reuses the parent's tokenizer unless told otherwise
        tokenizer = Tokenizer.from_dict(parent["tokenizer"])
        log(f"tokenizer from {t.init_from} ({tokenizer.src_vocab_size:,} source pieces): the tokenizer "
            f"section's training settings are not used")
    if cfg.data.binarized and dist.world > 1:  # rank 0 builds a missing store while the others wait
        failure = build_missing(cfg, log, tokenizer=tokenizer, progress=progress) if dist.main else None
        message = broadcast_object(None if failure is None else str(failure), dist)  # the first collective
        if failure is not None:
            raise failure
        if message is not None:
            raise TrainingError(f"rank 0 could not preprocess the training data: {message}")
    elif tokenizer is None and dist.world > 1:  # rank 0 trains it, every rank gets the same model
        tokenizer = Tokenizer.from_dict(broadcast_object(
            train_tokenizer(cfg, log).to_dict() if dist.main else None, dist))
    data = prepare_data(cfg, tokenizer, log, build=dist.world == 1)
    tokenizer = data.tokenizer
    log(data.report)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_temps(out):
            log(f"removed {p.name}, a partial checkpoint left by an earlier run that was killed")
        if not ckpt:
            tokenizer.save(out / "tokenizer")
            (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    runlog = RunLog(out, enabled=dist.main, tensorboard=t.tensorboard,
                    env={"versions": versions(), "seed": t.seed, "precision": precision}, fresh=not ckpt)
    model = build_model(cfg, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size).to(device)
    log(f"model: {cfg.model.encoder.type} encoder + {cfg.model.decoder.type} decoder, "
        f"{count_parameters(model):,} parameters, device {device}, precision {precision}"
        + (" (train.precision=auto)" if t.precision == "auto" else ""))
    warn_if_emulated(precision, device, setting="train.precision", log=log)
    optimizer = build_optimizer(model.parameters(), name=t.optimizer, lr=t.lr, betas=t.betas,
                                eps=t.eps, weight_decay=t.weight_decay)
    schedule = Schedule(optimizer, kind=t.schedule, lr=t.lr, warmup=t.warmup, factor=t.plateau_factor,
                        patience=t.plateau_patience, min_lr=t.min_lr, total=t.max_steps,
                        seconds=t.max_minutes * 60, decay_fraction=t.decay_fraction)
    scaler = torch.amp.GradScaler("cuda", enabled=(precision == "fp16" and device.type == "cuda"))
    src_lens, tgt_lens = data.train.lengths()
    sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens=t.max_tokens, max_sentences=t.max_sentences or None,
                                shuffle=True, seed=t.seed, num_shards=dist.world, shard_index=dist.rank,
                                pad_to_multiple=t.pad_to_multiple)
    state = TrainState()
    if ckpt:
        restore_weights(ckpt, model=model, optimizer=optimizer, schedule=schedule, scaler=scaler)
        state = _restored_state(ckpt, dist, device, log)
        schedule.set_step(state.step, state.train_seconds)
        runlog.truncate(state.step)  # drop the lines of steps the resumed run will redo
    elif parent:  # fine-tuning: the weights only
        init_weights(parent, t.init_from, model=model, tokenizer=tokenizer,
                     tokenizer_from=cfg.tokenizer.model or cfg.data.binarized or None)
        log(f"weights from {t.init_from}; fresh optimizer, schedule and step")
    if t.skip_oom and dist.world > 1:
        log("train.skip_oom has no effect with several processes: an out-of-memory batch stops training")
    net: nn.Module = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        # Opt-in: batch shapes vary, so compile for dynamic shapes; the first steps are slow.
        net = torch.compile(net, dynamic=True)
    noiser = (Noiser(cfg.data.noise, vocab_size=tokenizer.src_vocab_size, mask_id=UNK_ID)
              if cfg.data.noise.active else None)
    update = Update(net=net, model=model, optimizer=optimizer, scaler=scaler, device=device, dist=dist, log=log,
                    noiser=noiser, seed=t.seed, precision=precision, clip=t.clip,
                    label_smoothing=t.label_smoothing,
                    kl_weight=partial(kl_weight, kind=t.kl_anneal, steps=t.kl_anneal_steps, cycles=t.kl_cycles),
                    word_dropout=t.word_dropout, loss_on=t.loss_on, max_tokens=t.max_tokens, skip_oom=t.skip_oom)
    return Run(cfg=cfg, dist=dist, device=device, precision=precision, out=out, data=data, tokenizer=tokenizer,
               runlog=runlog, model=model, net=net, optimizer=optimizer, schedule=schedule, scaler=scaler,
               sampler=sampler,
               validator=Validator(cfg, data, tokenizer, device, precision=precision), update=update, state=state,
               budget=Budget(max_steps=t.max_steps, max_epochs=t.max_epochs, max_minutes=t.max_minutes))


def _restored_state(ckpt: dict, dist: Dist, device: torch.device, log: Callable[[str], None]) -> TrainState:
    """The checkpoint's progress (resharded for another world size) and this rank's random generators."""
    s = ckpt["train_state"]
    state = TrainState.from_dict(s)
    note = state.reshard(int(s.get("world", 1)), dist.world)
    if note:
        log(note)
    rng = ckpt["rng"]
    if dist.world > 1 and "per_rank" in rng and dist.rank < len(rng["per_rank"]):
        rng = rng["per_rank"][dist.rank]
    set_rng_state(rng, device)
    log(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")
    return state


class Trainer:
    """Trains `cfg` into `cfg.out_dir`; `run()` returns the final `TrainState`.

    Args:
        cfg: a validated config.
        resume: continue from `out_dir/checkpoint_last.pt`.
        progress: show a progress bar (rank 0 only).
        resume_command: the command line to print when a signal stops training.
        clock: seconds on a monotonic clock; the run's training seconds (`train.max_minutes`, wsd by the
            clock) are read from it (tests pass a fake one).

    After `setup()` the run's parts (`Run`) read as the trainer's own: `trainer.model`, `trainer.state`, ...
    After `run()`, `stop_signal` holds the signal that stopped training (SIGINT/SIGTERM), or None.
    """

    def __init__(self, cfg: Config, *, resume: bool = False, progress: bool = True,
                 resume_command: Optional[str] = None, clock: Callable[[], float] = time.perf_counter):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.resume = resume
        self.progress = progress
        self.resume_command = resume_command or f"seqed train <config> out_dir={shlex.quote(str(self.out))} --resume"
        self.clock = clock
        self.signals = StopSignals()
        self.dist = Dist()
        self.lock: Optional[RunLock] = None
        self._created = False  # the run directory did not exist before this run
        self.parts: Optional[Run] = None

    def __getattr__(self, name: str):
        parts = self.__dict__.get("parts")
        if parts is not None and name in Run.__dataclass_fields__:
            return getattr(parts, name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @property
    def stop_signal(self) -> Optional[int]:
        return self.signals.received

    def log(self, msg: str) -> None:
        if self.dist.main:
            RunLog.message(msg)

    def setup(self) -> None:
        """Join the ranks, lock the run directory (rank 0), and wire the run (`build_run`)."""
        t = self.cfg.train
        self.dist = init_distributed(device_kind(t.device), t.dist_timeout_minutes)
        if self.dist.main:
            self._created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock = RunLock(self.out, self.log).acquire()
        self.parts = build_run(self.cfg, self.dist, resume=self.resume, progress=self.progress, log=self.log)

    def save(self, is_best: bool) -> Path:
        """Write checkpoint_<step>.pt and point checkpoint_last.pt (and _best) at it (rank 0).

        Raises:
            TrainingError: the disk is full or not writable; the previous checkpoints are intact.
        """
        rng = gather_rng(self.device, self.dist)  # every rank joins the gather
        self.state.since_report = self.window.saved(self.dist)  # so is every rank's window
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
            if self.parts is not None:
                self.runlog.close()
            self._unlock()

    def _unlock(self) -> None:
        """Release the run directory; one this run created and left empty (a data error) goes too."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            if self._created and not any(self.out.iterdir()):
                self.out.rmdir()

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> TrainState:
        """Update after update until the budget is spent, a signal arrives, or validation stops the run."""
        t, st, budget = self.cfg.train, self.state, self.budget
        self.bar = tqdm(total=t.max_steps or None, initial=st.step, unit="step", dynamic_ncols=True,
                        desc="train", disable=not (self.progress and self.dist.main))
        self.window = Window(self.device)
        self.window.restore(st.since_report, self.dist)
        self.bad_in_row = 0
        self.agreed_seconds = st.train_seconds  # the clock a clock-driven schedule reads, equal on every rank
        session_start, start_seconds = self.clock(), st.train_seconds
        # A resumed run that had already spent its budget stops here, without one more update.
        stop = f"already {budget.reason}" if budget.exhausted(st) else None
        while stop is None:
            batches = self.sampler.batches(st.epoch, st.epoch_start)
            if len(batches) < t.accum and not st.epoch_start:
                raise TrainingError(f"an epoch has {len(batches)} batches, fewer than train.accum={t.accum} "
                                    f"(x {self.dist.world} processes): use more data or smaller train.max_tokens")
            while stop is None and st.batch_in_epoch + t.accum <= len(batches):
                group = [self.data.train.batch(idx, pad_to_multiple=t.pad_to_multiple)
                         for idx in batches[st.batch_in_epoch: st.batch_in_epoch + t.accum]]
                if self.device.type == "cuda":  # page-locked host memory: the copy overlaps compute
                    group = [b.pin_memory() for b in group]
                lr = self.schedule.set_step(st.step + 1, self.agreed_seconds)
                pending = self.update(group, st.step)
                st.batch_in_epoch += t.accum
                st.train_seconds = start_seconds + (self.clock() - session_start)
                applied = self._account(pending, self.bar)  # the one read of the device per update
                stop = self._after_update(applied, lr)
            if stop is None:
                st.epoch += 1
                st.batch_in_epoch = st.epoch_start = 0
                # The clock counts where the ranks agree on it (`_after_update`), the epochs here.
                stop = budget.reason if budget.exhausted(st, time_spent=False) else None
        self.bar.close()
        if stop == "interrupted":
            self.log(f"stopped by {self.signals.name} at step {st.step}; saved {self.out / 'checkpoint_last.pt'}. "
                     f"Resume with: {self.resume_command}")
        else:
            self.log(f"done: {stop} at step {st.step}; checkpoints in {self.out}")
            note = self.schedule.end_note(st.step, st.train_seconds)
            if note:
                self.log(note)
        return st

    def _after_update(self, applied: bool, lr: float) -> Optional[str]:
        """Report, validate and save when it is time; returns why training stops now, or None."""
        st, t, budget = self.state, self.cfg.train, self.budget
        reached, out_of_time = budget.steps_spent(st), budget.time_spent(st)
        validating = (applied and st.step % t.valid_every == 0) or reached
        if self.dist.world == 1:
            self.agreed_seconds = st.train_seconds
        if validating or (applied and st.step % t.log_every == 0):
            # Ranks agree on stopping (a signal or the clock may reach one rank first), and on the clock.
            interrupted, out_of_time = self._agree([self.signals.received is not None, out_of_time])
            self._report(lr)
        else:
            interrupted = self.dist.world == 1 and self.signals.received is not None
            out_of_time = out_of_time and self.dist.world == 1
        stop = None
        if validating or out_of_time:
            stop = self._validate_and_save(lr)
            if stop is None and budget.exhausted(st, time_spent=out_of_time):
                stop = budget.reason
        elif interrupted:
            self.save(is_best=False)  # no validation: a scheduler's grace period may be short
        return "interrupted" if interrupted else stop

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
        """Each flag true on any rank (identity in one process); read at log and validation steps only.

        Under torchrun the ranks also agree on the clock a clock-driven schedule reads (their mean).
        """
        if self.dist.world == 1:
            return flags
        values = [float(f) for f in flags] + [self.state.train_seconds]
        summed = all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=self.device), self.dist).tolist()
        self.agreed_seconds = summed[-1] / self.dist.world
        return [v > 0 for v in summed[:-1]]

    def _report(self, lr: float) -> None:
        """Read the device-side window sums (all ranks): progress bar, JSONL and TensorBoard lines."""
        w = self.window.read(self.dist)
        st = self.state
        st.loss_since_validation += w.loss
        st.tokens_since_validation += w.tokens
        if w.updates and self.dist.main:
            record = {"step": st.step, "train_loss": w.loss / max(w.tokens, 1), "target_tokens": w.tokens,
                      "lr": lr,
                      "tokens_per_s": w.all_tokens / max(w.seconds, 1e-9),
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
            final = self.budget.exhausted(st)  # the last validation always decodes for BLEU
            result = self.validator(self.model, st, autocast=self.update.autocast, final=final)
            if st.tokens_since_validation:
                result["train_loss"] = st.loss_since_validation / st.tokens_since_validation  # per target token
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
        st.loss_since_validation, st.tokens_since_validation = 0.0, 0
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
