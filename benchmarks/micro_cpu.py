"""CPU micro-benchmarks behind the speed claims in seqed's source comments.

Each claim is timed as two (or three) variants of the same operation, interleaved round by round so a
busy machine slows them alike; the median time per call is reported with the speed-up of the variant
seqed uses. The claims (where they are made):

* `seqed/dropout.py`: on CPU a uniform draw compared against p is faster than `F.dropout`'s
  `bernoulli_` mask (forward + backward on Transformer activations).
* `seqed/losses.py`: fused `F.cross_entropy(label_smoothing=...)` is faster than log_softmax + gather
  + mean for label-smoothed cross-entropy, in fp32 and bf16 (forward + backward, 4096 tokens x 8k).
* `seqed/layers.py` (`MultiHeadAttention.attend`): on CPU the math SDPA backend beats
  the flash kernel for short sequences, fp32 and bf16 (forward + backward, B=200, h=4, T=22, d=64).
* `seqed/layers.py` (`MultiHeadAttention.attend`, one query per row): in a decoding step
  on CPU, plain matmuls + softmax beat both SDPA kernels (forward only, beam-search shapes: 64
  sentences x beam 5 = 320 rows, h=4, 16 keys with padding, d=64).
* `seqed/optim.py`: the fused AdamW step is faster than the per-tensor for-loop (and the foreach
  variant) on the ~7.5M parameters of the 3+3-layer d256 Transformer.

    python benchmarks/micro_cpu.py              # ~1 minute on 2 cores

Writes benchmarks/results/micro_cpu.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import benchlib
from benchlib import BenchError

SECTION = "micro_cpu"


def interleaved(variants: dict[str, Callable[[], None]], *, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each variant; every round runs each variant `calls` times, in turn."""
    for fn in variants.values():  # warm-up: allocator, kernels, lazy init
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_dropout(rounds: int, calls: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from seqed.dropout import dropout

    out = []
    for shape in ((200, 22, 256), (200, 22, 1024)):
        x = torch.randn(*shape, requires_grad=True)
        g = torch.randn(*shape)

        def run(fn):
            def call():
                fn(x, 0.1, True).backward(g)
                x.grad = None
            return call

        t = interleaved({"F.dropout": run(F.dropout), "uniform mask": run(dropout)}, rounds=rounds, calls=calls)
        out.append({"claim": "seqed/dropout.py", "case": f"dropout p=0.1 fwd+bwd {tuple(shape)} fp32",
                    "baseline": "F.dropout", "seqed": "uniform mask", "times_s": t})
    return out


def smoothed_reference(logits, target, eps: float, pad: int):
    """Label-smoothed loss the classic way: log_softmax, gather the gold column, mean over the vocabulary."""
    import torch

    lprobs = torch.log_softmax(logits, dim=-1)  # (N, V)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,)
    smooth = -lprobs.mean(dim=-1)  # (N,)
    per_token = (1.0 - eps) * nll + eps * smooth
    return per_token.masked_fill(target == pad, 0.0).float().sum()


def bench_loss(rounds: int, calls: int) -> list[dict]:
    import torch

    from seqed.losses import label_smoothed_nll

    out = []
    n, v = 4096, 8000
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.randn(n, v).to(dtype).requires_grad_(True)
        target = torch.randint(4, v, (n,))
        target[::10] = 0  # some padding

        def ref():
            smoothed_reference(logits, target, 0.1, 0).backward()
            logits.grad = None

        def fused():
            label_smoothed_nll(logits, target, smoothing=0.1).loss.backward()
            logits.grad = None

        with torch.no_grad():
            a = smoothed_reference(logits.float(), target, 0.1, 0)
            b = label_smoothed_nll(logits.float(), target, smoothing=0.1).loss
        if not torch.allclose(a, b, rtol=1e-4):
            raise BenchError(f"the two label-smoothed losses disagree: {float(a)} vs {float(b)}")
        t = interleaved({"log_softmax+gather": ref, "F.cross_entropy": fused}, rounds=rounds, calls=calls)
        out.append({"claim": "seqed/losses.py", "case": f"label-smoothed CE fwd+bwd ({n}, {v}) "
                    f"{str(dtype).replace('torch.', '')}", "baseline": "log_softmax+gather",
                    "seqed": "F.cross_entropy", "times_s": t})
    return out


def bench_sdpa(rounds: int, calls: int) -> list[dict]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = []
    b, h, t, d = 200, 4, 22, 64
    lengths = torch.randint(t // 2, t + 1, (b,))
    pad_mask = (torch.arange(t) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(b, h, t, d).to(dtype).requires_grad_(True) for _ in range(3))
        g = torch.randn(b, h, t, d).to(dtype)
        for kind, kwargs in (("padding mask", {"attn_mask": pad_mask}), ("causal", {"is_causal": True})):
            def run(backend):
                def call():
                    with sdpa_kernel(backend):
                        F.scaled_dot_product_attention(q, k, v, **kwargs).backward(g)
                    q.grad = k.grad = v.grad = None
                return call

            times = interleaved({"flash": run(SDPBackend.FLASH_ATTENTION), "math": run(SDPBackend.MATH)},
                                rounds=rounds, calls=calls)
            out.append({"claim": "seqed/layers.py", "case": f"SDPA fwd+bwd B={b} h={h} T={t} d={d} "
                        f"{kind} {str(dtype).replace('torch.', '')}", "baseline": "flash", "seqed": "math",
                        "times_s": times})
    return out


def bench_decode_attention(rounds: int, calls: int) -> list[dict]:
    import math

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = []
    b, h, s, d = 320, 4, 16, 64
    lengths = torch.randint(s // 2, s + 1, (b,))
    mask = (torch.arange(s) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.randn(b, h, 1, d).to(dtype)
        k, v = (torch.randn(b, h, s, d).to(dtype) for _ in range(2))

        def sdpa(backend):
            def call():
                with torch.inference_mode(), sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return call

        def matmul():  # what MultiHeadAttention.attend runs for one query per row on CPU
            with torch.inference_mode():
                scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~mask, float("-inf"))
                torch.softmax(scores, dim=-1, dtype=torch.float32).nan_to_num(0.0).to(v.dtype) @ v

        times = interleaved({"math": sdpa(SDPBackend.MATH), "flash": sdpa(SDPBackend.FLASH_ATTENTION),
                             "matmul": matmul}, rounds=rounds, calls=calls)
        out.append({"claim": "seqed/layers.py", "case": f"decoding-step attention B={b} h={h} "
                    f"T=1 S={s} d={d} padding mask {str(dtype).replace('torch.', '')}", "baseline": "math",
                    "seqed": "matmul", "times_s": times})
    return out


def bench_adamw(rounds: int, calls: int) -> list[dict]:
    import torch

    from seqed.config import load_config
    from seqed.model import build_model, count_parameters

    cfg = load_config(None, benchlib.MODELS["transformer"])
    model = build_model(cfg, 8000, 8000)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opts = {name: torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-9, **kw)
            for name, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}),
                             ("fused", {"fused": True}))}
    times = interleaved({name: opt.step for name, opt in opts.items()}, rounds=rounds, calls=calls)
    return [{"claim": "seqed/optim.py", "case": f"AdamW step, {count_parameters(model):,} parameters "
             f"({len(params)} tensors) fp32", "baseline": "for-loop", "seqed": "fused", "times_s": times}]


BENCHES = {"dropout": bench_dropout, "loss": bench_loss, "sdpa": bench_sdpa, "decode_attention": bench_decode_attention,
           "adamw": bench_adamw}


def table(payload: dict) -> str:
    rows = []
    for r in payload["runs"]:
        t = r["times_s"]
        others = ", ".join(f"{k} {1e3 * v:.2f}" for k, v in t.items() if k not in (r["baseline"], r["seqed"]))
        rows.append([f"`{r['claim']}`", r["case"], f"{r['baseline']} {1e3 * t[r['baseline']]:.2f}",
                     f"{r['seqed']} {1e3 * t[r['seqed']]:.2f}", others,
                     f"{t[r['baseline']] / t[r['seqed']]:.2f}x"])
    cfg = payload["config"]
    head = (f"Median ms per call over {cfg['rounds']} interleaved rounds of {cfg['calls']} calls, "
            f"{cfg['threads']} threads. {benchlib.env_line(payload['environment'])}.")
    return head + "\n\n" + benchlib.md_table(
        ["claim in", "operation", "baseline (ms)", "seqed's choice (ms)", "other (ms)", "speed-up"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--calls", type=int, default=10, help="calls per variant per round (default 10)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    try:
        import torch

        if args.rounds < 1 or args.calls < 1:
            raise BenchError("--rounds and --calls must be >= 1")
        benchlib.set_threads(args.threads)
        torch.manual_seed(0)
        env = benchlib.environment(args.threads)
        runs = []
        for name in args.only:
            print(f"[micro_cpu] {name} ...", file=sys.stderr, flush=True)
            runs += BENCHES[name](args.rounds, args.calls)
        payload = {"benchmark": SECTION, "config": {"rounds": args.rounds, "calls": args.calls,
                                                    "threads": args.threads},
                   "environment": env, "loadavg_at_end": benchlib.environment()["loadavg"], "runs": runs}
        return benchlib.publish("micro_cpu", SECTION, args.out, payload, table(payload),
                                readme=not args.no_readme)
    except BenchError as err:
        return benchlib.fail("micro_cpu", err)


if __name__ == "__main__":
    sys.exit(main())
