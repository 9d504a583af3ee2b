"""Rebuild a trained model and its tokenizer from a checkpoint alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqed.checkpoint import CheckpointError, load_checkpoint
from seqed.config import Config, ConfigError, config_from_dict
from seqed.model import EncoderDecoder, build_model
from seqed.runtime import resolve_device
from seqed.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: EncoderDecoder
    tokenizer: Tokenizer
    config: Config
    device: torch.device
    step: int


def load_model(path: str, device: str = "auto") -> LoadedModel:
    """Checkpoint file or run directory -> model in eval mode on `device`, with its tokenizer and config.

    Raises:
        FileNotFoundError, CheckpointError: see `load_checkpoint`; also when the weights do not fit the
            stored config (a hand-edited or mixed-up file).
    """
    state = load_checkpoint(path)
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
