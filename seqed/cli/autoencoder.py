"""The autoencoder commands: `seqed encode`, `reconstruct`, `sample`, `interpolate`, `evaluate`."""

from __future__ import annotations

import argparse
import json
import sys

from seqed.cli.io import check_input, chunks, input_lines, open_out
from seqed.cli.options import add_search_args, load_translator
from seqed.files import atomic_open, write_atomic


FILL_HELP = ("with --noise mask=...: keep the uncorrupted pieces and predict only the masked ones (forced "
             "decoding); use it for models trained with train.loss_on=masked")


def register(sub) -> None:
    p = sub.add_parser("encode", help="write the fixed code of every sentence to a .npy file",
                       description="Encode one sentence per line into its fixed code vector (memory.code after "
                                   "the bottleneck; the posterior mean for variational models). Works with any "
                                   "checkpoint, translation models included. Rows follow input order.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", required=True, help="output .npy file, float32 (N, C)")
    p.add_argument("--batch-size", type=int, default=128, help="sentences per batch (default 128)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
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
    p.add_argument("--fill", action="store_true", help=FILL_HELP)
    add_search_args(p)
    p.set_defaults(func=cmd_reconstruct, nbest=1)

    p = sub.add_parser("sample", help="sample sentences from a variational autoencoder's prior",
                       description="Draw z ~ N(0, I) and decode each (greedy unless --beam).")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    p.add_argument("-n", type=int, default=10, help="number of samples (default 10)")
    p.add_argument("--seed", type=int, default=1, help="seed of the prior draws z ~ N(0, I) (default 1)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the prior's standard deviation (default 1.0; 0 decodes the prior's mean)")
    p.add_argument("--beam", type=int, default=1, help="beam size for decoding each z (default 1: greedy)")
    p.add_argument("--max-len", type=int, default=60, help="most pieces per decoded sentence (default 60)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("interpolate", help="decode points on the line between two sentences' codes",
                       description="Encode sentences A and B (posterior means of a variational model, or the "
                                   "codes of a code-bottleneck model), walk K evenly spaced points from A to B "
                                   "(linear, or --slerp) and decode each point: lines 'T<TAB>TEXT'.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    p.add_argument("sentence_a", help="the sentence at t = 0")
    p.add_argument("sentence_b", help="the sentence at t = 1")
    p.add_argument("--steps", type=int, default=5, help="points on the path, both ends included (default 5)")
    p.add_argument("--slerp", action="store_true", help="spherical interpolation (default: linear)")
    p.add_argument("--beam", type=int, default=1, help="beam size for decoding each point (default 1: greedy)")
    p.add_argument("--max-len", type=int, default=60, help="most pieces per decoded sentence (default 60)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("evaluate", help="reconstruction metrics of an autoencoder on a text file",
                       description="Token accuracy, exact match, BLEU and chrF of reconstructions, overall and by "
                                   "sentence length; for variational models also KL, NLL, ELBO and active "
                                   "units. With --noise, metrics of completing corrupted inputs, the same "
                                   "metrics of the corrupted input itself (noisy_input), and for mask/substitute "
                                   "noise the completion accuracy at the corrupted positions.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    p.add_argument("-i", "--input", required=True, help="one sentence per line")
    p.add_argument("--noise", default="", help="corrupt inputs first, e.g. mask=0.15")
    p.add_argument("--seed", type=int, default=1, help="seed of the corruption")
    p.add_argument("--fill", action="store_true", help=FILL_HELP)
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    add_search_args(p)
    p.set_defaults(func=cmd_evaluate, nbest=1)


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from seqed.autoencoder import encode_sentences
    from seqed.loading import load_model

    check_input(args.input)
    loaded = load_model(args.checkpoint, device=args.device)
    lines = list(input_lines(args.input))
    vectors = encode_sentences(loaded.model, loaded.tokenizer, lines, batch_size=args.batch_size,
                               device=loaded.device, max_len=loaded.config.model.max_pieces)
    with atomic_open(args.output, "wb") as f:  # np.save(path) would append ".npy" to other names
        np.save(f, vectors)
    print(f"wrote {vectors.shape[0]} codes of size {vectors.shape[1] if vectors.ndim == 2 else 0} to "
          f"{args.output}", file=sys.stderr)
    return 0


def _noise(args: argparse.Namespace):
    """The parsed --noise (a NoiseConfig, or None without it); checked before any model is loaded."""
    from seqed.autoencoder import keeps_positions
    from seqed.noise import parse_noise

    noise = parse_noise(args.noise) if args.noise else None
    # Forced decoding knows where the masks are; with substitutions that would tell it which words are wrong.
    if args.fill and not (noise is not None and noise.mask > 0 and not noise.substitute and keeps_positions(noise)):
        raise ValueError(f"--fill predicts masked pieces in place: it needs --noise with masking only, e.g. "
                         f"--noise mask=0.15; got --noise {args.noise!r}")
    return noise


def _corrupt(translator, lines: list[str], noise, seed: int):
    """Corrupt `lines` with the model's own tokenizer as training does.

    Returns:
        (noisy ids, masked flags per noisy position, noisy text).
    """
    from seqed.autoencoder import corrupt_ids

    tok = translator.tokenizer
    noisy, masked = corrupt_ids(tok.encode_src(lines), noise, vocab_size=tok.src_vocab_size, seed=seed)
    return noisy, masked, tok.decode_src(noisy) if noisy else []


def _rebuild(translator, noisy_ids: list[list[int]], masked: list[list[bool]], fill: bool) -> list[list[int]]:
    """Rebuilt piece ids of corrupted inputs: free decoding, or forced decoding of the masked pieces."""
    if fill:
        from seqed.autoencoder import fill_masked

        return fill_masked(translator.model, noisy_ids, masked, batch_size=translator.settings.batch_size,
                           device=translator.device)
    return [h[0].tokens for h in translator.translate_ids(noisy_ids)]


def cmd_reconstruct(args: argparse.Namespace) -> int:
    noise = _noise(args)
    check_input(args.input)
    translator = load_translator(args, progress=args.input != "-" and args.output != "-")
    with open_out(args.output) as out:
        for chunk in chunks(input_lines(args.input), 2000):
            if noise is not None:
                noisy_ids, masked, noisy_text = _corrupt(translator, chunk, noise, args.seed)
                texts = translator.tokenizer.decode_tgt(_rebuild(translator, noisy_ids, masked, args.fill))
                for corrupted, rebuilt in zip(noisy_text, texts):
                    out.write(f"{corrupted}\t{rebuilt}\n")
            else:
                for nbest in translator.translate_text(chunk):
                    out.write(nbest[0][0] + "\n")
            out.flush()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from seqed.autoencoder import decode_latents, is_variational
    from seqed.loading import load_model

    if args.n <= 0:
        raise ValueError(f"-n must be positive, got {args.n}")
    if not args.temperature >= 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    loaded = load_model(args.checkpoint, device=args.device)
    if not is_variational(loaded.model):
        raise ValueError(f"{args.checkpoint}: sampling from the prior needs a variational model "
                         f"(train with model.bottleneck=variational)")
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, loaded.model.bottleneck.code_size, generator=gen) * args.temperature  # (N, Z)
    hyps = decode_latents(loaded.model, z.to(loaded.device), beam_size=args.beam, max_len=args.max_len)
    for text in loaded.tokenizer.decode_tgt([h.tokens for h in hyps]):
        print(text)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from seqed.autoencoder import decode_latents, encode_sentences, has_latent, interpolation_path
    from seqed.loading import load_model

    if args.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {args.steps}")
    loaded = load_model(args.checkpoint, device=args.device)
    if not has_latent(loaded.model):
        raise ValueError(f"{args.checkpoint}: interpolation needs a latent space: a model trained with "
                         f"model.bottleneck=variational (or code)")
    codes = torch.from_numpy(encode_sentences(loaded.model, loaded.tokenizer, [args.sentence_a, args.sentence_b],
                                              device=loaded.device))
    path = interpolation_path(codes[0], codes[1], args.steps, spherical=args.slerp)
    hyps = decode_latents(loaded.model, path.to(loaded.device), beam_size=args.beam, max_len=args.max_len)
    texts = loaded.tokenizer.decode_tgt([h.tokens for h in hyps])
    for t, text in zip(torch.linspace(0, 1, args.steps).tolist(), texts):
        print(f"{t:.2f}\t{text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seqed.autoencoder import is_variational, keeps_positions
    from seqed.evaluate import completion_accuracy, reconstruction_report, variational_report

    noise = _noise(args)
    check_input(args.input)
    translator = load_translator(args, progress=True)
    lines = list(input_lines(args.input))
    lines = [x for x in lines if x.strip()]
    if not lines:
        raise ValueError(f"{args.input}: no non-empty line to evaluate")
    tok = translator.tokenizer
    ref_ids = tok.encode_tgt(lines)
    report: dict = {}
    if noise is not None:
        noisy_ids, masked, noisy_text = _corrupt(translator, lines, noise, args.seed)
        hyp_ids = _rebuild(translator, noisy_ids, masked, args.fill)
    else:
        hyp_ids = [h[0].tokens for h in translator.translate(lines)]
    report.update(reconstruction_report(hyp_ids, ref_ids, tok.decode_tgt(hyp_ids), lines).to_dict())
    if noise is not None:
        # The corrupted input itself, scored as if it were the output: what denoising has to beat.
        baseline = reconstruction_report(noisy_ids, ref_ids, noisy_text, lines).to_dict()
        report["noisy_input"] = {k: baseline[k] for k in ("token_accuracy", "exact_match", "bleu", "chrf")}
        if keeps_positions(noise):
            # Pattern completion: the masked/substituted pieces rebuilt correctly.
            report["completion_accuracy"] = completion_accuracy(hyp_ids, ref_ids, masked)
            report["masked_tokens"] = int(sum(sum(m) for m in masked))
    if is_variational(translator.model):
        report["variational"] = variational_report(translator.model, tok, lines, device=translator.device,
                                                   max_len=translator.settings.max_src_len - 1)
    report.update(checkpoint=args.checkpoint, input=args.input, noise=args.noise, seed=args.seed,
                  decoding="fill" if args.fill else ("greedy" if translator.settings.beam == 1 else "beam"),
                  beam=translator.settings.beam)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        write_atomic(args.json, text + "\n")
    return 0
