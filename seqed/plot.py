"""Pictures: training curves from a run's log, and source x output attention heatmaps.

matplotlib is an optional extra (`pip install seqed[plot]`); it is imported only here, and only when a
picture is drawn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from seqed.alignment import attention_enabled, reading_order
from seqed.translator import Translator

EOS_LABEL = "</s>"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'seqed[plot]'") from None
    return plt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


# ---------------------------------------------------------------------------------------------
# training curves


def read_log(run_dir: str | Path) -> list[dict]:
    """The validation records of a run (`train.log.jsonl`, one JSON object per validation)."""
    path = Path(run_dir) / "train.log.jsonl" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (is this a seqed run directory?)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not a JSON record; the log may be damaged: remove that line")
            if row.get("event", "valid") == "valid":  # training lines ("event": "train") are not plotted
                rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no validation records yet: plot after the first validation")
    return rows


def _series(rows: list[dict], key: str) -> list[float]:
    """`key` of every record as floats; NaN where a record lacks it (matplotlib leaves a gap)."""
    return [float(r[key]) if isinstance(r.get(key), (int, float)) else math.nan for r in rows]


def _label_smoothing(run: Path) -> float:
    """train.label_smoothing from the run's config.yaml (0.1, the default, when it cannot be read)."""
    import yaml

    config = (run if run.is_dir() else run.parent) / "config.yaml"
    try:
        return float(yaml.safe_load(config.read_text())["train"]["label_smoothing"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return 0.1


def plot_curves(run_dirs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Validation loss and BLEU against update steps and against training minutes, one line per run.

    The top row shows the validation loss (nll per target token) and, dashed, the training loss since the
    previous validation (`train_loss`: label-smoothed unless the run's train.label_smoothing is 0, so
    it then sits above the nll); the bottom row shows
    validation BLEU. Training minutes are the wall-clock `train_seconds` the trainer logs (validation
    included).

    Args:
        run_dirs: run directories (or their train.log.jsonl files).
        out: image path; the format follows the suffix (.png, .pdf, .svg).
        labels: one legend label per run (default: the run directory names).

    Returns:
        the image path.
    """
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"plot_curves: {len(labels)} labels for {len(run_dirs)} runs")
    logs = [read_log(run) for run in run_dirs]  # read all first: a bad run fails before drawing
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    for i, (run, rows) in enumerate(zip(run_dirs, logs)):
        path = Path(run)
        label = labels[i] if labels else (path.name if path.is_dir() else path.parent.name)
        steps = [r.get("step", math.nan) for r in rows]
        minutes = [x / 60 for x in _series(rows, "train_seconds")]
        train_label = f"{label} (train{', label-smoothed' if _label_smoothing(path) else ''})"
        for col, x in enumerate((steps, minutes)):
            line, = axes[0, col].plot(x, _series(rows, "valid_nll"), marker="o", ms=3, label=f"{label} (valid)")
            if any("train_loss" in r for r in rows):
                axes[0, col].plot(x, _series(rows, "train_loss"), ls="--", color=line.get_color(),
                                  label=train_label)
            axes[1, col].plot(x, _series(rows, "valid_bleu"), marker="o", ms=3, color=line.get_color(), label=label)
    for col, xlabel in enumerate(("update steps", "training minutes (wall clock)")):
        axes[0, col].set_ylabel("loss (nll per token)")
        axes[1, col].set_ylabel("validation BLEU")
        axes[1, col].set_xlabel(xlabel)
        for row in range(2):
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# attention


@dataclass
class AttentionMap:
    """The attention of one translated sentence.

    Attributes:
        weights: (T + 1, S + 1) float32; row t is output step t (the last row the EOS step), column s
            source piece s in reading order (the last column the source EOS).
        src_tokens: S + 1 source pieces, EOS last.
        tgt_tokens: T + 1 output pieces, EOS last.
        translation: the detokenized output.
    """

    weights: np.ndarray
    src_tokens: list[str]
    tgt_tokens: list[str]
    translation: str


def attention_of(model, tokenizer, sentence: str, *, device="cpu", max_src_len: int = 1024,
                 max_len_a: float = 1.2, max_len_b: int = 10) -> AttentionMap:
    """Translate `sentence` with greedy search and return the decoder's attention over the source.

    Which attention, and how a reversed source is put back into reading order: see `seqed.alignment`.

    Args:
        model: an `EncoderDecoder`.
        tokenizer: the model's `Tokenizer`.
        sentence: one source sentence.
        device: where to decode.
        max_src_len: longest source, EOS included (longer ones are cut).
        max_len_a, max_len_b: output length limit a * |src| + b.

    Raises:
        ValueError: an empty sentence, or a decoder without attention (fixed-code RNN).
    """
    ids = tokenizer.encode_src([sentence])[0][: max_src_len - 1]
    if not ids:
        raise ValueError("the sentence to translate is empty: give a source sentence")
    # fp32: the Translator decodes the model itself (a lower precision decodes a cast copy, which
    # `attention_enabled(model)` would not reach), and the weights drawn are the model's own
    translator = Translator(model, tokenizer, device=device, beam_size=1, max_src_len=max_src_len,
                            max_len_a=max_len_a, max_len_b=max_len_b, precision="fp32")
    with attention_enabled(model):
        hyp = translator.translate_ids([ids])[0][0]
    if hyp.attn is None:
        raise ValueError("this model's decoder has no attention (an RNN decoder with attention: none reads "
                         "only the fixed code): there is nothing to draw")
    weights = reading_order(hyp.attn.float(), model).numpy()  # (T + 1, S + 1)
    src_tokens = tokenizer.src_id_to_piece(ids) + [EOS_LABEL]
    tgt_tokens = tokenizer.tgt_id_to_piece(hyp.tokens) + [EOS_LABEL]
    return AttentionMap(weights=np.ascontiguousarray(weights), src_tokens=src_tokens, tgt_tokens=tgt_tokens,
                     translation=tokenizer.decode_tgt([hyp.tokens])[0])


def plot_attention(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], out: str | Path,
                   *, title: str = "") -> Path:
    """Heatmap of attention weights (T, S): rows are output pieces, columns source pieces.

    Returns:
        the image path.
    """
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"attention of shape {w.shape} does not fit {len(tgt_tokens)} output x "
                         f"{len(src_tokens)} source tokens")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(src_tokens) + 2), max(3, 0.4 * len(tgt_tokens) + 1.5)))
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(w.max()), 1e-6))
    ax.set_xticks(range(len(src_tokens)), labels=src_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), labels=tgt_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)
