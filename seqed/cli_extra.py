"""Autoencoder commands: encode, reconstruct, sample, interpolate, evaluate."""

from __future__ import annotations

import argparse
import json
import sys

from seqed.cli import _add_search_args, _chunks, _open_in, _open_out, load_translator


def register(sub) -> None:
    p = sub.add_parser("encode", help="write the fixed code of every sentence to a .npy file",
                       description="Encode one sentence per line into its fixed code vector (memory.code after "
                                   "the bottleneck; the posterior mean for variational models). Works with any "
                                   "checkpoint, translation models included. Rows follow input order.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", required=True, help="output .npy file, float32 (N, C)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("reconstruct", help="rebuild (or complete corrupted) sentences with an autoencoder",
                       description="Decode each input sentence from its own encoding. With --noise the input is "
                                   "first corrupted (e.g. --noise mask=0.15) and each output line is "
                                   "'CORRUPTED<TAB>REBUILT': pattern completion.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--noise", default="", help="corruption spec, e.g. 'mask=0.15' or 'drop=0.1,shuffle_k=3'")
    p.add_argument("--seed", type=int, default=1, help="seed of the corruption")
    _add_search_args(p)
    p.set_defaults(func=cmd_reconstruct, nbest=1)

    p = sub.add_parser("sample", help="sample sentences from a variational autoencoder's prior",
                       description="Draw z ~ N(0, I) and decode each (greedy unless --beam).")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("-n", type=int, default=10, help="number of samples")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior's standard deviation")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--max-len", type=int, default=60)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("interpolate", help="decode points on the line between two sentences' codes",
                       description="Encode sentences A and B (posterior means), walk K evenly spaced points "
                                   "from A to B (linear, or --slerp) and decode each point.")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("sentence_a")
    p.add_argument("sentence_b")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--slerp", action="store_true", help="spherical interpolation")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--max-len", type=int, default=60)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("evaluate", help="reconstruction metrics of an autoencoder on a text file",
                       description="Token accuracy, exact match, BLEU and chrF of reconstructions, overall and by "
                                   "sentence length; for variational models also KL, NLL, ELBO and active "
                                   "units. With --noise, metrics of completing corrupted inputs.")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("-i", "--input", required=True, help="one sentence per line")
    p.add_argument("--noise", default="", help="corrupt inputs first, e.g. mask=0.15")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    _add_search_args(p)
    p.set_defaults(func=cmd_evaluate, nbest=1)


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from seqed.autoencoder import encode_sentences
    from seqed.inference import load_model

    loaded = load_model(args.checkpoint, device=args.device)
    src = _open_in(args.input)
    lines = [line.rstrip("\r\n") for line in src]
    vectors = encode_sentences(loaded.model, loaded.tokenizer, lines, batch_size=args.batch_size,
                               device=loaded.device, max_len=loaded.config.model.max_positions - 2)
    np.save(args.output, vectors)
    print(f"wrote {vectors.shape[0]} codes of size {vectors.shape[1] if vectors.ndim == 2 else 0} to "
          f"{args.output}", file=sys.stderr)
    return 0


def _corrupt(translator, lines: list[str], spec: str, seed: int) -> tuple[list[list[int]], list[str]]:
    """Token ids of the corrupted inputs and their text, with the model's own tokenizer."""
    import torch

    from seqed.data.batching import collate
    from seqed.noise import Noiser, parse_noise
    from seqed.vocab import EOS_ID, PAD_ID, UNK_ID

    tok = translator.tokenizer
    ids = tok.encode_src(lines)
    noiser = Noiser(parse_noise(spec), vocab_size=tok.src_vocab_size, mask_id=UNK_ID)
    src = collate([x + [EOS_ID] for x in ids], [[] for _ in ids], list(range(len(ids)))).src
    noisy, _ = noiser(src, torch.Generator().manual_seed(seed))
    out = [[t for t in row.tolist() if t not in (PAD_ID, EOS_ID)] for row in noisy]
    return out, [tok.decode_src([o])[0] if o else "" for o in out]


def cmd_reconstruct(args: argparse.Namespace) -> int:
    translator = load_translator(args, progress=args.input != "-" and args.output != "-")
    out = _open_out(args.output)
    try:
        for chunk in _chunks((line.rstrip("\r\n") for line in _open_in(args.input)), 2000):
            if args.noise:
                noisy_ids, noisy_text = _corrupt(translator, chunk, args.noise, args.seed)
                hyps = translator.translate_ids(noisy_ids)
                texts = translator.tokenizer.decode_tgt([h[0].tokens for h in hyps])
                for corrupted, rebuilt in zip(noisy_text, texts):
                    out.write(f"{corrupted}\t{rebuilt}\n")
            else:
                for nbest in translator.translate_text(chunk):
                    out.write(nbest[0][0] + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from seqed.autoencoder import decode_latents
    from seqed.inference import load_model

    if args.n <= 0:
        raise ValueError(f"-n must be positive, got {args.n}")
    loaded = load_model(args.checkpoint, device=args.device)
    bottleneck = loaded.model.bottleneck
    if bottleneck is None or not hasattr(bottleneck, "posterior"):
        raise ValueError(f"{args.checkpoint}: sampling needs a variational model (model.bottleneck=variational)")
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, bottleneck.code_size, generator=gen) * args.temperature
    hyps = decode_latents(loaded.model, z.to(loaded.device), beam_size=args.beam, max_len=args.max_len)
    for text in loaded.tokenizer.decode_tgt([h.tokens for h in hyps]):
        print(text)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from seqed.autoencoder import decode_latents, encode_sentences, interpolation_path
    import torch

    from seqed.inference import load_model

    loaded = load_model(args.checkpoint, device=args.device)
    codes = torch.from_numpy(encode_sentences(loaded.model, loaded.tokenizer, [args.sentence_a, args.sentence_b],
                                              device=loaded.device))
    path = interpolation_path(codes[0], codes[1], args.steps, spherical=args.slerp)
    hyps = decode_latents(loaded.model, path.to(loaded.device), beam_size=args.beam, max_len=args.max_len)
    texts = loaded.tokenizer.decode_tgt([h.tokens for h in hyps])
    for t, text in zip(torch.linspace(0, 1, args.steps).tolist(), texts):
        print(f"{t:.2f}\t{text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seqed.autoencoder import reconstruction_report, variational_report

    translator = load_translator(args, progress=True)
    lines = [line.rstrip("\r\n") for line in _open_in(args.input)]
    lines = [x for x in lines if x.strip()]
    tok = translator.tokenizer
    ref_ids = tok.encode_tgt(lines)
    if args.noise:
        noisy_ids, _ = _corrupt(translator, lines, args.noise, args.seed)
        hyps = translator.translate_ids(noisy_ids)
    else:
        hyps = translator.translate(lines)
    hyp_ids = [h[0].tokens for h in hyps]
    report = reconstruction_report(hyp_ids, ref_ids, tok.decode_tgt(hyp_ids), lines).to_dict()
    model = translator.model
    if getattr(model, "bottleneck", None) is not None and hasattr(model.bottleneck, "posterior"):
        report["variational"] = variational_report(model, tok, lines, device=translator.device)
    report.update(checkpoint=args.checkpoint, input=args.input, noise=args.noise, beam=translator.beam_size)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0
