"""`EncoderDecoder` (any encoder with any decoder) and `build_model`, which maps a config to modules
through the `ENCODERS` / `DECODERS` registries (`seqed/encoders`, `seqed/decoders`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from seqed.bottleneck import BOTTLENECKS, BottleneckOutput, build_bottleneck
from seqed.config import Config, ConfigError, section_keys
from seqed.decoders import DECODERS
from seqed.decoders.rnn import RNNDecoder
from seqed.decoders.transformer import TransformerDecoder
from seqed.encoders import ENCODERS
from seqed.encoders.rnn import RNNEncoder
from seqed.encoders.transformer import TransformerEncoder
from seqed.memory import Memory
from seqed.vocab import PAD_ID


@dataclass
class ModelOutput:
    """Teacher-forced output.

    Attributes:
        logits: (B, T, V); (N, V) for the N positions kept by `forward(..., keep)`.
        attn: (B, T, S) attention over the source, or None.
        kl: scalar KL term of a variational bottleneck (summed over the batch), or None.
        mu: (B, Z) posterior mean of a variational bottleneck, or None.
    """

    logits: Tensor
    attn: Optional[Tensor] = None
    kl: Optional[Tensor] = None
    mu: Optional[Tensor] = None


class EncoderDecoder(nn.Module):
    """`encode(src) -> Memory`, then `decoder(tgt_in, memory)`; search uses `encode` and `decoder.step`.

    The bottleneck (identity for translation) decides what of the encoder's memory the decoder sees;
    `bottleneck_kind` names it (one of `seqed.bottleneck.BOTTLENECKS`: "memory", "code", "variational").
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, bottleneck: Optional[nn.Module] = None, *,
                 bottleneck_kind: Optional[str] = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.bottleneck = bottleneck
        if bottleneck_kind is None:
            bottleneck_kind = "memory" if bottleneck is None else "code"
        if bottleneck_kind not in BOTTLENECKS or (bottleneck is None) != (bottleneck_kind == "memory"):
            raise ValueError(f"EncoderDecoder: bottleneck_kind={bottleneck_kind!r} does not fit the bottleneck "
                             f"module {type(bottleneck).__name__}")
        self.bottleneck_kind = bottleneck_kind

    def encode_full(self, src: Tensor) -> BottleneckOutput:
        """src (B, S) long, PAD padded -> the bottleneck's output (memory, and KL for a VAE)."""
        memory = self.encoder(src)
        if self.bottleneck is None:
            return BottleneckOutput(memory)
        return self.bottleneck(memory)

    def encode(self, src: Tensor) -> Memory:
        """src (B, S) long, PAD padded -> the Memory the decoder sees."""
        return self.encode_full(src).memory

    def forward(self, src: Tensor, tgt_in: Tensor, keep: Optional[Tensor] = None) -> ModelOutput:
        """src (B, S), tgt_in (B, T) starting with BOS -> logits (B, T, V).

        With `keep` (B, T) bool, logits are (N, V) for the N kept positions (row-major): the training
        loss of a masked autoencoder needs the vocabulary projection at the masked positions only.
        """
        enc = self.encode_full(src)
        out = self.decoder(tgt_in, enc.memory, keep)
        return ModelOutput(logits=out.logits, attn=out.attn, kl=enc.kl, mu=enc.mu)


def _embedding(vocab: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(vocab, dim, padding_idx=PAD_ID)
    nn.init.normal_(emb.weight, mean=0.0, std=dim ** -0.5)
    with torch.no_grad():
        emb.weight[PAD_ID].zero_()
    return emb


def _section_kwargs(builder, section) -> dict:
    """The config keys `builder` reads (its keyword-only parameters), with their values from `section`."""
    return {key: getattr(section, key) for key in section_keys(builder)}


def build_encoder(cfg: Config, embedding: nn.Embedding) -> nn.Module:
    """`ENCODERS[model.encoder.type]` over `embedding`, given the keys that type reads."""
    builder = ENCODERS[cfg.model.encoder.type]
    return builder(embedding, cfg.model.max_positions, **_section_kwargs(builder, cfg.model.encoder))


def build_decoder(cfg: Config, embedding: nn.Embedding, memory_size: int, code_size: int) -> nn.Module:
    """`DECODERS[model.decoder.type]` over `embedding` and a memory of the given widths."""
    builder = DECODERS[cfg.model.decoder.type]
    return builder(embedding, memory_size, code_size, cfg.model.max_positions, cfg.model.tie_output,
                   **_section_kwargs(builder, cfg.model.decoder))


def build_model(cfg: Config, src_vocab: int, tgt_vocab: int) -> EncoderDecoder:
    """Map a validated config and the tokenizer's vocabulary sizes to an `EncoderDecoder`."""
    src_emb = _embedding(src_vocab, cfg.encoder_embed_dim)
    if cfg.model.share_embeddings:
        if src_vocab != tgt_vocab:
            raise ConfigError(f"model.share_embeddings needs one vocabulary, got {src_vocab} and {tgt_vocab}")
        tgt_emb = src_emb
    else:
        tgt_emb = _embedding(tgt_vocab, cfg.decoder_embed_dim)
    encoder = build_encoder(cfg, src_emb)
    m = cfg.model
    bottleneck = build_bottleneck(m.bottleneck, code_size=encoder.code_size,
                                  code_dim=m.code_dim or encoder.code_size, free_bits=m.free_bits)
    memory_size = bottleneck.output_size or encoder.output_size
    decoder = build_decoder(cfg, tgt_emb, memory_size=memory_size, code_size=bottleneck.code_size)
    if m.tie_encoder_decoder:
        tie_encoder_decoder(encoder, decoder)
    return EncoderDecoder(encoder, decoder, None if m.bottleneck == "memory" else bottleneck,
                          bottleneck_kind=m.bottleneck)


def tie_encoder_decoder(encoder: nn.Module, decoder: nn.Module) -> int:
    """Share encoder and decoder weights wherever shapes allow (symmetric autoencoders).

    * RNN: every recurrent weight of the decoder whose name and shape match the encoder's (the
      whole cell for a unidirectional encoder and a code-only decoder of the same size; at least the
      hidden-to-hidden matrices otherwise).
    * Transformer: layer i of the decoder uses layer i of the encoder's self-attention,
      feed-forward block and their layer norms; cross-attention stays the decoder's own.

    Returns:
        The number of parameter tensors now shared.

    Raises:
        ConfigError: nothing could be shared (e.g. an RNN encoder with a Transformer decoder).
    """
    shared = 0
    if isinstance(encoder, RNNEncoder) and isinstance(decoder, RNNDecoder):
        if type(encoder.rnn) is type(decoder.rnn):
            enc_params = dict(encoder.rnn.named_parameters())
            for name, param in list(decoder.rnn.named_parameters()):
                other = enc_params.get(name)
                if other is not None and other.shape == param.shape:
                    setattr(decoder.rnn, name, other)  # RNNBase.__setattr__ refreshes its flat weights
                    shared += 1
    elif isinstance(encoder, TransformerEncoder) and isinstance(decoder, TransformerDecoder):
        for enc_layer, dec_layer in zip(encoder.layers, decoder.layers):
            pairs = (("attn", "self_attn"), ("attn_norm", "self_norm"), ("ffn", "ffn"), ("ffn_norm", "ffn_norm"))
            for enc_name, dec_name in pairs:
                enc_mod, dec_mod = getattr(enc_layer, enc_name), getattr(dec_layer, dec_name)
                if [p.shape for p in enc_mod.parameters()] == [p.shape for p in dec_mod.parameters()]:
                    setattr(dec_layer, dec_name, enc_mod)
                    shared += len(list(enc_mod.parameters()))
    if shared == 0:
        raise ConfigError("model.tie_encoder_decoder: no encoder and decoder weights have matching shapes "
                          "(use the same type, hidden size and cell for both, a unidirectional RNN encoder)")
    return shared


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
