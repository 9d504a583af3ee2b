"""`seqed plot`: training curves and attention heatmaps."""

from __future__ import annotations

import argparse
import sys

from seqed.cli.prepare import usage

EPILOG_PLOT = """examples:
  seqed plot curves runs/multi30k_transformer runs/multi30k_rnn_attention -o curves.png
  seqed plot attention -c runs/multi30k_rnn_attention "A man rides a bike." -o attn.png
"""


def register(sub) -> None:
    p = sub.add_parser("plot", help="draw training curves or an attention heatmap (PNG, PDF, SVG)",
                       description="Pictures with matplotlib (pip install 'seqed[plot]').",
                       epilog=EPILOG_PLOT, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    c = kinds.add_parser("curves", help="validation loss and BLEU against steps and training minutes",
                         description="One line per run directory (read from its train.log.jsonl): validation "
                                     "loss and BLEU against update steps and against training minutes.")
    c.add_argument("runs", nargs="+", help="run directories (or train.log.jsonl files)")
    c.add_argument("-o", "--output", required=True, help="image file (.png, .pdf, .svg)")
    c.add_argument("--labels", default=None, help="comma-separated legend labels (default: directory names)")
    c.set_defaults(func=cmd_plot_curves)

    c = kinds.add_parser("attention", help="source x output attention of one greedy translation",
                         description="Translate one sentence greedily and draw the attention: rows are output "
                                     "pieces (+ EOS), columns source pieces (+ EOS). RNN decoders give their "
                                     "attention weights; Transformers the last decoder layer's cross-attention "
                                     "averaged over heads.")
    c.add_argument("--checkpoint", "-c", required=True, help="checkpoint file or run directory")
    c.add_argument("sentence", help="the source sentence")
    c.add_argument("-o", "--output", required=True, help="image file (.png, .pdf, .svg)")
    c.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    c.set_defaults(func=cmd_plot_attention)
    p.set_defaults(func=usage(p))



def cmd_plot_curves(args: argparse.Namespace) -> int:
    from seqed.plot import plot_curves

    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise ValueError(f"--labels has {len(labels)} names for {len(args.runs)} runs; give one per run")
    print(f"wrote {plot_curves(args.runs, args.output, labels=labels)}", file=sys.stderr)
    return 0


def cmd_plot_attention(args: argparse.Namespace) -> int:
    from seqed.loading import load_model
    from seqed.plot import attention_of, plot_attention

    loaded = load_model(args.checkpoint, device=args.device)
    s = loaded.config.search
    result = attention_of(loaded.model, loaded.tokenizer, args.sentence, device=loaded.device,
                          max_src_len=loaded.config.model.max_pieces, max_len_a=s.max_len_a,
                          max_len_b=s.max_len_b)
    print(result.translation)
    out = plot_attention(result.weights, result.src_tokens, result.tgt_tokens, args.output,
                         title=result.translation)
    print(f"wrote {out}", file=sys.stderr)
    return 0
