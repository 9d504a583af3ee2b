"""seqed on one GPU, in one command: the training step against plain PyTorch, the real Trainer on
Multi30k, and decoding in fp32 and bf16.

    python benchmarks/gpu.py                 # about 6 minutes on an H100/H200; data in $SEQED_DATA
    python benchmarks/gpu.py --smoke --device cpu --out /tmp/gpu.json   # a tiny run that checks the script

Three parts, measured in this one process:

1. step: one optimizer update at Transformer-base shape (6+6 layers, d512, 8 heads, FFN 2048, 32k shared
   vocabulary, 512 sentences x 32 source and 32 target tokens, bf16 autocast, fused AdamW), eager and
   `torch.compile`d: seqed's update (`seqed.update.Update`) and its bookkeeping against an in-file plain-PyTorch
   model (`nn.Transformer`, pre-norm) doing exactly the same work: dropout 0.1 (attention 0.1), label
   smoothing 0.1, the summed loss divided by the target tokens, gradient clipping at 1.0, fused AdamW.
   Target tokens/s over `--steps` updates after `--warmup`.
2. trainer: `seqed.train.Trainer` on Multi30k (`recipes/multi30k_en_fr/transformer_gpu.yaml`) for
   `--trainer-minutes`: target tokens/s from its log lines, and the share of the wall clock spent in
   validation.
3. decode: that run's best checkpoint on test2016, fp32 and bf16, greedy and beam 5 at batch 256 (and
   batch 1 on the first 100 sentences): sentences/s and BLEU.

Writes benchmarks/results/gpu.json and the `gpu` table in benchmarks/README.md. Needs torch,
sentencepiece, sacrebleu, pyyaml and tqdm (not `datasets`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import BenchError

SECTION = "gpu"
BASE = dict(layers=6, d_model=512, heads=8, ffn=2048, vocab=32000, batch=512, src_len=32, tgt_len=32)
SMOKE = dict(layers=1, d_model=32, heads=4, ffn=64, vocab=300, batch=8, src_len=9, tgt_len=11)
PAD, BOS = 0, 2  # seqed.vocab.PAD_ID, BOS_ID


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# 1. the training step


def _batch(shape: dict, device, seed: int = 0):
    """A seqed Batch of random ids (no padding: every sentence has the full lengths), pinned on CUDA."""
    import torch

    from seqed.data.batching import Batch

    g = torch.Generator().manual_seed(seed)
    B, S, T = shape["batch"], shape["src_len"], shape["tgt_len"]
    src = torch.randint(4, shape["vocab"], (B, S), generator=g)
    tgt = torch.randint(4, shape["vocab"], (B, T), generator=g)
    tgt_in = torch.cat([torch.full((B, 1), BOS), tgt[:, :-1]], dim=1)
    batch = Batch(src, tgt_in, tgt, torch.arange(B))
    return batch.pin_memory() if device.type == "cuda" else batch


def _seqed_config(shape: dict, precision: str, compile_: bool):
    from seqed.config import config_from_dict

    layer = dict(type="transformer", layers=shape["layers"], hidden=shape["d_model"], heads=shape["heads"],
                 ffn=shape["ffn"], dropout=0.1, attention_dropout=0.1)
    return config_from_dict({
        "out_dir": "unused", "model": {"encoder": dict(layer), "decoder": dict(layer), "share_embeddings": True,
                                       "tie_output": True},
        "train": {"precision": precision, "compile": compile_, "lr": 5e-4, "warmup": 4000, "clip": 1.0,
                  "label_smoothing": 0.1, "max_tokens": max(shape["batch"] * shape["tgt_len"], 1024)}})


def seqed_step(shape: dict, device, *, precision: str, compile_: bool, steps: int, warmup: int) -> dict:
    """seqed's update (`seqed.update.Update`) and the loop's per-update bookkeeping on one pre-built batch."""
    import torch

    from seqed.model import build_model
    from seqed.optim import Schedule, build_optimizer
    from seqed.runtime import Dist
    from seqed.train import Trainer
    from seqed.trainstate import TrainState, Window
    from seqed.update import Update

    cfg = _seqed_config(shape, precision, compile_)
    t = cfg.train
    trainer = Trainer(cfg, progress=False)
    trainer.device, trainer.dist = device, Dist()
    trainer.model = build_model(cfg, shape["vocab"], shape["vocab"]).to(device)
    net = torch.compile(trainer.model, dynamic=True) if compile_ else trainer.model  # as Trainer.setup
    optimizer = build_optimizer(trainer.model.parameters(), lr=t.lr, betas=t.betas, eps=t.eps)
    trainer.schedule = Schedule(optimizer, kind=t.schedule, lr=t.lr, warmup=t.warmup)
    trainer.update = Update(net=net, model=trainer.model, optimizer=optimizer,
                            scaler=torch.amp.GradScaler("cuda", enabled=False), device=device, dist=trainer.dist,
                            log=print, seed=t.seed, precision=precision, clip=t.clip,
                            label_smoothing=t.label_smoothing, max_tokens=t.max_tokens)
    trainer.state, trainer.window, trainer.bad_in_row = TrainState(), Window(device), 0
    bar = type("Bar", (), {"update": lambda self, n: None})()
    batch = _batch(shape, device)

    def update():
        trainer.schedule.set_step(trainer.state.step + 1)
        trainer._account(trainer.update([batch], trainer.state.step), bar)

    return _time(update, device, steps=steps, warmup=warmup, tokens=shape["batch"] * shape["tgt_len"],
                 params=sum(p.numel() for p in trainer.model.parameters()))


class PlainTransformer:
    """The reference: `nn.Transformer` (pre-norm) with shared, scaled embeddings, sinusoidal positions and
    a tied output projection; the same sizes and dropout as seqed's model."""

    @staticmethod
    def build(shape: dict, device):
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                d = shape["d_model"]
                self.embed = nn.Embedding(shape["vocab"], d, padding_idx=PAD)
                nn.init.normal_(self.embed.weight, std=d ** -0.5)
                self.core = nn.Transformer(d, shape["heads"], shape["layers"], shape["layers"], shape["ffn"],
                                           dropout=0.1, batch_first=True, norm_first=True)
                self.drop = nn.Dropout(0.1)
                pos = torch.arange(1024)[:, None] * torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
                pe = torch.zeros(1024, d)
                pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos)
                self.register_buffer("pe", pe, persistent=False)

            def emb(self, x):
                return self.drop(self.embed(x) * math.sqrt(self.embed.embedding_dim) + self.pe[: x.size(1)])

            def forward(self, src, tgt_in):
                T = tgt_in.size(1)
                causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu(1)  # True = masked
                h = self.core(self.emb(src), self.emb(tgt_in), tgt_mask=causal, src_key_padding_mask=src == PAD,
                              tgt_key_padding_mask=tgt_in == PAD, memory_key_padding_mask=src == PAD)
                return h @ self.embed.weight.t()  # (B, T, V), tied

        return Model().to(device)


def plain_step(shape: dict, device, *, precision: str, compile_: bool, steps: int, warmup: int) -> dict:
    """The 60-line plain-PyTorch loop: forward, label-smoothed summed loss / tokens, backward, clip, step."""
    import torch
    import torch.nn.functional as F

    model = PlainTransformer.build(shape, device)
    net = torch.compile(model, dynamic=True) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0,
                            fused=True)
    batch = _batch(shape, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def update():
        src, tgt_in, tgt_out = (x.to(device, non_blocking=True) for x in (batch.src, batch.tgt_in, batch.tgt_out))
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            logits = net(src, tgt_in)
        n = (tgt_out != PAD).sum()
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
                               label_smoothing=0.1, reduction="sum")
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time(update, device, steps=steps, warmup=warmup, tokens=shape["batch"] * shape["tgt_len"],
                 params=sum(p.numel() for p in model.parameters()))


def _time(update, device, *, steps: int, warmup: int, tokens: int, params: int) -> dict:
    for _ in range(warmup):
        update()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        update()
    _sync(device)
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds": round(seconds, 3), "target_tokens_per_s": round(steps * tokens / seconds),
            "parameters": params}


# ---------------------------------------------------------------------------------------------
# 2. the Trainer on Multi30k, 3. decoding


def trainer_run(data: Path, out: Path, *, minutes: float, device: str, smoke: bool) -> dict:
    from seqed.config import load_config
    from seqed.runlog import read_records
    from seqed.train import Trainer

    overrides = [f"out_dir={out}", f"train.max_minutes={minutes}", f"train.device={device}"]
    if smoke:
        overrides += ["model.encoder.layers=1", "model.decoder.layers=1", "model.encoder.hidden=32",
                      "model.decoder.hidden=32", "model.encoder.heads=2", "model.decoder.heads=2",
                      "model.encoder.ffn=64", "model.decoder.ffn=64", "tokenizer.vocab_size=200",
                      "train.valid_every=20", "train.log_every=5", "train.max_steps=40", "train.precision=fp32",
                      "train.max_tokens=1024"]
    os.environ["SEQED_DATA"] = str(data)  # the recipe reads $SEQED_DATA/multi30k
    cfg = load_config(benchlib.REPO / "recipes" / "multi30k_en_fr" / "transformer_gpu.yaml", overrides)
    state = Trainer(cfg, progress=False).run()
    lines = read_records(out / "train.log.jsonl", event="train")
    valids = read_records(out / "train.log.jsonl")
    seconds = sum(v["valid_seconds"] for v in valids)
    tokens = sum(r["target_tokens"] for r in lines)
    return {"updates": state.step, "train_seconds": round(state.train_seconds, 1),
            "validations": len(valids), "valid_seconds": round(seconds, 1),
            "valid_share": round(seconds / max(state.train_seconds, 1e-9), 4),
            "target_tokens_per_s": round(tokens / max(state.train_seconds - seconds, 1e-9)),
            "best_valid_bleu": max((v.get("valid_bleu", 0.0) for v in valids), default=None)}


def decoding(ckpt: Path, data: Path, device: str, *, limit: int | None) -> list[dict]:
    from decode_throughput import measure

    from seqed.loading import load_model

    src = (data / "multi30k" / "test2016.en").read_text(encoding="utf-8").splitlines()
    ref = (data / "multi30k" / "test2016.fr").read_text(encoding="utf-8").splitlines()
    if limit:
        src, ref = src[:limit], ref[:limit]
    loaded = load_model(str(ckpt), device=device)
    rows = []
    for precision in ("fp32", "bf16"):
        for beam in (1, 5):
            for batch, n in ((256, len(src)), (1, min(100, len(src)))):
                r = measure(loaded, src[:n], ref[:n], beam=beam, batch_size=batch, precision=precision,
                            warmup=min(n, 32))
                r.pop("output")
                rows.append(dict(precision=precision, beam=beam, batch_size=batch, **r))
    return rows


# ---------------------------------------------------------------------------------------------


def table(payload: dict) -> str:
    env = benchlib.env_line(payload["environment"])
    steps = payload["step"]
    rows = []
    for mode in ("eager", "compiled"):
        s, p = steps.get(f"seqed_{mode}"), steps.get(f"plain_{mode}")
        if s and p:
            rows.append([mode, s["target_tokens_per_s"], p["target_tokens_per_s"],
                         f"{s['target_tokens_per_s'] / p['target_tokens_per_s']:.2f}x"])
    out = [f"Measured by `python benchmarks/gpu.py` ({env}).", "",
           "Training step at " + ", ".join(f"{k} {v}" for k, v in payload["shape"].items()) + ":", "",
           benchlib.md_table(["mode", "seqed target tok/s", "plain PyTorch tok/s", "seqed / plain"], rows)]
    tr = payload.get("trainer")
    if tr:
        out += ["", f"Trainer on Multi30k ({tr['train_seconds']} s): {tr['updates']} updates, "
                    f"{tr['target_tokens_per_s']} target tok/s between validations, {tr['validations']} "
                    f"validations taking {tr['valid_share'] * 100:.1f}% of the time, best valid BLEU "
                    f"{tr['best_valid_bleu']}."]
    dec = payload.get("decode")
    if dec:
        out += ["", benchlib.md_table(["precision", "beam", "batch", "sentences/s", "BLEU"],
                                      [[d["precision"], d["beam"], d["batch_size"], round(d["sentences_per_s"], 1),
                                        d["bleu"]] for d in dec])]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu with --smoke")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and runs: checks the script, measures nothing")
    ap.add_argument("--steps", type=int, default=30, help="timed updates per step measurement")
    ap.add_argument("--warmup", type=int, default=10, help="untimed updates first (compilation happens here)")
    ap.add_argument("--trainer-minutes", type=float, default=2.0)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled step measurements")
    ap.add_argument("--out", default=str(benchlib.BENCH / "results" / "gpu.json"))
    args = ap.parse_args(argv)
    try:
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise BenchError("no CUDA device here: this benchmark measures a GPU (--smoke --device cpu only "
                             "checks that it runs)")
        if args.device == "cpu" and not args.smoke:
            raise BenchError("--device cpu is for --smoke runs; the numbers this script reports are GPU numbers")
        device = torch.device(args.device)
        shape = SMOKE if args.smoke else BASE
        precision = "fp32" if args.smoke else "bf16"
        steps = 2 if args.smoke else args.steps
        warmup = 1 if args.smoke else args.warmup
        data = benchlib.data_dir()
        payload = {"environment": benchlib.environment(), "revision": benchlib.git_revision(), "shape": shape,
                   "precision": precision, "smoke": args.smoke, "step": {}}
        if device.type == "cuda":
            payload["gpu"] = torch.cuda.get_device_name(device)
        for compile_ in ([False] if args.no_compile or args.smoke else [False, True]):
            mode = "compiled" if compile_ else "eager"
            for name, fn in (("seqed", seqed_step), ("plain", plain_step)):
                payload["step"][f"{name}_{mode}"] = fn(shape, device, precision=precision, compile_=compile_,
                                                       steps=steps, warmup=warmup)
                print(f"[gpu] {name} {mode}: {payload['step'][f'{name}_{mode}']}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="seqed-gpu-") as tmp:
            run = Path(tmp) / "run"
            payload["trainer"] = trainer_run(data, run, minutes=args.trainer_minutes, device=args.device,
                                             smoke=args.smoke)
            payload["decode"] = decoding(run / "checkpoint_best.pt", data, args.device,
                                         limit=20 if args.smoke else None)
        return benchlib.publish("gpu.py", SECTION, args.out, payload, table(payload), readme=not args.smoke)
    except BenchError as err:
        return benchlib.fail("gpu.py", err)


if __name__ == "__main__":
    sys.exit(main())
