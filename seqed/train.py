"""The training loop: data, model, optimisation, validation, checkpoints and exact resume.

One process or many (`torchrun ... -m seqed train`, DistributedDataParallel): every rank reads the
same data and takes its shard of each epoch's batches; only rank 0 logs, validates and saves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from seqed.checkpoint import CheckpointError, load_checkpoint, remove_stale_temps, rotate, save_atomic
from seqed.config import Config, config_from_dict, to_dict
from seqed.data.batching import TokenBatchSampler
from seqed.data.pipeline import prepare_data
from seqed.data.sources import load_corpus
from seqed.bottleneck import kl_weight
from seqed.losses import label_smoothed_nll, masked_target
from seqed.noise import Noiser, word_dropout
from seqed.model import EncoderDecoder, build_model, count_parameters
from seqed.optim import Schedule, build_optimizer, grad_norm_clip
from seqed.scoring import score
from seqed.runtime import (Dist, TrainingError, cpu_lacks_native, init_distributed, resolve_device, rng_state,
                           seed_everything, set_rng_state, versions)
from seqed.tokenizer import Tokenizer
from seqed.translator import Translator
from seqed.vocab import PAD_ID, UNK_ID


# ---------------------------------------------------------------------------------------------
# the trainer


@dataclass
class TrainState:
    """Everything about training progress that a checkpoint must restore for an exact resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0     # batches of this epoch already consumed (this rank's shard)
    best: Optional[float] = None
    bad_validations: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)
    skipped_steps: int = 0      # updates skipped for a non-finite loss or gradient
    oom_skipped: int = 0        # updates skipped for CUDA out-of-memory (train.skip_oom)
    window_loss: float = 0.0    # summed training loss (all ranks) since the last validation
    window_tokens: int = 0      # target tokens behind window_loss

    PERSISTENT = ("step", "epoch", "batch_in_epoch", "best", "bad_validations", "train_seconds", "history",
                  "skipped_steps", "oom_skipped", "window_loss", "window_tokens")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.PERSISTENT}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        state = cls(**{k: d[k] for k in cls.PERSISTENT if k in d})
        state.history = list(state.history)
        return state


@dataclass
class StepResult:
    """One optimizer update as this rank saw it.

    Attributes:
        status: "ok", "nonfinite" (update skipped) or "oom" (batch skipped, train.skip_oom).
        loss: summed label-smoothed loss of this rank's micro-batches.
        n_tgt: this rank's target tokens.
        n_all: this rank's source + target tokens.
    """

    status: str
    loss: float = 0.0
    n_tgt: int = 0
    n_all: int = 0


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
        self.stop_signal: Optional[int] = None
        self.dist = Dist()

    # -- setup ------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.dist.main:
            tqdm.write(f"[seqed] {msg}", file=sys.stderr)

    def setup(self) -> None:
        cfg = self.cfg
        kind = "cuda" if (cfg.train.device.startswith("cuda") or
                          (cfg.train.device == "auto" and torch.cuda.is_available())) else "cpu"
        self.dist = init_distributed(kind)
        self.device = resolve_device(cfg.train.device, self.dist)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        last = self.out / "checkpoint_last.pt"
        ckpt = None
        if self.resume:
            if not last.is_file():
                raise TrainingError(f"--resume: no {last}; start without --resume or point out_dir at the run")
            ckpt = load_checkpoint(last)
            stored = config_from_dict(ckpt["config"])
            changed = [f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in _config_diff(
                {"model": to_dict(stored.model), "tokenizer": to_dict(stored.tokenizer)},
                {"model": to_dict(cfg.model), "tokenizer": to_dict(cfg.tokenizer)})]
            if changed:
                raise TrainingError(f"--resume: the model/tokenizer config differs from the one in {last} "
                                    f"({'; '.join(changed)}): resume with the same model and tokenizer "
                                    f"(the train, data and search sections may change), or start a new out_dir")
        elif last.is_file():
            raise TrainingError(f"{self.out} already holds a run (checkpoint_last.pt): add --resume to continue "
                                f"it, or choose another out_dir")
        seed_everything(cfg.train.seed)
        tokenizer = Tokenizer.from_dict(ckpt["tokenizer"]) if ckpt else None
        if tokenizer is None and self.dist.world > 1:
            tokenizer = self._shared_tokenizer()
        self.data = prepare_data(cfg, tokenizer, self.log)
        self.tokenizer = self.data.tokenizer
        self.log(self.data.report)
        if self.dist.main:  # only now: a data error leaves no run directory behind
            self.out.mkdir(parents=True, exist_ok=True)
            for p in remove_stale_temps(self.out):
                self.log(f"removed {p.name}, a partial checkpoint left by an earlier run that was killed")
        if self.dist.main and not ckpt:
            self.tokenizer.save(self.out / "tokenizer")
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            (self.out / "env.json").write_text(json.dumps({"versions": versions(), "seed": cfg.train.seed,
                                                           "argv": sys.argv}, indent=2))
        self.model: EncoderDecoder = build_model(cfg, self.tokenizer.src_vocab_size,
                                                 self.tokenizer.tgt_vocab_size).to(self.device)
        self.log(f"model: {cfg.model.encoder.type} encoder + {cfg.model.decoder.type} decoder, "
                 f"{count_parameters(self.model):,} parameters, device {self.device}")
        t = cfg.train
        if self.device.type == "cpu" and t.precision in ("bf16", "fp16") and cpu_lacks_native(
                torch.bfloat16 if t.precision == "bf16" else torch.float16):
            self.log(f"warning: this CPU has no native {t.precision} kernels, so train.precision={t.precision} "
                     f"is emulated and many times slower than fp32: set train.precision=fp32")
        self.optimizer = build_optimizer(self.model.parameters(), name=t.optimizer, lr=t.lr, betas=t.betas,
                                         eps=t.eps, weight_decay=t.weight_decay)
        self.schedule = Schedule(self.optimizer, kind=t.schedule, lr=t.lr, warmup=t.warmup,
                                 factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(t.precision == "fp16" and self.device.type == "cuda"))
        src_lens, tgt_lens = self.data.train.lengths()
        self.sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens=t.max_tokens,
                                         max_sentences=t.max_sentences or None, shuffle=True, seed=t.seed,
                                         num_shards=self.dist.world, shard_index=self.dist.rank,
                                         pad_to_multiple=t.pad_to_multiple)
        self.noiser = None
        if cfg.data.noise.active:
            self.noiser = Noiser(cfg.data.noise, vocab_size=self.tokenizer.src_vocab_size, mask_id=UNK_ID)
        self.state = TrainState()
        if ckpt:
            self._restore(ckpt)
            if self.dist.main:  # drop the log lines of steps that the resumed run will redo
                _write_atomic(self.out / "train.log.jsonl",
                              "".join(json.dumps(r) + "\n" for r in self.state.history))
        if t.skip_oom and self.dist.world > 1:
            self.log("train.skip_oom has no effect with several processes: an out-of-memory batch stops training")
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if t.compile:
            # Opt-in: batch shapes vary, so compile for dynamic shapes; the first steps are slow.
            self.net = torch.compile(self.net, dynamic=True)

    def _shared_tokenizer(self) -> Tokenizer:
        """Rank 0 trains the tokenizer; the other ranks receive the same model."""
        import torch.distributed as dist

        box = [None]
        if self.dist.main:
            d = self.cfg.data
            s, t = load_corpus(d.train, src_lang=d.src_lang, tgt_lang=d.tgt_lang, strict=d.strict,
                               monolingual=d.monolingual)
            tc = self.cfg.tokenizer
            box[0] = Tokenizer.train([x for x in s if x], None if d.monolingual else [x for x in t if x],
                                     vocab_size=tc.vocab_size,
                                     model_type=tc.type, joint=tc.joint,
                                     character_coverage=tc.character_coverage, seed=self.cfg.train.seed).to_dict()
        dist.broadcast_object_list(box, src=0)
        return Tokenizer.from_dict(box[0])

    def _restore(self, ckpt: dict) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint does not match the model: {str(err).splitlines()[0]}") from None
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint's optimizer state does not match the model: {err}") from None
        self.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        s = ckpt["train_state"]
        self.state = TrainState.from_dict(s)
        saved_world = int(s.get("world", 1))
        if saved_world != self.dist.world:
            # Shard i takes batches i, i + world, ...: a rank position p covers the first p * world batches.
            consumed = self.state.batch_in_epoch * saved_world
            self.state.batch_in_epoch = consumed // self.dist.world
            self.log(f"the checkpoint was written by {saved_world} process(es), this run has {self.dist.world}: "
                     f"continuing after global batch {self.state.batch_in_epoch * self.dist.world} of epoch "
                     f"{self.state.epoch}; the run will not be bit-identical to an uninterrupted one")
        rng = ckpt["rng"]
        if self.dist.world > 1 and "per_rank" in rng and self.dist.rank < len(rng["per_rank"]):
            rng = rng["per_rank"][self.dist.rank]
        set_rng_state(rng, self.device)
        self.schedule.set_step(self.state.step)
        self.log(f"resumed from step {self.state.step} (epoch {self.state.epoch}, "
                 f"batch {self.state.batch_in_epoch})")

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_dict(self) -> dict:
        s = self.state
        rng = rng_state(self.device)
        if self.dist.world > 1:
            import torch.distributed as dist

            gathered = [None] * self.dist.world
            dist.all_gather_object(gathered, rng)
            rng = dict(rng, per_rank=gathered)
        return {
            "version": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "train_state": dict(s.to_dict(), world=self.dist.world),
            "rng": rng,
            "config": to_dict(self.cfg),
            "tokenizer": self.tokenizer.to_dict(),
            "versions": versions(),
        }

    def save(self, is_best: bool) -> Path:
        """Write checkpoint_<step>.pt and point checkpoint_last.pt (and _best) at it.

        Raises:
            TrainingError: the disk is full or not writable; the previous checkpoints are intact.
        """
        state = self.checkpoint_dict()  # every rank joins the RNG gather
        step_path = self.out / f"checkpoint_{self.state.step}.pt"
        if not self.dist.main:
            return step_path
        last = self.out / "checkpoint_last.pt"
        try:
            save_atomic(state, step_path)
            if is_best:  # best before last: a kill in between leaves `last` older, and resuming redoes the step
                _link_atomic(step_path, self.out / "checkpoint_best.pt")
            _link_atomic(step_path, last)
            rotate(self.out, self.cfg.train.keep_last)
        except OSError as err:
            raise TrainingError(
                f"cannot write checkpoint {step_path}: {err.strerror or err}. The previous checkpoint "
                f"({last.name if last.is_file() else 'none yet'}) is intact: free disk space or choose another "
                f"out_dir, then resume with: {self.resume_command}") from None
        return step_path

    # -- steps -----------------------------------------------------------------------------------
    def autocast(self):
        p = self.cfg.train.precision
        if p == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def train_step(self, batches: list) -> StepResult:
        """One optimizer update over `batches` (gradient accumulation; DDP syncs on the last one only).

        The update is skipped when the loss or the gradient norm is not finite (status "nonfinite"),
        and, with train.skip_oom in a single process, when a micro-batch runs out of CUDA memory.
        """
        self.net.train()
        t = self.cfg.train
        # Noise and word dropout draw from a generator seeded by (seed, step, rank): exact on resume.
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + self.state.step * 101 + self.dist.rank)
        inputs = [self._model_inputs(b, gen) for b in batches]
        # Counted after corruption: with train.loss_on=masked only the masked positions are targets.
        n_tgt_local = sum(int((tgt_out != PAD_ID).sum()) for _, _, tgt_out in inputs)
        n_tgt = n_tgt_local
        if self.dist.world > 1:
            import torch.distributed as dist

            count = torch.tensor([n_tgt_local], dtype=torch.float64, device=self.device)
            dist.all_reduce(count)
            n_tgt = int(count.item())
        # Loss per micro-batch is a sum; scaling by world / global tokens makes DDP's gradient average
        # equal the mean over every target token of the global batch.
        scale = self.dist.world / max(n_tgt, 1)
        beta = kl_weight(self.state.step, kind=t.kl_anneal, steps=t.kl_anneal_steps, cycles=t.kl_cycles)
        loss_total = 0.0
        oom_batch = None
        for i, (batch, tensors) in enumerate(zip(batches, inputs)):
            sync = i == len(batches) - 1 or self.dist.world == 1
            try:
                loss_total += self._forward_backward(tensors, scale=scale, beta=beta, sync=sync)
            except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError in torch >= 2.5
                oom_batch = batch
                break
        if oom_batch is not None:  # handled outside `except`, so the failed step's tensors are freed
            return self._out_of_memory(oom_batch)
        self.scaler.unscale_(self.optimizer)
        norm = grad_norm_clip(self.model, self.cfg.train.clip)
        # Under DDP the gradients, hence the norm, are already equal on every rank: all ranks agree.
        finite = bool(torch.isfinite(norm)) and math.isfinite(loss_total)
        if finite or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # the fp16 scaler skips non-finite steps itself
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        n_all = sum(b.n_src_tokens + b.n_tgt_tokens for b in batches)
        return StepResult("ok" if finite else "nonfinite", loss_total, n_tgt_local, n_all)

    def _model_inputs(self, batch, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(src, tgt_in, tgt_out) of a batch after source noise, masked targets and word dropout."""
        t = self.cfg.train
        src, tgt_in, tgt_out = batch.src, batch.tgt_in, batch.tgt_out
        if self.noiser is not None:
            src, masked = self.noiser(src, gen)
            if t.loss_on == "masked":
                tgt_out = masked_target(tgt_out, masked)
        if t.word_dropout > 0:
            tgt_in = word_dropout(tgt_in, t.word_dropout, gen)
        return src, tgt_in, tgt_out

    def _forward_backward(self, tensors: tuple[Tensor, Tensor, Tensor], *, scale: float, beta: float,
                          sync: bool) -> float:
        """Forward and backward of one micro-batch; returns its summed label-smoothed loss."""
        t = self.cfg.train
        src, tgt_in, tgt_out = (x.to(self.device, non_blocking=True) for x in tensors)
        ctx = self.net.no_sync() if (not sync and hasattr(self.net, "no_sync")) else contextlib.nullcontext()
        with ctx:
            with self.autocast():
                out = self.net(src, tgt_in)
            lo = label_smoothed_nll(out.logits, tgt_out, smoothing=t.label_smoothing)
            loss = lo.loss
            if out.kl is not None:
                loss = loss + beta * out.kl
            self.scaler.scale(loss * scale).backward()
        return float(lo.loss.detach())

    def _out_of_memory(self, batch) -> StepResult:
        """Report (and with train.skip_oom, skip) a micro-batch that ran out of device memory."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        t = self.cfg.train
        msg = (f"out of memory at step {self.state.step + 1} on a batch of {len(batch)} sentences: source "
               f"{tuple(batch.src.shape)}, target {tuple(batch.tgt_in.shape)} (sentences x padded tokens). Lower "
               f"train.max_tokens (now {t.max_tokens}; raise train.accum to keep the tokens per update)")
        if not t.skip_oom or self.dist.world > 1:
            hint = ", or set train.skip_oom=true to skip such batches" if self.dist.world == 1 else ""
            raise TrainingError(msg + hint)
        self.log(msg + "; batch skipped (train.skip_oom)")
        return StepResult("oom")

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss (per token, nll) and BLEU/chrF of greedy or beam output."""
        self.model.eval()
        data = self.data.valid
        result: dict = {"step": self.state.step}
        if data is None:
            return result
        src_lens, tgt_lens = data.lengths()
        sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens=max(self.cfg.train.max_tokens, 2048),
                                    shuffle=False, seed=0)
        nll, n, kl, n_kl = 0.0, 0, 0.0, 0
        for idx in sampler.batches(0):
            batch = data.batch(idx).to(self.device)
            with self.autocast():
                out = self.model(batch.src, batch.tgt_in)
            lo = label_smoothed_nll(out.logits, batch.tgt_out, smoothing=0.0)
            nll += float(lo.nll)
            n += lo.n_tokens
            if out.kl is not None:  # variational bottleneck: KL(q(z|x) || p(z)) summed over the batch
                kl, n_kl = kl + float(out.kl), n_kl + batch.src.size(0)
        result["valid_nll"] = nll / max(n, 1)
        result["valid_ppl"] = math.exp(min(result["valid_nll"], 50))
        if n_kl:
            t = self.cfg.train
            result["valid_kl"] = kl / n_kl  # nats per sentence
            result["kl_weight"] = kl_weight(self.state.step, kind=t.kl_anneal, steps=t.kl_anneal_steps,
                                            cycles=t.kl_cycles)
        if self.cfg.train.valid_bleu and self.data.valid_src:
            s = self.cfg.search
            translator = Translator(self.model, self.tokenizer, device=self.device,
                                    beam_size=self.cfg.train.valid_beam, length_penalty=s.length_penalty,
                                    max_len_a=s.max_len_a, max_len_b=s.max_len_b,
                                    batch_size=s.batch_size, max_src_len=self.cfg.model.max_pieces,
                                    max_len_cap=self.cfg.model.max_output_len)
            with self.autocast():
                hyps = [h[0][0] for h in translator.translate_text(self.data.valid_src)]
            sc = score(hyps, self.data.valid_ref)
            result.update(valid_bleu=sc.bleu, valid_chrf=sc.chrf)
        return result

    def _improved(self, result: dict) -> bool:
        """Track the best validation; the stored value is higher-is-better (BLEU, or -nll)."""
        if "valid_bleu" in result and self.cfg.train.early_stop_metric == "bleu":
            value = result["valid_bleu"]
        elif "valid_nll" in result:
            value = -result["valid_nll"]
        else:
            return True  # no validation data: the newest checkpoint is the best we know
        if self.state.best is None or value > self.state.best:
            self.state.best = value
            return True
        return False

    # -- main loop -------------------------------------------------------------------------------
    def _install_signals(self) -> dict:
        """SIGINT/SIGTERM: finish the current step, save a checkpoint, stop. A second one stops at once."""
        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            if self.dist.main:  # os.write: printing through sys.stderr from a handler can be reentrant
                os.write(2, f"[seqed] got {signal.Signals(signum).name}: finishing this step, then saving a "
                            f"checkpoint (send it again to stop at once, without saving)\n".encode())

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def run(self) -> TrainState:
        try:
            self.setup()
            old_handlers = self._install_signals() if _in_main_thread() else {}
            try:
                state = self._loop()
            finally:
                for s, h in old_handlers.items():
                    signal.signal(s, h)
            if self.dist.world > 1:
                import torch.distributed as dist

                dist.barrier()  # tear down together: rank 0 may still be writing the last checkpoint
            return state
        finally:
            if self.dist.world > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        """Element-wise sum over all processes (identity in a single process)."""
        if self.dist.world == 1:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def _loop(self) -> TrainState:
        t = self.cfg.train
        st = self.state
        bar = tqdm(total=t.max_steps or None, initial=st.step, disable=not (self.progress and self.dist.main),
                   unit="step", dynamic_ncols=True, desc="train")
        win_loss, win_tok, win_all, win_time = 0.0, 0, 0, 0.0  # progress-bar window (log_every steps)
        bad_in_row = 0
        stop_reason = None
        session_start = time.perf_counter()
        start_seconds = st.train_seconds
        # A resumed run that had already spent its budget stops here, without one more update.
        if t.max_steps and st.step >= t.max_steps:
            stop_reason = f"already reached train.max_steps={t.max_steps}"
        elif t.max_minutes and st.train_seconds >= t.max_minutes * 60:
            stop_reason = f"already reached train.max_minutes={t.max_minutes}"
        while stop_reason is None:
            if t.max_epochs and st.epoch >= t.max_epochs:
                stop_reason = f"reached train.max_epochs={t.max_epochs}"
                break
            batches = self.sampler.batches(st.epoch)
            if len(batches) < t.accum:
                raise TrainingError(f"an epoch has {len(batches)} batches, fewer than train.accum={t.accum} "
                                    f"(x {self.dist.world} processes): use more data or smaller train.max_tokens")
            pos = st.batch_in_epoch
            while pos + t.accum <= len(batches):
                tick = time.perf_counter()
                group = [self.data.train.batch(idx, pad_to_multiple=t.pad_to_multiple)
                         for idx in batches[pos: pos + t.accum]]
                if self.device.type == "cuda":  # page-locked host memory: the copy overlaps compute
                    group = [b.pin_memory() for b in group]
                lr = self.schedule.set_step(st.step + 1)
                result = self.train_step(group)
                pos += t.accum
                st.batch_in_epoch = pos
                st.train_seconds = start_seconds + (time.perf_counter() - session_start)
                out_of_time = bool(t.max_minutes) and st.train_seconds >= t.max_minutes * 60
                # Ranks agree on the global loss and on stopping (a signal or the clock may reach one rank first).
                loss, n_tgt, n_all, stop, out_of_time = self._sum_over_ranks(
                    [result.loss, result.n_tgt, result.n_all, self.stop_signal is not None, out_of_time])
                if stop and self.stop_signal is None:
                    self.stop_signal = signal.SIGTERM
                ok = result.status == "ok"
                if result.status == "oom":
                    st.oom_skipped += 1
                elif not ok:
                    bad_in_row += 1
                    st.skipped_steps += 1
                    self.log(f"step {st.step + 1}: non-finite loss or gradient, update skipped "
                             f"({bad_in_row} in a row, {st.skipped_steps} in all)")
                    if bad_in_row >= t.max_bad_steps:
                        raise TrainingError(
                            f"{bad_in_row} non-finite losses in a row (train.max_bad_steps): training diverged. "
                            f"Likely causes: learning rate too high (train.lr={t.lr}), too short warmup "
                            f"(train.warmup={t.warmup}), fp16 overflow (try train.precision=bf16 or fp32), no "
                            f"gradient clipping (train.clip={t.clip}), or corrupt data. Lower train.lr and start "
                            f"again, or continue from the last checkpoint (before the divergence) with --resume "
                            f"and a lower train.lr")
                else:
                    bad_in_row = 0
                    st.step += 1
                    st.window_loss += loss
                    st.window_tokens += int(n_tgt)
                    win_loss, win_tok = win_loss + loss, win_tok + int(n_tgt)
                    win_all, win_time = win_all + int(n_all), win_time + time.perf_counter() - tick
                    bar.update(1)
                    if st.step % t.log_every == 0 or st.step == 1:
                        bar.set_postfix(loss=f"{win_loss / max(win_tok, 1):.3f}",
                                        tok_s=f"{win_all / max(win_time, 1e-9):.0f}", lr=f"{lr:.2e}", refresh=False)
                        win_loss, win_tok, win_all, win_time = 0.0, 0, 0, 0.0
                reached = bool(t.max_steps) and st.step >= t.max_steps
                if (ok and st.step % t.valid_every == 0) or reached or out_of_time:
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
                st.batch_in_epoch = 0
        bar.close()
        if stop_reason == "interrupted":
            name = signal.Signals(self.stop_signal).name
            self.log(f"stopped by {name} at step {st.step}; saved {self.out / 'checkpoint_last.pt'}. "
                     f"Resume with: {self.resume_command}")
        else:
            self.log(f"done: {stop_reason} at step {st.step}; checkpoints in {self.out}")
        return st

    def _validate_and_save(self, lr: float) -> Optional[str]:
        """Validate (rank 0), log, save a checkpoint; returns a reason to stop early, or None."""
        st = self.state
        result = {}
        if self.dist.main:
            tick = time.perf_counter()
            result = self.validate()
            if st.window_tokens:
                result["train_loss"] = st.window_loss / st.window_tokens  # label-smoothed, per target token
            result.update(epoch=st.epoch, lr=lr, train_seconds=round(st.train_seconds, 2),
                          valid_seconds=round(time.perf_counter() - tick, 2), skipped_steps=st.skipped_steps)
            if st.oom_skipped:
                result["oom_skipped"] = st.oom_skipped
        st.window_loss, st.window_tokens = 0.0, 0
        improved = self._improved(result) if self.dist.main else False
        if self.dist.main:
            result["best"] = improved
            if "valid_nll" in result:
                self.schedule.on_validation(result["valid_nll"])
            st.history.append(result)
            with open(self.out / "train.log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
            shown = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in result.items()}
            self.log(f"validation {shown}")
        if self.dist.world > 1:
            import torch.distributed as dist

            box = [improved, self.schedule.state_dict()]
            dist.broadcast_object_list(box, src=0)
            improved = box[0]
            self.schedule.load_state_dict(box[1])
        st.bad_validations = 0 if improved else st.bad_validations + 1
        self.save(is_best=improved)
        if self.cfg.train.patience and st.bad_validations >= self.cfg.train.patience:
            return f"early stopping: no improvement in {st.bad_validations} validations"
        return None


def _link_atomic(src: Path, dst: Path) -> None:
    """Point `dst` at the same data as `src` (hard link, or a copy), replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _config_diff(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every leaf where two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _config_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))]
    return [] if a == b else [(prefix, a, b)]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def train(cfg: Config, *, resume: bool = False, progress: bool = True) -> TrainState:
    return Trainer(cfg, resume=resume, progress=progress).run()
