"""Options shared by the decoding commands (translate, reconstruct, evaluate) and the translator they build."""

from __future__ import annotations

import argparse


def add_search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=None, metavar="K",
                   help="beam size; 1 = greedy (default: the checkpoint's search.beam, usually 5)")
    g.add_argument("--nbest", type=int, default=1, metavar="N", help="hypotheses to print per input (<= beam)")
    g.add_argument("--length-penalty", type=float, default=None, metavar="ALPHA",
                   help="GNMT length penalty alpha; 0 = plain log-probability (default: checkpoint's)")
    g.add_argument("--max-len-a", type=float, default=None, help="max output length = a * |src| + b: the a")
    g.add_argument("--max-len-b", type=int, default=None, help="max output length = a * |src| + b: the b")
    g.add_argument("--min-len", type=int, default=None, help="minimum output length in pieces")
    g.add_argument("--batch-size", type=int, default=None, metavar="N", help="sentences per batch (default 64)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default), or bf16/fp16: weights cast once, autocast for the rest. bf16 is "
                        "~1.6x faster on CPUs with AVX512-BF16 or AMX and on GPUs; on Multi30k test2016 it "
                        "changed BLEU by -0.08 (Transformer) and -0.15 (attention RNN) (benchmarks/README.md); "
                        "fp16 is for GPUs")


def load_translator(args: argparse.Namespace, progress: bool):
    from seqed.inference import load_model
    from seqed.translator import Translator

    loaded = load_model(args.checkpoint, device=args.device)
    s = loaded.config.search
    beam = args.beam if args.beam is not None else s.beam
    if beam <= 0:
        raise ValueError(f"--beam must be positive, got {beam}")
    if args.nbest <= 0 or args.nbest > beam:
        raise ValueError(f"--nbest must be between 1 and the beam size ({beam}), got {args.nbest}")
    return Translator(loaded.model, loaded.tokenizer, device=loaded.device, beam_size=beam, nbest=args.nbest,
                      length_penalty=s.length_penalty if args.length_penalty is None else args.length_penalty,
                      max_len_a=s.max_len_a if args.max_len_a is None else args.max_len_a,
                      max_len_b=s.max_len_b if args.max_len_b is None else args.max_len_b,
                      min_len=s.min_len if args.min_len is None else args.min_len,
                      batch_size=args.batch_size or s.batch_size,
                      max_src_len=loaded.config.model.max_pieces, progress=progress,
                      max_len_cap=loaded.config.model.max_output_len,
                      precision=args.precision)
