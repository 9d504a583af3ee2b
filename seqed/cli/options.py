"""Options shared by the decoding commands (translate, reconstruct, evaluate) and the translator they build."""

from __future__ import annotations

import argparse

from seqed.precision import CHOICES as PRECISIONS


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
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (default): bf16 where the device has native bf16 kernels (GPUs; CPUs with "
                        "AVX512-BF16 or AMX), else fp32. bf16/fp16: weights cast once, autocast for the rest; "
                        "bf16 is ~1.6x faster where native, and changed Multi30k test2016 BLEU by -0.08 "
                        "(Transformer) and -0.15 (attention RNN) (benchmarks/README.md); on a CPU that emulates "
                        "it, many times slower (a warning says so). fp16 is for GPUs")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """Sampling and alignment options (`seqed translate` only)."""
    g = p.add_argument_group("sampling and alignment")
    g.add_argument("--sampling", default=None, metavar="topk=K|topp=P",
                   help="sample instead of searching: from the K most probable pieces (topk=1 is greedy), or "
                        "from the nucleus of probability P (topp=1: the whole distribution); --nbest N "
                        "gives N independent samples per input, best score first (--beam is ignored)")
    g.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="sampling temperature, applied before topk/topp (default 1; < 1 sharpens)")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="sampling seed: the same seed, input and --batch-size give the same samples")
    g.add_argument("--print-alignment", action="store_true",
                   help="append ' ||| ' and a hard alignment in Pharaoh format to every output line, e.g. "
                        "'le chat ||| 0-0 1-1' (Moses' layout; fast_align's 'i-j' pairs: source piece i, "
                        "output piece j, both SentencePiece pieces counted from 0, EOS excluded): each output "
                        "piece's most-attended source piece, from RNN attention or the last Transformer "
                        "layer's cross-attention averaged over heads (ensembles: the members' mean). "
                        "Strip it with: sed 's/ ||| .*//'")


def load_translator(args: argparse.Namespace, progress: bool):
    """The translator the command's options describe (`seqed.loading.load_translator`, either engine).

    ``args.checkpoint`` is one path, or (translate's repeatable -c) a list of them: several give an
    ensemble. The options of `add_decoding_args` and translate's ``--engine`` / ``--quantization`` are
    read when present.
    """
    from seqed.loading import load_translator as load
    from seqed.quantize import QUANTIZATIONS as SEQED_QUANTIZATIONS

    search = dict(beam=args.beam, nbest=args.nbest, length_penalty=args.length_penalty, max_len_a=args.max_len_a,
                  max_len_b=args.max_len_b, min_len=args.min_len, batch_size=args.batch_size)
    seed = None
    if hasattr(args, "sampling"):  # translate's sampling and alignment options
        if args.sampling is None and (args.temperature is not None or args.seed is not None):
            raise ValueError("--temperature and --seed apply to sampling: add --sampling topk=K or --sampling topp=P")
        search.update(sampling=args.sampling, temperature=args.temperature, alignment=args.print_alignment or None)
        seed = args.seed
    engine = getattr(args, "engine", "seqed")
    quantization = getattr(args, "quantization", None)
    if engine == "seqed" and quantization not in (None, *SEQED_QUANTIZATIONS):
        raise ValueError(f"--quantization {quantization} needs --engine ctranslate2; seqed's own engine takes "
                         f"{', '.join(SEQED_QUANTIZATIONS)} (or --precision bf16)")
    if engine == "ctranslate2":
        if args.precision not in ("auto", "fp32"):
            raise ValueError(f"--precision {args.precision} is for --engine seqed; with --engine ctranslate2 use "
                             f"--quantization (e.g. bfloat16, int8)")
        for option, given in (("--sampling", args.sampling), ("--temperature", args.temperature),
                              ("--seed", args.seed), ("--print-alignment", args.print_alignment or None)):
            if given is not None:
                raise ValueError(f"{option} is for --engine seqed; --engine ctranslate2 runs greedy or beam search "
                                 f"without alignments")
    return load(args.checkpoint, engine=engine, device=args.device, precision=args.precision,
                quantization=getattr(args, "quantization", None), threads=getattr(args, "threads", 0),
                progress=progress and engine == "seqed", seed=seed, **search)
