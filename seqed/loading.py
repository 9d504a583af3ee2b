"""Rebuild a trained model and its tokenizer from a checkpoint alone (`load_model`, `load_ensemble`), and
the translator of either engine over it (`load_translator`: what `seqed translate`, the Python API and
`seqed serve` call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from seqed.checkpoint import CheckpointError, load_checkpoint
from seqed.quantize import QUANTIZATIONS as SEQED_QUANTIZATIONS
from seqed.config import Config, ConfigError, config_from_dict
from seqed.ensemble import Ensemble
from seqed.model import EncoderDecoder, build_model
from seqed.runtime import resolve_device
from seqed.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """A checkpoint's model, ready to decode, with what decoding needs besides it.

    Attributes:
        model: the model in eval mode on `device` (an `Ensemble` from `load_ensemble`).
        tokenizer: its tokenizer.
        config: its config (an ensemble's: the first checkpoint's, whose `search` defaults apply).
        device: where the model is.
        step: training steps of the checkpoint (the first one's for an ensemble).
        max_pieces: longest source, EOS included, that every model's positions cover.
        max_output_len: longest output every model's positions cover.
    """

    model: Union[EncoderDecoder, Ensemble]
    tokenizer: Tokenizer
    config: Config
    device: torch.device
    step: int
    max_pieces: int = 0
    max_output_len: int = 0

    def __post_init__(self):
        self.max_pieces = self.max_pieces or self.config.model.max_pieces
        self.max_output_len = self.max_output_len or self.config.model.max_output_len


def load_model(path: str, device: str = "auto") -> LoadedModel:
    """Checkpoint file or run directory -> model in eval mode on `device`, with its tokenizer and config.

    Raises:
        FileNotFoundError, CheckpointError: see `load_checkpoint`; also when the weights do not fit the
            stored config (a hand-edited or mixed-up file).
    """
    state = load_checkpoint(path, mmap=True)  # the optimizer's state stays unread on disk
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored config is invalid: {err}") from None
    try:
        tokenizer = Tokenizer.from_dict(state.get("tokenizer"))
    except (ValueError, RuntimeError, TypeError, KeyError) as err:  # RuntimeError: SentencePiece parse error
        raise CheckpointError(f"{path}: its tokenizer cannot be read (corrupted?): {str(err).splitlines()[0]}"
                              ) from None
    model = build_model(cfg, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: weights do not match the stored architecture/vocabulary: "
                              f"{str(err).splitlines()[0]}. Was the file edited or assembled by hand?") from None
    dev = resolve_device(device)
    model.to(dev).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, config=cfg, device=dev,
                       step=int(state.get("train_state", {}).get("step", 0)))


def _first_difference(a: list[str], b: list[str]) -> str:
    if len(a) != len(b):
        return f"{len(a)} and {len(b)} pieces"
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"piece {i} is {a[i]!r} in one and {b[i]!r} in the other"


def load_ensemble(paths: Sequence[str], device: str = "auto") -> LoadedModel:
    """Checkpoint files or run directories -> an `Ensemble` of their models, which must share one
    vocabulary (the same SentencePiece pieces, id by id, on both sides).

    The returned `LoadedModel` carries the first checkpoint's tokenizer, config and step, and the
    source and output length limits that every member's positions cover.

    Raises:
        ValueError: no paths, or two checkpoints whose vocabularies differ (the message names both).
        FileNotFoundError, CheckpointError: see `load_model`.
    """
    if not paths:
        raise ValueError("load_ensemble: give at least one checkpoint")
    loaded = [load_model(p, device=device) for p in paths]
    first = loaded[0]
    for side in ("src", "tgt"):
        reference = first.tokenizer.pieces(side)
        for path, other in zip(paths[1:], loaded[1:]):
            pieces = other.tokenizer.pieces(side)
            if pieces != reference:
                name = "source" if side == "src" else "target"
                raise ValueError(f"cannot ensemble {paths[0]} and {path}: their {name} vocabularies differ "
                                 f"({_first_difference(reference, pieces)}); an ensemble needs models trained "
                                 f"with the same tokenizer")
    return LoadedModel(model=Ensemble([m.model for m in loaded]).to(first.device).eval(),
                       tokenizer=first.tokenizer, config=first.config, device=first.device, step=first.step,
                       max_pieces=min(m.max_pieces for m in loaded),
                       max_output_len=min(m.max_output_len for m in loaded))


ENGINES = ("seqed", "ctranslate2")


def load_translator(path: Union[str, Sequence[str]], *, engine: str = "seqed", device: str = "auto",
                    precision: str = "auto", quantization: Optional[str] = None, threads: int = 0,
                    progress: bool = False, seed: Optional[int] = None, **search):
    """A translator (a `seqed.decoding.TextOutput`) for either engine, with the checkpoint's search settings.

    Args:
        path: a checkpoint file or run directory (best, else last checkpoint); for engine "seqed" also
            a list of them (an ensemble, `load_ensemble`); for engine "ctranslate2" also a
            `seqed export` directory (a checkpoint is exported on the fly).
        engine: "seqed" (`seqed.translator.Translator`) or "ctranslate2"
            (`seqed.translator_ct2.CTranslate2Translator`).
        device: "auto", "cpu", "cuda" or "cuda:N".
        precision: engine "seqed": "auto", "fp32", "bf16" or "fp16" (see `Translator`); engine
            "ctranslate2" takes "auto" or "fp32" only (its precision is `quantization`).
        quantization: engine "ctranslate2": its compute type, e.g. "int8" (None: as exported); engine
            "seqed": None or "int8" (`seqed.quantize`, CPU).
        threads: CPU threads (0: leave as is); engine "seqed" sets torch's process-wide intra-op threads.
        progress: a tqdm bar per call (engine "seqed").
        seed: seed of sampling (engine "seqed", with ``sampling``).
        search: `SearchSettings` fields (beam, nbest, length_penalty, max_len_a, max_len_b, min_len,
            batch_size, max_src_len, max_len_cap, sampling, temperature, alignment); None keeps the
            checkpoint's `search` section. Limits default to (and are capped at) what the model covers.

    Raises:
        ValueError: an unknown engine, an option the engine does not have, an invalid setting.
        FileNotFoundError, CheckpointError, seqed.export.ExportError: the model cannot be loaded.
    """
    from seqed.decoding import SearchSettings

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    paths = [path] if isinstance(path, (str, bytes)) or not isinstance(path, Sequence) else list(path)
    if engine == "ctranslate2":
        from seqed.translator_ct2 import ctranslate2_translator

        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision {precision} is for engine seqed; with engine ctranslate2 use "
                             f"quantization (e.g. bfloat16, int8)")
        if seed is not None:
            raise ValueError("seed is for engine seqed (sampling); the CTranslate2 engine runs greedy or beam search")
        if len(paths) != 1:
            raise ValueError(f"engine ctranslate2 runs one model, got {len(paths)} (ensembles are for engine seqed)")
        return ctranslate2_translator(paths[0], device=device, quantization=quantization, threads=threads,
                                      **search)
    from seqed.translator import Translator

    if quantization not in (None, *SEQED_QUANTIZATIONS):
        raise ValueError(f"quantization {quantization} is for engine ctranslate2; seqed's own engine takes "
                         f"{', '.join(SEQED_QUANTIZATIONS)} (or a precision)")
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(paths[0], device=device) if len(paths) == 1 else load_ensemble(paths, device=device)
    settings = SearchSettings.from_config(loaded.config.search, max_src_len=loaded.max_pieces,
                                          max_len_cap=loaded.max_output_len, **search)
    return Translator(loaded.model, loaded.tokenizer, settings, device=loaded.device, precision=precision,
                      progress=progress, seed=seed, quantization=quantization)
