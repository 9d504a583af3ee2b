"""Training throughput of seqed on Multi30k: the full Trainer against a bare PyTorch step.

For each model (small Transformer, attention RNN), precision (fp32, bf16 autocast) and mode, one child
process trains for `--warmup` + `--steps` updates and reports, over the `--steps` updates after the
warm-up:

* source+target non-padding tokens/s (sources count their EOS, targets their EOS: the tokens the
  model reads and is scored on), target tokens/s, sentences/s, the padding fraction of the batches;
* the peak memory of the process (CPU: max resident set size; CUDA: `max_memory_allocated`).

Modes:
  trainer     `seqed.train.Trainer` itself (`train.max_steps`): data pipeline, schedule, clipping,
              everything between one update and the next; timed from the end of update `warmup` to
              the end of the last update (the final checkpoint is not timed).
  bare_data   the same model, optimizer and the same batches as the trainer (same tokenizer seed,
              sampler seed and order), all collated before the clock starts, in a plain
              forward/backward/clip/step loop: what the trainer would reach with a free pipeline.
  bare_fixed  one pre-built batch of `--bare-shape` BxSxT random ids without padding (default
              176x16x19, OpenNMT-py's average Multi30k batch in issue 5), repeated: the reference
              "plain PyTorch step" of issue 5.

    python benchmarks/train_throughput.py                        # all 12 measurements, ~25 min on 2 cores
    python benchmarks/train_throughput.py --models transformer --precisions fp32   # 3 of them, ~6 min

Writes benchmarks/results/train_throughput.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import BenchError

MODES = ("trainer", "bare_data", "bare_fixed")
SECTION = "train_throughput"


# ---------------------------------------------------------------------------------------------
# measurements (run in a child process each, so peak memory and thread state are per measurement)


def _summary(records: list[dict], warmup: int, t0: float, t_end: float, exclude: float = 0.0) -> dict:
    """Rates over the records after the warm-up; `t0` is when update `warmup` ended, `exclude` seconds of
    the window were spent by the benchmark itself (counting tokens) and are not the trainer's."""
    timed = records[warmup:]
    if not timed:
        raise BenchError(f"no update after the {warmup} warm-up updates: raise --steps")
    seconds = t_end - t0 - exclude
    tot = {k: sum(r[k] for r in timed) for k in ("src", "tgt", "sents", "padded")}
    real = tot["src"] + tot["tgt"]
    return {
        "timed_steps": len(timed), "seconds": round(seconds, 3),
        "src_tgt_tokens_per_s": real / seconds, "tgt_tokens_per_s": tot["tgt"] / seconds,
        "sentences_per_s": tot["sents"] / seconds, "steps_per_s": len(timed) / seconds,
        "padding_fraction": 1.0 - real / max(tot["padded"], 1),
        "tokens_per_step": real / len(timed), "sentences_per_step": tot["sents"] / len(timed),
        "src_tokens": tot["src"], "tgt_tokens": tot["tgt"], "sentences": tot["sents"],
    }


def _batch_record(batch) -> dict:
    n_src, n_tgt = batch.n_src_tokens, batch.n_tgt_tokens
    return {"src": n_src, "tgt": n_tgt, "sents": len(batch),
            "padded": batch.src.numel() + batch.tgt_out.numel()}


def _config(spec: dict, out_dir: str):
    from seqed.config import load_config

    extra = [f"out_dir={out_dir}", f"train.precision={spec['precision']}", f"train.threads={spec['threads']}",
             f"train.device={spec['device']}", f"train.max_steps={spec['warmup'] + spec['steps']}",
             f"train.valid_every={10 ** 9}", f"train.log_every={10 ** 9}", f"train.max_tokens={spec['max_tokens']}",
             "train.keep_last=1"]
    return load_config(None, benchlib.train_overrides(spec["model"], Path(spec["data"]), extra=extra))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_trainer(spec: dict) -> dict:
    """Run `Trainer` for warmup + steps updates, timing each update's end (checkpoint excluded)."""
    from seqed.train import Trainer

    with tempfile.TemporaryDirectory(prefix="seqed-bench-") as tmp:
        cfg = _config(spec, str(Path(tmp) / "run"))
        trainer = Trainer(cfg, progress=False)
        records, ends, own = [], [], []
        setup = trainer.setup

        def timed_setup():  # wraps the trainer's Update once it exists
            setup()
            step = trainer.update

            def timed_step(batches, at):
                out = step(batches, at)
                _sync(trainer.device)
                ends.append(time.perf_counter())
                rec = [_batch_record(b) for b in batches]
                records.append({k: sum(r[k] for r in rec) for k in rec[0]})
                own.append(time.perf_counter() - ends[-1])  # counting tokens is ours, not the trainer's
                return out

            timed_step.autocast = step.autocast  # validation asks the update for its precision
            trainer.update = timed_step

        trainer.setup = timed_setup  # instance attributes: run() calls them like the methods
        trainer.run()
        w = spec["warmup"]
        result = _summary(records, w, ends[w - 1], ends[-1], exclude=sum(own[w - 1:-1]))
        tok = trainer.tokenizer.to_dict()
        result.update(vocab_size=trainer.tokenizer.src_vocab_size, parameters=_count(trainer.model),
                      device=str(trainer.device), peak_memory_mb=benchlib.peak_memory_mb(trainer.device),
                      tokenizer_sha256=hashlib.sha256(tok["src_model"] + (tok["tgt_model"] or b"")).hexdigest())
        return result


def _count(model) -> int:
    from seqed.model import count_parameters

    return count_parameters(model)


def _bare_loop(spec: dict, cfg, model, batches: list, device) -> tuple[list[float], list[dict]]:
    """Plain forward / loss / backward / clip / step over pre-built batches; returns end times per update."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from seqed.optim import build_optimizer
    from seqed.vocab import PAD_ID

    t = cfg.train
    opt = build_optimizer(model.parameters(), name=t.optimizer, lr=1e-4, betas=t.betas, eps=t.eps,
                          weight_decay=t.weight_decay)
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if spec["precision"] == "bf16"
            else contextlib.nullcontext())
    moved = [(b.src.to(device), b.tgt_in.to(device), b.tgt_out.to(device), b.n_tgt_tokens) for b in batches]
    model.train()
    ends = []
    for src, tgt_in, tgt_out, n_tgt in moved:
        with cast:
            logits = model(src, tgt_in).logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=PAD_ID,
                               label_smoothing=t.label_smoothing, reduction="sum") / n_tgt
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        ends.append(time.perf_counter())
    return ends, [_batch_record(b) for b in batches]


def measure_bare(spec: dict) -> dict:
    import torch

    from seqed.data.batching import TokenBatchSampler, collate
    from seqed.model import build_model
    from seqed.data.pipeline import prepare_data
    from seqed.runtime import Dist, resolve_device, seed_everything

    cfg = _config(spec, "unused")
    benchlib.set_threads(spec["threads"])
    device = resolve_device(spec["device"], Dist())
    seed_everything(cfg.train.seed)
    n = spec["warmup"] + spec["steps"]
    if spec["mode"] == "bare_data":
        # Same tokenizer (seeded SentencePiece), filtering, sampler seed and epoch as the trainer run.
        prep = prepare_data(cfg, None, lambda msg: None)
        vocab = prep.tokenizer.src_vocab_size
        src_lens, tgt_lens = prep.train.lengths()
        sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens=cfg.train.max_tokens, shuffle=True,
                                    seed=cfg.train.seed)
        order = sampler.batches(0)
        if len(order) < n:
            raise BenchError(f"an epoch has {len(order)} batches, fewer than --warmup + --steps = {n}")
        batches = [prep.train.batch(idx) for idx in order[:n]]
    else:
        vocab = spec["vocab_size"]
        b, s, t = spec["bare_shape"]
        gen = torch.Generator().manual_seed(cfg.train.seed)
        src = torch.randint(4, vocab, (b, s - 1), generator=gen)  # (B, S-1) + EOS below
        tgt = torch.randint(4, vocab, (b, t - 1), generator=gen)  # (B, T-1) + BOS/EOS below
        one = collate(src.tolist(), tgt.tolist(), list(range(b)), append_src_eos=True)  # src (B, S), tgt (B, T)
        batches = [one] * n
    model = build_model(cfg, vocab, vocab).to(device)
    ends, records = _bare_loop(spec, cfg, model, batches, device)
    w = spec["warmup"]
    result = _summary(records, w, ends[w - 1], ends[-1])
    result.update(vocab_size=vocab, parameters=_count(model), device=str(device),
                  peak_memory_mb=benchlib.peak_memory_mb(device))
    return result


def child(spec: dict) -> dict:
    import torch

    benchlib.set_threads(spec["threads"])
    result = measure_trainer(spec) if spec["mode"] == "trainer" else measure_bare(spec)
    result["torch_threads"] = torch.get_num_threads()
    return result


# ---------------------------------------------------------------------------------------------
# driver


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=benchlib.thread_env(spec["threads"]))
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"measurement {spec['model']}/{spec['precision']}/{spec['mode']} failed "
                         f"(exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(payload: dict) -> str:
    rows = []
    ref = {}
    for r in payload["runs"]:
        if r["mode"] == "bare_data":
            ref[(r["model"], r["precision"])] = r["src_tgt_tokens_per_s"]
    for r in payload["runs"]:
        base = ref.get((r["model"], r["precision"]))
        vs = f"{r['src_tgt_tokens_per_s'] / base:.2f}" if base and r["mode"] != "bare_data" else ""
        rows.append([r["model"], r["precision"], r["mode"], r["src_tgt_tokens_per_s"], r["tgt_tokens_per_s"],
                     r["sentences_per_s"], f"{100 * r['padding_fraction']:.1f}%", r["tokens_per_step"],
                     r["peak_memory_mb"], vs])
    cfg = payload["config"]
    head = (f"{cfg['steps']} timed updates after {cfg['warmup']} warm-up updates, batches of {cfg['max_tokens']} "
            f"tokens, device {cfg['device']}, {cfg['threads']} threads. {benchlib.env_line(payload['environment'])}.")
    return head + "\n\n" + benchlib.md_table(
        ["model", "precision", "mode", "src+tgt tok/s", "tgt tok/s", "sent/s", "padding", "tokens/update",
         "peak MB", "/ bare_data"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["transformer", "rnn"], choices=sorted(benchlib.MODELS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--warmup", type=int, default=5, help="untimed updates first (default 5)")
    p.add_argument("--steps", type=int, default=30, help="timed updates (default 30)")
    p.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch (default 4096)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2; 0 = torch default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--bare-shape", default="176x16x19", help="BxSxT of the bare_fixed batch (EOS/BOS included)")
    benchlib.add_output_args(p, SECTION)
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.child:
            print(json.dumps(child(json.loads(args.child))))
            return 0
        benchlib.set_threads(args.threads)
        if args.warmup < 1 or args.steps < 1:
            raise BenchError("--warmup and --steps must be >= 1")
        try:
            shape = tuple(int(x) for x in args.bare_shape.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 2:
            raise BenchError(f"--bare-shape must look like 176x16x19 (B x S x T, S and T >= 2), "
                             f"got {args.bare_shape!r}")
        # bare_fixed reads no data: it needs only the model config (the corpus path is never opened).
        data = benchlib.data_dir() if set(args.modes) != {"bare_fixed"} else Path("unused")
        base = dict(data=str(data), warmup=args.warmup, steps=args.steps, max_tokens=args.max_tokens,
                    threads=args.threads, device=args.device, bare_shape=shape, vocab_size=8000)
        runs = []
        for model in args.models:
            for precision in args.precisions:
                for mode in args.modes:
                    spec = dict(base, model=model, precision=precision, mode=mode)
                    print(f"[train_throughput] {model} {precision} {mode} ...", file=sys.stderr, flush=True)
                    r = run_child(spec, args.timeout)
                    if mode != "bare_fixed":
                        base["vocab_size"] = r["vocab_size"]  # bare_fixed uses the real vocabulary size
                    runs.append(dict(model=model, precision=precision, mode=mode, **r))
                    print(f"[train_throughput]   {r['src_tgt_tokens_per_s']:.0f} src+tgt tok/s, "
                          f"{r['tgt_tokens_per_s']:.0f} tgt tok/s, padding {100 * r['padding_fraction']:.1f}%, "
                          f"peak {r['peak_memory_mb']:.0f} MB", file=sys.stderr, flush=True)
        payload = {"benchmark": SECTION, "config": {k: v for k, v in base.items() if k != "vocab_size"},
                   "models": {m: benchlib.MODELS[m] for m in args.models}, "common": benchlib.COMMON,
                   "environment": benchlib.environment(args.threads), "runs": runs}
        return benchlib.publish("train_throughput", SECTION, args.out, payload, table(payload),
                                readme=not args.no_readme)
    except (BenchError, subprocess.TimeoutExpired, FileNotFoundError) as err:
        return benchlib.fail("train_throughput", err)


if __name__ == "__main__":
    sys.exit(main())
