"""Pictures for the autoencoder recipe (matplotlib: `pip install 'seqed[plot]'`).

  # (a) exact match against sentence length, fixed code vs attention (memory), from `seqed evaluate --json`
  #     or the results.json that run.sh writes (the committed ones are in recipes/autoencoder/results/)
  python recipes/autoencoder/plots.py length recipes/autoencoder/results/rnn_code.json \
      recipes/autoencoder/results/attention.json --labels "fixed code" "attention" -o recipes/autoencoder/length.png

  # (b) the codes of the test sentences (`seqed encode`), projected on their first two principal
  #     components, coloured by sentence length in words
  python recipes/autoencoder/plots.py codes runs/ae_rnn_code/test2016.codes.npy \
      --text $SEQED_DATA/multi30k/test2016.en -o recipes/autoencoder/codes.png

  # (c) a VAE's validation KL (nats per sentence), KL weight and active units over training, from its
  #     train.log.jsonl (run directory or the file)
  python recipes/autoencoder/plots.py vae runs/ae_variational -o recipes/autoencoder/vae.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plots.py: needs matplotlib: pip install 'seqed[plot]'")
    return plt


def _bucket_key(label: str) -> float:
    """Sort "1-5", "6-10", ">50" by their lower end."""
    return float(label[1:]) + 1 if label.startswith(">") else float(label.split("-")[0])


def plot_length(reports: list[Path], labels: list[str], out: Path, metric: str = "exact_match") -> Path:
    """One line per report: `metric` of each source-length bucket (`by_length` of `seqed evaluate`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    loaded = [json.loads(path.read_text(encoding="utf-8")) for path in reports]
    # run.sh's results.json (summary.py) holds the clean-input report under evaluations.clean
    loaded = [r["evaluations"]["clean"] if "evaluations" in r else r for r in loaded]
    # Models with different tokenizers fill different buckets: one x position per bucket of any report.
    buckets = sorted({r["lengths"] for report in loaded for r in report["by_length"]}, key=_bucket_key)
    where = {b: i for i, b in enumerate(buckets)}
    for report, label in zip(loaded, labels):
        rows = sorted(report["by_length"], key=lambda r: _bucket_key(r["lengths"]))
        xs = [where[r["lengths"]] for r in rows]
        ax.plot(xs, [r[metric] for r in rows], marker="o", label=f"{label} (all: {report[metric]:.1f})")
        for x, r in zip(xs, rows):
            ax.annotate(f"n={r['n']}", (x, r[metric]), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=7, color="grey")
    ax.set_xticks(range(len(buckets)), labels=buckets)
    ax.set_xlabel("sentence length (SentencePiece pieces)")
    names = {"exact_match": "exact match (%)", "token_accuracy": "token accuracy (%)", "bleu": "BLEU", "chrf": "chrF"}
    ax.set_ylabel(names[metric])
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Reconstruction of test2016 by sentence length")
    return _save(fig, plt, out)


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project codes (N, C) on their top two principal components: ((N, 2), explained variance ratios (2,))."""
    centred = codes - codes.mean(axis=0, keepdims=True)  # (N, C)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    return centred @ vt[:2].T, var[:2] / var.sum()


def plot_codes(codes_path: Path, text_path: Path, out: Path) -> Path:
    """Scatter of the 2-D PCA projection of the codes, coloured by the length of each sentence in words."""
    codes = np.load(codes_path)
    lines = text_path.read_text(encoding="utf-8").splitlines()  # `seqed encode` encodes every line, in order
    if len(lines) != len(codes):
        sys.exit(f"plots.py: {codes_path} has {len(codes)} codes but {text_path} {len(lines)} sentences")
    xy, ratio = pca_2d(codes.astype(np.float64))
    lengths = np.array([len(x.split()) for x in lines])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=lengths, cmap="viridis", s=8, alpha=0.8)
    fig.colorbar(sc, ax=ax, label="sentence length (words)")
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.1f}% of the variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.1f}%)")
    ax.set_title(f"Codes of {len(codes)} sentences ({codes.shape[1]}-d), first two principal components")
    ax.grid(alpha=0.3)
    return _save(fig, plt, out)


def vae_series(log: Path) -> dict[str, list[float]]:
    """The validations of a VAE's train.log.jsonl (a run directory or the file): step, valid_kl,
    kl_weight, valid_active_units and valid_nll, one entry per validation."""
    path = log / "train.log.jsonl" if log.is_dir() else log
    if not path.is_file():
        sys.exit(f"plots.py: no training log at {path}")
    from seqed.runlog import read_records

    rows = [r for r in read_records(path) if "valid_kl" in r]
    if not rows:
        sys.exit(f"plots.py: {path} has no validation with valid_kl: not a variational run")
    keys = ("step", "valid_kl", "kl_weight", "valid_active_units", "valid_nll")
    return {k: [r.get(k, float("nan")) for r in rows] for k in keys}


def plot_vae(log: Path, out: Path, latent_dim: int | None = None) -> Path:
    """Two panels against updates: validation KL with the KL weight, and active units."""
    series = vae_series(log)
    plt = _pyplot()
    fig, (kl_ax, au_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    kl_ax.plot(series["step"], series["valid_kl"], marker="o", ms=3, label="KL(q(z|x) || p(z)), valid")
    kl_ax.set_xlabel("updates")
    kl_ax.set_ylabel("nats per sentence")
    kl_ax.grid(alpha=0.3)
    weight_ax = kl_ax.twinx()
    weight_ax.plot(series["step"], series["kl_weight"], color="grey", ls="--", label="KL weight")
    weight_ax.set_ylabel("KL weight")
    weight_ax.set_ylim(0, 1.05)
    handles = kl_ax.get_legend_handles_labels()[0] + weight_ax.get_legend_handles_labels()[0]
    kl_ax.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
    kl_ax.set_title("KL term and its annealed weight")
    au_ax.plot(series["step"], series["valid_active_units"], marker="o", ms=3, color="C2")
    if latent_dim:
        au_ax.axhline(latent_dim, color="grey", lw=0.8)
        au_ax.axhline(latent_dim / 2, color="grey", lw=0.8, ls=":")
        au_ax.set_ylim(0, latent_dim * 1.05)
    au_ax.set_xlabel("updates")
    au_ax.set_ylabel("active units (Cov(E[z|x]) > 0.01)")
    au_ax.grid(alpha=0.3)
    au_ax.set_title("Active latent units on validation")
    return _save(fig, plt, out)


def _save(fig, plt, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("length", help="exact match (or another metric) against sentence length")
    p.add_argument("reports", nargs="+", type=Path,
                   help="`seqed evaluate --json` outputs, or run.sh's results.json (its clean-input evaluation)")
    p.add_argument("--labels", nargs="+", default=None, help="one per report (default: run directory names)")
    p.add_argument("--metric", default="exact_match", choices=("exact_match", "token_accuracy", "bleu", "chrf"))
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("codes", help="2-D PCA projection of `seqed encode` codes, coloured by length")
    p.add_argument("codes", type=Path, help="the .npy file of `seqed encode`")
    p.add_argument("--text", type=Path, required=True, help="the sentences that were encoded, one per line")
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("vae", help="a VAE's validation KL, KL weight and active units over training")
    p.add_argument("log", type=Path, help="the run directory (or its train.log.jsonl)")
    p.add_argument("--latent-dim", type=int, default=None, help="draw the latent size and half of it")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "vae":
        plot_vae(args.log, args.output, args.latent_dim)
    elif args.what == "length":
        labels = args.labels or [r.parent.name for r in args.reports]
        if len(labels) != len(args.reports):
            parser.error(f"{len(args.reports)} reports but {len(labels)} labels")
        plot_length(args.reports, labels, args.output, args.metric)
    else:
        plot_codes(args.codes, args.text, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
