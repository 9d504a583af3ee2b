"""Export a trained seqed Transformer to a CTranslate2 model directory (https://github.com/OpenNMT/CTranslate2).

The model is rebuilt weight by weight with CTranslate2's Python spec API (`TransformerSpec` from a
`TransformerEncoderSpec` and a `TransformerDecoderSpec`), so the exported network computes what
seqed's computes:

* pre-norm layers (LayerNorm eps of the torch modules) with one final LayerNorm per stack, ReLU
  feed-forward blocks, biases on every attention projection;
* token embeddings times sqrt(d_model); an embedding projection (embed_dim != hidden) is folded
  into the table (``project(E[x] * s) = (E @ P^T)[x] * s``);
* positions 0, 1, ... on both sides (the decoder's BOS at 0), written out as a table for both the
  learned and the sinusoidal kind: CTranslate2's own sinusoids concatenate sines and cosines
  where seqed interleaves them;
* sources end with EOS (``add_source_eos``), the decoder starts from BOS, ids 0-3 are
  PAD/UNK/BOS/EOS as in `seqed.vocab`.

The directory holds model.bin, config.json, the vocabularies (the SentencePiece pieces in id order),
the SentencePiece models with tokenizer.json (as `Tokenizer.save` writes them) and
seqed_export.json (where it came from, position limits, the checkpoint's search settings).
`seqed.translator_ct2.CTranslate2Translator` translates with it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import sentencepiece as spm
from torch import Tensor, nn

from seqed.config import Config, to_dict
from seqed.decoders.transformer import TransformerDecoder
from seqed.embeddings import LearnedPositions, SinusoidalPositions, TokenEmbedding
from seqed.encoders.transformer import TransformerEncoder
from seqed.errors import SeqedError
from seqed.files import WriteError, write_failure
from seqed.layers import MultiHeadAttention
from seqed.model import EncoderDecoder
from seqed.tokenizer import Tokenizer
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

EXPORT_FORMAT = "seqed.ctranslate2/1"
EXPORT_META = "seqed_export.json"
INSTALL_HINT = "pip install 'seqed[ctranslate2]'"


class ExportError(SeqedError, ValueError):
    """A model that cannot be exported (or run) with CTranslate2; the message says why and what to do."""


def require_ctranslate2():
    """Import and return the ctranslate2 package, or raise ExportError saying how to install it."""
    try:
        import ctranslate2
    except ImportError as err:
        raise ExportError(f"CTranslate2 is not installed ({err}); install it with: {INSTALL_HINT}") from None
    return ctranslate2


def check_exportable(model: EncoderDecoder, cfg: Optional[Config] = None) -> None:
    """Raise ExportError unless CTranslate2 can run `model` exactly.

    CTranslate2 runs Transformer encoder-decoders in which the decoder attends over every encoder
    state, so RNN encoders or decoders, the fixed-code and variational bottlenecks, and the
    Transformer encoder's summary token (``model.encoder.code: token``, which every source token
    attends to) have no counterpart there.
    """
    where = "model.encoder.type" if cfg is None else f"model.encoder.type={cfg.model.encoder.type}"
    if not isinstance(model.encoder, TransformerEncoder):
        raise ExportError(f"cannot export the encoder, a {type(model.encoder).__name__} ({where}): CTranslate2 runs "
                          f"Transformer encoder-decoders only; train with model.encoder.type=transformer")
    where = "model.decoder.type" if cfg is None else f"model.decoder.type={cfg.model.decoder.type}"
    if not isinstance(model.decoder, TransformerDecoder):
        raise ExportError(f"cannot export the decoder, a {type(model.decoder).__name__} ({where}): CTranslate2 runs "
                          f"Transformer encoder-decoders only; train with model.decoder.type=transformer")
    if model.bottleneck is not None:
        kind = cfg.model.bottleneck if cfg is not None else type(model.bottleneck).__name__
        raise ExportError(f"cannot export a model with the {kind!r} bottleneck (model.bottleneck): CTranslate2's "
                          f"decoder attends over every encoder state and has no fixed-code or variational "
                          f"bottleneck; only model.bottleneck=memory models can be exported")
    if model.encoder.summary is not None:
        raise ExportError("cannot export a Transformer encoder with a summary token (model.encoder.code=token): "
                          "every source token attends to it and CTranslate2 has no such input; "
                          "use model.encoder.code=mean")


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().float().numpy())


def _linear(spec, *linears: nn.Linear) -> None:
    """Set a LinearSpec from one torch Linear, or from several fused along the output dimension."""
    spec.weight = np.concatenate([_np(m.weight) for m in linears])  # (sum of out, in)
    if linears[0].bias is not None:
        spec.bias = np.concatenate([_np(m.bias) for m in linears])


def _layer_norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma = _np(norm.weight)
    spec.beta = _np(norm.bias)


def _self_attention(spec, norm: nn.LayerNorm, attn: MultiHeadAttention) -> None:
    _layer_norm(spec.layer_norm, norm)
    _linear(spec.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)  # fused (3D, D)
    _linear(spec.linear[1], attn.out_proj)


def _cross_attention(spec, norm: nn.LayerNorm, attn: MultiHeadAttention) -> None:
    _layer_norm(spec.layer_norm, norm)
    _linear(spec.linear[0], attn.q_proj)
    _linear(spec.linear[1], attn.k_proj, attn.v_proj)  # fused (2D, memory_size): the widths may differ
    _linear(spec.linear[2], attn.out_proj)


def _ffn(spec, norm: nn.LayerNorm, ffn) -> None:
    _layer_norm(spec.layer_norm, norm)
    _linear(spec.linear_0, ffn.inner)
    _linear(spec.linear_1, ffn.outer)


def _embeddings(spec, embed: TokenEmbedding) -> None:
    """Token table (folding any projection to d_model), scaling and position table of one side."""
    table = embed.embedding.weight  # (V, E)
    if isinstance(embed.project, nn.Linear):
        table = table @ embed.project.weight.T  # (V, D): the projection has no bias, so it commutes with the scale
    d_model = table.shape[1]
    if not math.isclose(embed.scale, math.sqrt(d_model)):
        raise ExportError(f"embedding scale {embed.scale} is not sqrt(d_model={d_model}); CTranslate2 "
                          f"scales by sqrt(d_model) only")
    emb_spec = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    emb_spec.weight = _np(table)
    spec.scale_embeddings = True  # multiply by sqrt(depth of the table) = sqrt(D)
    positions = embed.positions
    if isinstance(positions, SinusoidalPositions):
        spec.position_encodings.encodings = _np(positions.table)  # (P, D), sin/cos interleaved as in seqed
    elif isinstance(positions, LearnedPositions):
        spec.position_encodings.encodings = _np(positions.embedding.weight)  # (P, D)
    else:
        raise ExportError(f"cannot export position encodings of type {type(positions).__name__}")


def _layer_norm_eps(model: EncoderDecoder) -> float:
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) != 1:
        raise ExportError(f"CTranslate2 uses one LayerNorm epsilon for the whole model; this one has {sorted(eps)}")
    return eps.pop()


def pieces(proto: bytes) -> list[str]:
    """The pieces of a serialized SentencePiece model, in id order (the CTranslate2 vocabulary)."""
    sp = spm.SentencePieceProcessor(model_proto=proto)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def vocabularies(tokenizer: Tokenizer) -> tuple[list[str], list[str]]:
    """(source pieces, target pieces) of a seqed tokenizer."""
    d = tokenizer.to_dict()
    src = pieces(d["src_model"])
    return src, (src if d.get("joint") else pieces(d["tgt_model"]))


def build_spec(model: EncoderDecoder, tokenizer: Tokenizer, cfg: Optional[Config] = None):
    """A validated `ctranslate2.specs.TransformerSpec` holding `model`'s weights and `tokenizer`'s vocabularies.

    Raises:
        ExportError: the model cannot be exported (see `check_exportable`), or ctranslate2 is missing.
    """
    ct2 = require_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    check_exportable(model, cfg)
    enc, dec = model.encoder, model.decoder
    relu = common_spec.Activation.RELU
    enc_spec = transformer_spec.TransformerEncoderSpec(
        len(enc.layers), enc.layers[0].attn.heads, pre_norm=True, activation=relu)
    dec_spec = transformer_spec.TransformerDecoderSpec(len(dec.layers), dec.heads, pre_norm=True, activation=relu)

    _embeddings(enc_spec, enc.embed)
    for layer_spec, layer in zip(enc_spec.layer, enc.layers):
        _self_attention(layer_spec.self_attention, layer.attn_norm, layer.attn)
        _ffn(layer_spec.ffn, layer.ffn_norm, layer.ffn)
    _layer_norm(enc_spec.layer_norm, enc.norm)

    _embeddings(dec_spec, dec.embed)
    for layer_spec, layer in zip(dec_spec.layer, dec.layers):
        _self_attention(layer_spec.self_attention, layer.self_norm, layer.self_attn)
        _cross_attention(layer_spec.attention, layer.cross_norm, layer.cross_attn)
        _ffn(layer_spec.ffn, layer.ffn_norm, layer.ffn)
    _layer_norm(dec_spec.layer_norm, dec.norm)
    _linear(dec_spec.projection, dec.output)  # (V, D), tied or not

    spec = transformer_spec.TransformerSpec(enc_spec, dec_spec)
    src_vocab, tgt_vocab = vocabularies(tokenizer)
    specials = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
    tokens = {name: tgt_vocab[i] for name, i in specials.items()}
    if any(src_vocab[i] != tokens[name] for name, i in specials.items()):
        raise ExportError(f"source and target special pieces differ: {src_vocab[:4]} vs {tgt_vocab[:4]}")
    spec.config.unk_token = tokens["unk"]
    spec.config.bos_token = tokens["bos"]
    spec.config.eos_token = tokens["eos"]
    spec.config.decoder_start_token = tokens["bos"]  # seqed's decoder starts from BOS at position 0
    spec.config.add_source_bos = False
    spec.config.add_source_eos = True  # sources end with EOS, as in training
    spec.config.layer_norm_epsilon = _layer_norm_eps(model)
    spec.register_source_vocabulary(src_vocab)
    spec.register_target_vocabulary(tgt_vocab)
    try:
        spec.validate()
    except ValueError as err:
        raise ExportError(f"CTranslate2 {ct2.__version__} rejected the converted model: {err}") from None
    return spec


def export_ctranslate2(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                       quantization: Optional[str] = None, force: bool = False) -> Path:
    """Convert a seqed checkpoint (file or run directory) into a CTranslate2 model directory.

    Args:
        checkpoint: a seqed checkpoint file, or a run directory (its checkpoint_best.pt).
        out_dir: the directory to write; written next to it under a temporary name, then renamed,
            so a failed export leaves nothing half-written.
        quantization: store the weights quantized (int8, int8_float32, int16, float16, bfloat16, ...);
            None keeps float32, from which CTranslate2 can still quantize at load time (compute_type).
        force: replace an existing `out_dir`.

    Returns:
        `out_dir`.

    Raises:
        ExportError: the model cannot be exported, ctranslate2 is missing, or `out_dir` exists.
        FileNotFoundError, CheckpointError: see `seqed.loading.load_model`.
    """
    from seqed.loading import load_model

    out = Path(out_dir)
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists; choose a new directory or pass force=True (--force)")
    require_ctranslate2()
    loaded = load_model(str(checkpoint), device="cpu")
    try:
        spec = build_spec(loaded.model, loaded.tokenizer, loaded.config)
    except ExportError as err:
        raise ExportError(f"{checkpoint}: {err}") from None
    try:
        spec.optimize(quantization=quantization)
    except ValueError as err:
        raise ExportError(f"quantization {quantization!r}: {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        spec.save(str(tmp))
        loaded.tokenizer.save(tmp)
        m = loaded.config.model
        meta = {
            "format": EXPORT_FORMAT,
            "checkpoint": str(checkpoint),
            "step": loaded.step,
            "quantization": quantization or "float32",
            "max_src_len": m.max_pieces,        # source pieces + EOS the encoder positions cover
            "max_output_len": m.max_output_len,  # output tokens the decoder positions cover
            "search": to_dict(loaded.config.search),
            "languages": [loaded.config.data.src_lang, loaded.config.data.tgt_lang],  # source, target
        }
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(err)
        if failure is None:
            raise
        raise WriteError(out, *failure) from None  # e.g. a full disk: the directory is left as it was
    return out


def read_export_meta(model_dir: str | os.PathLike) -> dict:
    """The seqed_export.json of an exported directory.

    Raises:
        FileNotFoundError: no such directory.
        ExportError: the directory was not written by `export_ctranslate2`.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"CTranslate2 model directory not found: {model_dir}")
    path = model_dir / EXPORT_META
    if not path.is_file() or not (model_dir / "model.bin").is_file():
        raise ExportError(f"{model_dir} is not a seqed CTranslate2 export (no {EXPORT_META} or model.bin): "
                          f"create it with seqed.export.export_ctranslate2 (seqed export --format ctranslate2)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}; export it again")
    return meta
