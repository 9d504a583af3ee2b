"""One optimizer update, queued on the device: source noise and word dropout, forward and backward over
the micro-batches of a group (gradient accumulation), clipping, and the step, which is skipped on the
device when the loss or the gradient norm is not finite (so the host need not read anything)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from seqed.errors import TrainingError
from seqed.losses import label_smoothed_nll, masked_target
from seqed.noise import Noiser, word_dropout
from seqed.optim import grad_norm_clip, skip_on_device
from seqed.precision import autocast
from seqed.runtime import Dist, all_reduce_sum
from seqed.trainstate import Pending, oom_message
from seqed.vocab import PAD_ID


class Update:
    """Queues one optimizer update per call; the trainer reads its `Pending` outcome later.

    Args:
        net: what the forward runs through (the model, or its DDP / compiled wrapper).
        model: the bare model (gradient clipping).
        optimizer, scaler: the run's optimizer and gradient scaler (enabled for fp16 on CUDA only).
        device, dist: where the model lives, and this process's place among the ranks.
        log: a rank-0 message sink (an out-of-memory batch skipped under skip_oom).
        noiser: source corruption of a denoising run, or None.
        seed: `train.seed`; with the step and the rank it seeds the noise and the word dropout.
        precision: the resolved `train.precision` (`seqed.precision.resolve`): "fp32", "bf16" or "fp16".
        clip: the gradient norm bound (0: no clipping).
        label_smoothing: of the loss.
        kl_weight: the KL term's weight at a step (variational models), e.g. `bottleneck.kl_weight` bound
            to the annealing settings; None: 1.
        word_dropout: probability of replacing a decoder input token by UNK.
        loss_on: "all", or "masked" (only the source positions the noiser masked are scored).
        max_tokens: `train.max_tokens`, named in an out-of-memory message.
        skip_oom: skip a batch that runs out of CUDA memory (single process) instead of stopping.
    """

    def __init__(self, *, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, device: torch.device, dist: Dist, log: Callable[[str], None],
                 noiser: Optional[Noiser] = None, seed: int = 1, precision: str = "fp32", clip: float = 1.0,
                 label_smoothing: float = 0.1, kl_weight: Optional[Callable[[int], float]] = None,
                 word_dropout: float = 0.0, loss_on: str = "all", max_tokens: int = 0, skip_oom: bool = False):
        self.net, self.model, self.optimizer, self.scaler = net, model, optimizer, scaler
        self.noiser, self.device, self.dist, self.log = noiser, device, dist, log
        self.seed, self.precision, self.clip, self.label_smoothing = seed, precision, clip, label_smoothing
        self.kl_weight = kl_weight or (lambda step: 1.0)
        self.word_dropout, self.loss_on, self.max_tokens, self.skip_oom = word_dropout, loss_on, max_tokens, skip_oom

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def __call__(self, batches: list, step: int) -> Pending:
        """Queue the update that makes `step + 1` over `batches` (DDP syncs on the last one only).

        The update is skipped (on the device) when the loss or the gradient norm is not finite, and, with
        train.skip_oom in a single process, when a micro-batch runs out of CUDA memory.
        """
        self.net.train()
        tick = time.perf_counter()
        # Noise and word dropout draw from a generator seeded by (seed, step, rank): exact on resume.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + self.dist.rank)
        inputs = [self._model_inputs(b, gen) for b in batches]
        # Counted on the host, after corruption: with train.loss_on=masked only the masked positions count.
        n_tgt = sum(int((tgt_out != PAD_ID).sum()) for _, _, tgt_out in inputs)
        # Loss per micro-batch is a sum; scaling by world / global tokens makes DDP's gradient average the
        # mean over every target token of the global batch. The global count stays on the device.
        tokens = all_reduce_sum(torch.tensor(float(n_tgt), dtype=torch.float64, device=self.device), self.dist)
        scale = (self.dist.world / tokens.clamp(min=1)).float()
        beta = self.kl_weight(step)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, (batch, tensors) in enumerate(zip(batches, inputs)):
            try:
                loss += self._forward_backward(tensors, scale=scale, beta=beta,
                                               sync=i == len(batches) - 1 or self.dist.world == 1)
            except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError in torch >= 2.5
                oom = batch
                break
        else:
            oom = None
        if oom is not None:  # handled outside `except`, so the failed step's tensors are freed
            return self._out_of_memory(oom, step)
        self.scaler.unscale_(self.optimizer)
        norm = grad_norm_clip(self.model, self.clip)
        # Under DDP the gradients, hence the norm, are already equal on every rank: all ranks agree.
        finite = torch.isfinite(norm) & torch.isfinite(loss)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # the fp16 scaler skips non-finite steps itself
            self.scaler.update()
        else:
            skip_on_device(self.optimizer, finite)
        self.optimizer.zero_grad(set_to_none=True)
        n_all = sum(b.n_src_tokens + b.n_tgt_tokens for b in batches)
        return Pending("ok", loss, finite, n_tgt, n_all, time.perf_counter() - tick)

    def _model_inputs(self, batch, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(src, tgt_in, tgt_out) of a batch after source noise, masked targets and word dropout."""
        src, tgt_in, tgt_out = batch.src, batch.tgt_in, batch.tgt_out
        if self.noiser is not None:
            src, masked = self.noiser(src, gen)
            if self.loss_on == "masked":
                tgt_out = masked_target(tgt_out, masked)
        if self.word_dropout > 0:
            tgt_in = word_dropout(tgt_in, self.word_dropout, gen)
        return src, tgt_in, tgt_out

    def _forward_backward(self, tensors: tuple[Tensor, Tensor, Tensor], *, scale: Tensor, beta: float,
                          sync: bool) -> Tensor:
        """Forward and backward of one micro-batch; returns its summed label-smoothed loss, () on the device."""
        src, tgt_in, tgt_out = (x.to(self.device, non_blocking=True) for x in tensors)
        ctx = self.net.no_sync() if (not sync and hasattr(self.net, "no_sync")) else contextlib.nullcontext()
        with ctx:
            with self.autocast():
                if self.loss_on == "masked":
                    # Only the masked positions are scored: project just those to the vocabulary.
                    keep = tgt_out != PAD_ID  # (B, T)
                    out = self.net(src, tgt_in, keep)
                    tgt_out = tgt_out[keep]  # (N,), the order of out.logits' rows
                else:
                    out = self.net(src, tgt_in)
            lo = label_smoothed_nll(out.logits, tgt_out, smoothing=self.label_smoothing)
            loss = lo.loss if out.kl is None else lo.loss + beta * out.kl
            self.scaler.scale(loss * scale).backward()
        return lo.loss.detach().double()

    def _out_of_memory(self, batch, step: int) -> Pending:
        """Report (and with train.skip_oom, skip) a micro-batch that ran out of device memory."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        msg = oom_message(batch, step + 1, self.max_tokens)
        if not self.skip_oom or self.dist.world > 1:
            raise TrainingError(msg + (", or set train.skip_oom=true to skip such batches"
                                       if self.dist.world == 1 else ""))
        self.log(msg + "; batch skipped (train.skip_oom)")
        return Pending("oom")
