"""Pictures: training curves from a run's log, and source x target attention heatmaps.

matplotlib is an optional extra (`pip install seqed[plot]`); it is imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'seqed[plot]'") from None
    return plt


def read_log(run_dir: str | Path) -> list[dict]:
    """The validation records of a run (`train.log.jsonl`)."""
    path = Path(run_dir) / "train.log.jsonl" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (is this a seqed run directory?)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not a JSON record") from None
    if not rows:
        raise ValueError(f"{path} holds no validation records yet")
    return rows


def plot_curves(run_dirs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Validation loss and BLEU against steps and against training minutes, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for i, run in enumerate(run_dirs):
        rows = read_log(run)
        label = labels[i] if labels else Path(run).name
        steps = [r["step"] for r in rows]
        minutes = [r.get("train_seconds", 0) / 60 for r in rows]
        for col, x in enumerate((steps, minutes)):
            if any("valid_nll" in r for r in rows):
                axes[0, col].plot(x, [r.get("valid_nll") for r in rows], marker="o", ms=3, label=label)
            if any("valid_bleu" in r for r in rows):
                axes[1, col].plot(x, [r.get("valid_bleu") for r in rows], marker="o", ms=3, label=label)
    for col, xl in enumerate(("update steps", "training minutes")):
        axes[0, col].set_ylabel("validation loss (nll / token)")
        axes[1, col].set_ylabel("validation BLEU")
        for row in range(2):
            axes[row, col].set_xlabel(xl)
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_attention(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], out: str | Path,
                   *, title: str = "") -> Path:
    """Heatmap of attention weights (T, S): rows are target pieces, columns source pieces."""
    import numpy as np

    plt = _pyplot()
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"attention of shape {w.shape} does not fit {len(tgt_tokens)} target x "
                         f"{len(src_tokens)} source tokens")
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(src_tokens) + 2), max(3, 0.4 * len(tgt_tokens) + 1.5)))
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(w.max()), 1e-6))
    ax.set_xticks(range(len(src_tokens)), labels=src_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), labels=tgt_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
