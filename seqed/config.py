"""Typed configuration: YAML files and `key.path=value` overrides into validated dataclasses.

Unknown keys are errors that name the closest valid key; values are type-checked; impossible values
are rejected by `Config.validate()` before any data is read or any training starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import yaml

from seqed.bottleneck import BOTTLENECKS, KL_ANNEALS
from seqed.decoders import DECODER_CHOICES, DECODERS, NO_ATTENTION, OUTPUT_FROM_HIDDEN
from seqed.encoders import ENCODER_CHOICES, ENCODERS
from seqed.errors import SeqedError
from seqed.noise import NoiseConfig
from seqed.optim import OPTIMIZERS, SCHEDULES
from seqed.precision import CHOICES as PRECISIONS
from seqed.tokenizer import MODEL_TYPES


class ConfigError(SeqedError, ValueError):
    """A configuration mistake the user can fix; the message says what and where."""


@dataclass
class CorpusConfig:
    """Where one split of a corpus comes from.

    format: `text` (two aligned files `src`/`tgt`, or one file `path` for monolingual data),
    `tsv` (`path`, columns `src_column`/`tgt_column`), `hf` (`datasets`: hub `name` + `config`,
    or a local builder `name` in json/csv/parquet/text with `data_files`).
    """

    format: str = "text"
    src: Optional[str] = None
    tgt: Optional[str] = None
    path: Optional[str] = None
    src_column: int = 0
    tgt_column: int = 1
    name: Optional[str] = None
    config: Optional[str] = None
    split: str = "train"
    data_files: Optional[str] = None
    src_field: Optional[str] = None
    tgt_field: Optional[str] = None
    limit: Optional[int] = None
    weight: float = 1.0         # share of an epoch when data.train lists several corpora (seqed.data.store)


@dataclass
class DataConfig:
    train: CorpusConfig | list[CorpusConfig] = field(default_factory=CorpusConfig)  # one corpus or a list
    valid: Optional[CorpusConfig] = None
    src_lang: str = "en"
    tgt_lang: str = "fr"
    max_len: int = 128          # pairs with more pieces on either side are dropped from training
    min_len: int = 1
    max_ratio: float = 3.0      # pairs whose length ratio exceeds this are dropped from training
    strict: bool = False        # True: empty lines are an error instead of being skipped and counted
    monolingual: bool = False   # autoencoder: the target is the source sentence itself
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # source-side corruption (denoising autoencoders)
    valid_max_sentences: int = 0  # 0 = the whole validation set for BLEU
    binarized: str = ""         # "" = encode in memory; PATH or "auto": memory-mapped ids (seqed preprocess)
    dedup: bool = False         # drop exact duplicate training pairs (first occurrence kept)

    @property
    def corpora(self) -> list[CorpusConfig]:
        """The training corpora as a list (`train` may be one corpus)."""
        return list(self.train) if isinstance(self.train, list) else [self.train]


@dataclass
class TokenizerConfig:
    type: str = "unigram"       # unigram | bpe (SentencePiece)
    vocab_size: int = 8000
    joint: bool = True          # one model for both languages (needed for shared embeddings)
    character_coverage: float = 1.0
    model: Optional[str] = None  # reuse this SentencePiece model (a .model file or a tokenizer/ directory)
    input_sentence_size: int = 2_000_000  # train on a shuffled sample of at most this many sentences
    byte_fallback: bool = False  # unseen characters become byte pieces instead of UNK


@dataclass
class EncoderConfig:
    type: str = "transformer"   # transformer | rnn
    layers: int = 3
    hidden: int = 256           # d_model (Transformer) or hidden size per direction (RNN)
    embed_dim: int = 0          # 0 = hidden (Transformer) / hidden (RNN)
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    positions: str = "sinusoidal"  # sinusoidal | learned
    code: str = "mean"          # Transformer fixed code: mean | token
    cell: str = "lstm"          # lstm | gru
    bidirectional: bool = True
    reverse_source: bool = False


@dataclass
class DecoderConfig:
    type: str = "transformer"   # transformer | rnn
    layers: int = 3
    hidden: int = 256
    embed_dim: int = 0          # 0 = hidden
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    positions: str = "sinusoidal"
    cell: str = "lstm"
    attention: str = "bahdanau"  # RNN: bahdanau | dot | general | none (fixed code only)
    input_feeding: bool = True
    feed_code: bool = False     # RNN without attention: feed the code at every step (Cho et al. 2014)


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    share_embeddings: bool = True   # one embedding table for source and target (joint vocabulary)
    tie_output: bool = True         # target embedding = output projection (Press & Wolf 2017)
    max_positions: int = 1024
    bottleneck: str = "memory"      # memory | code (fixed-vector hourglass) | variational
    code_dim: int = 0               # size of the code / latent z; 0 = the encoder's code size
    free_bits: float = 0.0          # variational: KL floor per latent dimension (nats)
    tie_encoder_decoder: bool = False  # share encoder and decoder layer weights where shapes allow

    @property
    def max_pieces(self) -> int:
        """Most pieces a sentence keeps on either side: BOS and EOS take the other two positions."""
        return self.max_positions - 2

    @property
    def max_output_len(self) -> int:
        """Most tokens search may emit: BOS plus the outputs fit the positions."""
        return self.max_positions - 1


@dataclass
class TrainConfig:
    """The `train` section: optimizer and schedule, batches, budget, validation, precision, device.

    A run stops at the first limit it reaches of `max_steps`, `max_epochs` and `max_minutes` (the training
    loop's wall-clock time, validation included, carried over by --resume). Schedules count updates, so a
    resumed run continues exactly as an uninterrupted one would, with one exception: `wsd` with
    `max_steps: 0` decays over the last `decay_fraction` of `max_minutes`, reading the recorded training
    seconds; it cools down on a fast or a slow machine alike, and is therefore not reproducible update for
    update.
    """

    optimizer: str = "adamw"    # adam | adamw
    lr: float = 2e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-9
    weight_decay: float = 0.0
    schedule: str = "noam"      # noam (warmup + inverse sqrt) | plateau | constant | wsd (max_steps or max_minutes)
    # wsd: the last fraction of max_steps decays linearly to min_lr; with max_steps 0, the last fraction of
    # max_minutes (training seconds, so the cool-down fits any machine's speed, but such a run is not
    # reproducible update for update: the learning rate of an update depends on how fast the machine is)
    decay_fraction: float = 0.2
    warmup: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-6
    max_tokens: int = 4096      # padded tokens per batch (per process)
    max_sentences: int = 0      # 0 = no limit
    accum: int = 1              # gradient accumulation steps
    clip: float = 1.0           # gradient norm clipping; 0 = off
    label_smoothing: float = 0.1
    max_steps: int = 0          # 0 = no limit
    max_epochs: int = 0         # 0 = no limit
    max_minutes: float = 0.0    # wall-clock budget; 0 = no limit
    valid_every: int = 500      # steps between validations (and checkpoints)
    valid_bleu: bool = True
    valid_bleu_every: int = 1   # decode for BLEU at every n-th validation (loss only between); the last always
    valid_beam: int = 1         # 1 = greedy
    early_stop_metric: str = "bleu"  # bleu | loss
    patience: int = 0           # validations without improvement before stopping; 0 = off
    keep_last: int = 2
    seed: int = 1
    precision: str = "auto"     # auto (bf16 where native, else fp32) | fp32 | bf16 | fp16 (seqed/precision.py)
    device: str = "auto"        # auto | cpu | cuda | cuda:N
    threads: int = 0            # torch intra-op threads on CPU; 0 = torch default
    log_every: int = 50
    pad_to_multiple: int = 1    # round batch shapes up to a multiple (8 helps GPU matrix units)
    compile: bool = False       # torch.compile the model (opt-in; mostly a GPU speed-up)
    tensorboard: bool = False   # also log to out_dir/tensorboard (pip install 'seqed[tensorboard]')
    max_bad_steps: int = 20     # consecutive non-finite losses before training stops
    skip_oom: bool = False      # CUDA out of memory on a batch: skip it (single process) instead of stopping
    kl_anneal: str = "linear"   # variational: none | linear | cyclical
    kl_anneal_steps: int = 2000
    kl_cycles: int = 4
    word_dropout: float = 0.0   # replace decoder input tokens by UNK with this probability (Bowman et al. 2016)
    loss_on: str = "all"        # all | masked (masked autoencoder: loss only where the source was masked)
    dist_timeout_minutes: float = 30.0  # collective timeout of init_process_group (NCCL's default is 10)
    init_from: Optional[str] = None  # fine-tune: a checkpoint's weights, fresh optimizer, schedule and step


@dataclass
class SearchConfig:
    beam: int = 5
    length_penalty: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 0
    batch_size: int = 64


@dataclass
class Config:
    out_dir: str = "runs/experiment"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def validate(self) -> None:
        """Reject impossible values and incompatible choices before any work starts."""
        for kind, registry, choices in (("encoder", ENCODERS, ENCODER_CHOICES),
                                        ("decoder", DECODERS, DECODER_CHOICES)):
            sub = getattr(self.model, kind)
            _check_choice(f"model.{kind}.type", sub.type, registry)
            keys = section_keys(registry[sub.type])
            for key, owner in choices.items():
                if key in keys:
                    _check_choice(f"model.{kind}.{key}", getattr(sub, key), owner)
        _check_choice("tokenizer.type", self.tokenizer.type, MODEL_TYPES)
        _check_choice("model.bottleneck", self.model.bottleneck, BOTTLENECKS)
        _check_choice("train.kl_anneal", self.train.kl_anneal, KL_ANNEALS)
        _check_choice("train.loss_on", self.train.loss_on, ("all", "masked"))
        _check_choice("train.optimizer", self.train.optimizer, OPTIMIZERS)
        _check_choice("train.schedule", self.train.schedule, SCHEDULES)
        _check_choice("train.precision", self.train.precision, PRECISIONS)
        _check_choice("train.early_stop_metric", self.train.early_stop_metric, ("bleu", "loss"))
        corpora = self.data.corpora
        if not corpora:
            raise ConfigError("data.train is an empty list: give at least one corpus")
        named = [(f"data.train[{i}]" if isinstance(self.data.train, list) else "data.train", c)
                 for i, c in enumerate(corpora)] + [("data.valid", self.data.valid)]
        for name, corpus in named:
            if corpus is not None:
                _check_choice(f"{name}.format", corpus.format, ("text", "tsv", "hf"))
                if corpus.weight < 0:
                    raise ConfigError(f"{name}.weight must be >= 0, got {corpus.weight}")
        if sum(c.weight for c in corpora) <= 0:
            raise ConfigError("data.train: every corpus has weight 0; give one a positive weight")
        positive = {
            "tokenizer.vocab_size": self.tokenizer.vocab_size,
            "model.encoder.layers": self.model.encoder.layers,
            "model.encoder.hidden": self.model.encoder.hidden,
            "model.decoder.layers": self.model.decoder.layers,
            "model.decoder.hidden": self.model.decoder.hidden,
            "model.max_positions": self.model.max_positions,
            "train.max_tokens": self.train.max_tokens,
            "train.accum": self.train.accum,
            "train.valid_every": self.train.valid_every,
            "train.valid_bleu_every": self.train.valid_bleu_every,
            "train.log_every": self.train.log_every,
            "train.pad_to_multiple": self.train.pad_to_multiple,
            "search.beam": self.search.beam,
            "search.batch_size": self.search.batch_size,
            "data.max_len": self.data.max_len,
            "train.max_bad_steps": self.train.max_bad_steps,
            "tokenizer.input_sentence_size": self.tokenizer.input_sentence_size,
            "train.dist_timeout_minutes": self.train.dist_timeout_minutes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        nonneg = {
            "train.lr": self.train.lr, "train.warmup": self.train.warmup, "train.clip": self.train.clip,
            "train.max_steps": self.train.max_steps, "train.max_epochs": self.train.max_epochs,
            "train.max_minutes": self.train.max_minutes, "train.patience": self.train.patience,
            "train.keep_last": self.train.keep_last, "train.max_sentences": self.train.max_sentences,
            "model.encoder.embed_dim": self.model.encoder.embed_dim,
            "model.decoder.embed_dim": self.model.decoder.embed_dim,
            "search.min_len": self.search.min_len, "data.valid_max_sentences": self.data.valid_max_sentences,
        }
        for name, value in nonneg.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        try:
            self.data.noise.validate()
        except ValueError as err:
            raise ConfigError(f"data.noise: {err}") from None
        t = self.train
        if t.schedule == "wsd" and ((t.max_steps <= 0 and t.max_minutes <= 0) or not 0 < t.decay_fraction <= 1):
            raise ConfigError(f"train.schedule=wsd decays over the last train.decay_fraction of train.max_steps, or of "
                              f"train.max_minutes when max_steps is 0: set train.max_steps > 0 or train.max_minutes "
                              f"> 0, and 0 < train.decay_fraction <= 1 (got max_steps={t.max_steps}, max_minutes="
                              f"{t.max_minutes}, decay_fraction={t.decay_fraction})")
        if self.model.code_dim < 0 or self.model.free_bits < 0:
            raise ConfigError("model.code_dim and model.free_bits must be >= 0")
        if self.train.kl_anneal_steps < 0 or self.train.kl_cycles < 1:
            raise ConfigError(f"train.kl_anneal_steps must be >= 0 and train.kl_cycles >= 1, got "
                              f"{self.train.kl_anneal_steps} and {self.train.kl_cycles}")
        dec = self.model.decoder
        dec_keys = section_keys(DECODERS[dec.type])
        if self.model.bottleneck != "memory" and "attention" in dec_keys and dec.attention != NO_ATTENTION:
            raise ConfigError(
                f"model.bottleneck={self.model.bottleneck} hides the per-token states, so an RNN decoder with "
                f"attention has nothing to attend to: set model.decoder.attention={NO_ATTENTION} (or bottleneck=memory)")
        if self.train.loss_on == "masked":
            n = self.data.noise
            if not self.data.monolingual:
                raise ConfigError("train.loss_on=masked is for autoencoders: set data.monolingual=true")
            if n.drop or n.infill or n.shuffle_k:
                raise ConfigError("train.loss_on=masked needs noise that keeps positions (data.noise.mask / "
                                  "substitute); set data.noise.drop, infill and shuffle_k to 0")
            if not (n.mask or n.substitute):
                raise ConfigError("train.loss_on=masked needs data.noise.mask (or substitute) > 0")
        for name, p in (("model.encoder.dropout", self.model.encoder.dropout),
                        ("train.word_dropout", self.train.word_dropout),
                        ("model.decoder.dropout", self.model.decoder.dropout),
                        ("train.label_smoothing", self.train.label_smoothing)):
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {p}")
        if self.train.valid_beam <= 0:
            raise ConfigError(f"train.valid_beam must be positive, got {self.train.valid_beam}")
        if self.data.max_len + 2 > self.model.max_positions:
            raise ConfigError(
                f"data.max_len={self.data.max_len} needs model.max_positions >= {self.data.max_len + 2}")
        if self.train.max_tokens < self.data.max_len + 2:
            raise ConfigError(
                f"train.max_tokens={self.train.max_tokens} is smaller than one sentence of data.max_len="
                f"{self.data.max_len} (+2 for BOS/EOS): raise train.max_tokens or lower data.max_len")
        for kind, registry in (("encoder", ENCODERS), ("decoder", DECODERS)):
            sub = getattr(self.model, kind)
            if "heads" in section_keys(registry[sub.type]) and sub.hidden % sub.heads != 0:
                raise ConfigError(
                    f"model.{kind}.hidden={sub.hidden} must be divisible by model.{kind}.heads={sub.heads}")
        if self.model.share_embeddings:
            if not self.tokenizer.joint:
                raise ConfigError("model.share_embeddings needs tokenizer.joint: true (one vocabulary)")
            if self.encoder_embed_dim != self.decoder_embed_dim:
                raise ConfigError(
                    f"model.share_embeddings needs equal embedding sizes, got encoder {self.encoder_embed_dim} "
                    f"and decoder {self.decoder_embed_dim}: set model.*.embed_dim or share_embeddings: false")
        if "attention" in dec_keys and dec.attention == "dot":
            if dec.hidden != self.encoder_output_size:
                raise ConfigError(
                    f"Luong dot attention needs decoder hidden ({dec.hidden}) == encoder output "
                    f"size ({self.encoder_output_size}); use attention: general or bahdanau")
        if dec.type in OUTPUT_FROM_HIDDEN and self.model.tie_output:
            if self.decoder_embed_dim != dec.hidden:
                raise ConfigError(f"model.tie_output with a {dec.type} decoder needs decoder embed_dim == hidden")

    @property
    def encoder_embed_dim(self) -> int:
        return self.model.encoder.embed_dim or self.model.encoder.hidden

    @property
    def decoder_embed_dim(self) -> int:
        return self.model.decoder.embed_dim or self.model.decoder.hidden

    @property
    def encoder_output_size(self) -> int:
        enc = self.model.encoder
        both_directions = "bidirectional" in section_keys(ENCODERS[enc.type]) and enc.bidirectional
        return enc.hidden * (2 if both_directions else 1)


def _check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """`choices` is a module's registry (a dict's keys or a tuple), read at call time."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# ---------------------------------------------------------------------------------------------
# which model.encoder / model.decoder keys apply to which type

# Keys every encoder and decoder type reads: `type` picks the builder, `embed_dim` sizes the embedding
# table that `build_model` makes before calling it.
COMMON_KEYS = ("type", "embed_dim")
REGISTRIES = {"encoder": ENCODERS, "decoder": DECODERS}


def section_keys(builder: Callable) -> tuple[str, ...]:
    """The config keys a registry builder reads: its keyword-only parameters (see seqed/encoders)."""
    return tuple(name for name, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY)


def applicable_keys(kind: str, type_: str) -> tuple[str, ...]:
    """Keys of `model.<kind>` (encoder | decoder) that a `type_` model reads."""
    return (*COMMON_KEYS, *section_keys(REGISTRIES[kind][type_]))


def check_applicable(data: dict, cfg: Config) -> None:
    """Reject `model.encoder` / `model.decoder` keys the user set that the chosen type never reads.

    Only the user's own keys (`data`, the YAML with overrides applied) are checked: a dataclass fills
    every other key with its default, and a checkpoint stores them all (`config_from_dict` skips this).
    A key left at its default is accepted, so a run's own `config.yaml` (every key written) loads again.
    """
    model = data.get("model")
    if not isinstance(model, dict):
        return
    for kind, registry in REGISTRIES.items():
        section = model.get(kind)
        type_ = getattr(cfg.model, kind).type
        if not isinstance(section, dict) or type_ not in registry:
            continue  # an unknown type is reported by validate()
        keys = applicable_keys(kind, type_)
        defaults = type(getattr(cfg.model, kind))()
        extra = [str(k) for k, v in section.items()
                 if k not in keys and not (hasattr(defaults, str(k)) and v == getattr(defaults, str(k)))]
        if extra:
            names = ", ".join(f"model.{kind}.{k}" for k in extra)
            others = [t for t in registry if t != type_ and all(k in applicable_keys(kind, t) for k in extra)]
            hint = f" (read by model.{kind}.type={' / '.join(others)})" if others else ""
            raise ConfigError(
                f"{names} {'does' if len(extra) == 1 else 'do'} not apply to model.{kind}.type={type_}{hint}: "
                f"remove {'it' if len(extra) == 1 else 'them'}. Keys for model.{kind}.type={type_}: {', '.join(keys)}")


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _convert(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} may not be null")
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # `X | list[X]`: a list value takes the list
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        lists = [a for a in args if typing.get_origin(a) is list]
        others = [a for a in args if typing.get_origin(a) is not list]
        if lists and others:
            tp = lists[0] if isinstance(value, (list, tuple)) else others[0]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys are errors naming the closest valid one."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {path!r}.{hint} Valid keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def config_diff(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every leaf where two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in config_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))]
    return [] if a == b else [(prefix, a, b)]


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = node[key]
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`["model.encoder.layers=2", "train.lr=1e-3"]` -> [(path, yaml-parsed value), ...]."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value (e.g. train.lr=1e-3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse the value: {err}") from None
        parsed.append((key.strip(), value))
    return parsed


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when path is None), apply overrides, validate.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: bad YAML, unknown keys, keys that do not apply to the chosen encoder or decoder
            type, wrong types or impossible values.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    for key, value in parse_overrides(overrides or []):
        _set_path(data, key, value)
    where = str(path) if path is not None else "config"
    try:
        cfg = from_dict(Config, data)
        check_applicable(data, cfg)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def config_from_dict(data: dict) -> Config:
    """Rebuild a validated `Config` from `to_dict` output (e.g. stored in a checkpoint).

    `to_dict` writes every key, so keys that do not apply to the encoder or decoder type are not errors here.
    """
    cfg = from_dict(Config, data)
    cfg.validate()
    return cfg


def expand_path(path: str) -> str:
    """Expand `~` and environment variables such as `$SEQED_DATA` in a configured path."""
    return os.path.expanduser(os.path.expandvars(path))
