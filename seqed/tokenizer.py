"""The subword tokenizer: SentencePiece models (unigram or BPE), joint or separate per language.

Unigram LM segmentation is Kudo (2018), https://arxiv.org/abs/1804.10959; BPE is Sennrich et al.
(2016), https://arxiv.org/abs/1508.07909; both through SentencePiece (Kudo & Richardson, 2018),
https://arxiv.org/abs/1808.06226. Special ids are fixed to those of `seqed.vocab` in every model.
Encoding adds no BOS/EOS: the data pipeline places them.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import sentencepiece as spm

from seqed.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

MODEL_TYPES = ("unigram", "bpe")
FORMAT = "seqed.tokenizer/1"
MAX_TRAINING_SENTENCES = 2_000_000  # SentencePiece samples this many sentences from larger corpora


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of sentences, not one string")
    lines = [t for t in texts if t and not t.isspace()]
    if not lines:
        raise ValueError(f"{name} has no non-empty sentence to train a tokenizer on: check the corpus paths")
    return lines


def _train_model(texts: list[str], *, vocab_size: int, model_type: str, character_coverage: float,
                 seed: int, input_sentence_size: int = MAX_TRAINING_SENTENCES, byte_fallback: bool = False) -> bytes:
    """Train one SentencePiece model in memory and return its serialized proto."""
    writer = io.BytesIO()
    spm.SetRandomGeneratorSeed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=writer, vocab_size=vocab_size, model_type=model_type,
        character_coverage=character_coverage, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True, byte_fallback=byte_fallback,
        hard_vocab_limit=False,  # tiny corpora get a smaller vocabulary instead of an error
        num_threads=max(1, min(16, os.cpu_count() or 1)), minloglevel=2)
    return writer.getvalue()


def _processor(proto: bytes) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor(model_proto=proto)
    ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise ValueError(f"SentencePiece model has special ids pad/unk/bos/eos={ids}, seqed needs "
                         f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}: retrain it with seqed.tokenizer.Tokenizer.train")
    return sp


def _as_batch(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("encode_src/encode_tgt take a list of sentences, not one string: wrap it as [text]")
    return list(texts)


def _as_lists(ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Accept lists of lists, or a 2-D tensor/array, as id sequences."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [row.tolist() if hasattr(row, "tolist") else list(row) for row in ids]


class Tokenizer:
    """Source and target SentencePiece models; one shared model when `joint` (or monolingual).

    Attributes:
        joint: True when one model (one vocabulary) serves both sides.
        src_vocab_size: size of the source vocabulary, special ids included.
        tgt_vocab_size: size of the target vocabulary.
    """

    def __init__(self, src_model: bytes, tgt_model: Optional[bytes] = None):
        """Wrap serialized SentencePiece protos; `tgt_model=None` shares the source model."""
        self._src_proto = bytes(src_model)
        self._tgt_proto = None if tgt_model is None else bytes(tgt_model)
        self._src = _processor(self._src_proto)
        self._tgt = self._src if tgt_model is None else _processor(self._tgt_proto)
        self.joint = tgt_model is None
        self.src_vocab_size = self._src.get_piece_size()
        self.tgt_vocab_size = self._tgt.get_piece_size()

    @classmethod
    def train(cls, src_texts: Sequence[str], tgt_texts: Optional[Sequence[str]], *, vocab_size: int = 8000,
              model_type: str = "unigram", joint: bool = True, character_coverage: float = 1.0,
              seed: int = 1, input_sentence_size: int = MAX_TRAINING_SENTENCES,
              byte_fallback: bool = False) -> "Tokenizer":
        """Train on raw sentences.

        Args:
            src_texts: source sentences (empty ones are skipped).
            tgt_texts: target sentences, or None for monolingual data (one model for both sides).
            vocab_size: wanted vocabulary size, special ids included; a soft limit, so tiny corpora
                get fewer pieces.
            model_type: "unigram" or "bpe".
            joint: one model trained on both sides (needed to share embeddings), else one per side.
            character_coverage: share of characters the model must cover (1.0 for Latin scripts).
            seed: seed of SentencePiece's sampling.
            input_sentence_size: SentencePiece trains on a shuffled sample of at most this many sentences.
            byte_fallback: characters outside the vocabulary become UTF-8 byte pieces instead of UNK.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"tokenizer vocab_size must be a positive integer, got {vocab_size!r}")
        if vocab_size <= EOS_ID + 1:
            raise ValueError(f"tokenizer vocab_size={vocab_size} leaves no room beside the 4 special ids: "
                             f"use at least a few hundred")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"tokenizer model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
        if not 0.0 < character_coverage <= 1.0:
            raise ValueError(f"tokenizer character_coverage must be in (0, 1], got {character_coverage!r}")
        src = _check_texts(src_texts, "src_texts")
        opts = dict(vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage, seed=seed,
                    input_sentence_size=input_sentence_size, byte_fallback=byte_fallback)
        if tgt_texts is None:
            return cls(_train_model(src, **opts))
        tgt = _check_texts(tgt_texts, "tgt_texts")
        if joint:
            return cls(_train_model(src + tgt, **opts))
        return cls(_train_model(src, **opts), _train_model(tgt, **opts))

    # -- encoding -------------------------------------------------------------------------------
    def encode_src(self, texts: Sequence[str]) -> list[list[int]]:
        """Source sentences to piece ids, no BOS/EOS."""
        return self._src.encode(_as_batch(texts))

    def encode_tgt(self, texts: Sequence[str]) -> list[list[int]]:
        """Target sentences to piece ids, no BOS/EOS."""
        return self._tgt.encode(_as_batch(texts))

    def decode_src(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Id sequences to text; PAD/BOS/EOS are dropped (they are control pieces)."""
        return self._src.decode(_as_lists(ids))

    def decode_tgt(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Id sequences to text; PAD/BOS/EOS are dropped (they are control pieces)."""
        return self._tgt.decode(_as_lists(ids))

    def src_pieces(self, text: str) -> list[str]:
        """The source pieces of one sentence, e.g. for attention plots."""
        return self._src.encode(text, out_type=str)

    def tgt_pieces(self, text: str) -> list[str]:
        """The target pieces of one sentence."""
        return self._tgt.encode(text, out_type=str)

    def src_id_to_piece(self, ids: Sequence[int]) -> list[str]:
        """Source piece ids -> their pieces, SentencePiece's word-start marker kept (e.g. for attention plots)."""
        return [self._src.id_to_piece(i) for i in ids]

    def tgt_id_to_piece(self, ids: Sequence[int]) -> list[str]:
        """Target piece ids -> their pieces, SentencePiece's word-start marker kept."""
        return [self._tgt.id_to_piece(i) for i in ids]

    def pieces(self, side: str) -> list[str]:
        """Every piece of the "src" or "tgt" vocabulary, in id order (e.g. to compare two tokenizers)."""
        if side not in ("src", "tgt"):
            raise ValueError(f"Tokenizer.pieces: side must be 'src' or 'tgt', got {side!r}")
        sp = self._src if side == "src" else self._tgt
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain types only (model protos as bytes): loadable with torch.load(weights_only=True)."""
        return {"format": FORMAT, "joint": self.joint, "src_model": self._src_proto, "tgt_model": self._tgt_proto}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if not isinstance(d, dict) or d.get("format") != FORMAT or "src_model" not in d:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a seqed tokenizer dict (format {got!r}, expected {FORMAT!r}): "
                             f"pass the dict written by Tokenizer.to_dict")
        return cls(d["src_model"], None if d.get("joint") else d["tgt_model"])

    def save(self, directory) -> None:
        """Write joint.model (or src.model and tgt.model) and tokenizer.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {"joint": "joint.model"} if self.joint else {"src": "src.model", "tgt": "tgt.model"}
        protos = {"joint": self._src_proto, "src": self._src_proto, "tgt": self._tgt_proto}
        for side, name in files.items():
            (directory / name).write_bytes(protos[side])
        meta = {"format": FORMAT, "joint": self.joint, "files": files,
                "src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size}
        (directory / "tokenizer.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory) -> "Tokenizer":
        """Read a directory written by `save`."""
        directory = Path(directory)
        meta_path = directory / "tokenizer.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no tokenizer at {meta_path}: point at the directory written by "
                                    f"Tokenizer.save (a run's out_dir/tokenizer)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta.get("files", {})

        def read(side: str) -> bytes:
            path = directory / files.get(side, f"{side}.model")
            if not path.is_file():
                raise FileNotFoundError(f"{meta_path} names {path}, which is missing")
            return path.read_bytes()

        if meta.get("joint"):
            return cls(read("joint"))
        return cls(read("src"), read("tgt"))

    @classmethod
    def from_path(cls, path) -> "Tokenizer":
        """A directory written by `save`, or one SentencePiece `.model` file (joint; seqed's special ids)."""
        path = Path(os.path.expandvars(os.path.expanduser(str(path))))
        if path.is_dir():
            return cls.load(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer.model: no file or directory {path}")
        try:
            return cls(path.read_bytes())
        except RuntimeError as err:
            raise ValueError(f"tokenizer.model: {path} is not a SentencePiece model ({err})") from None

    def __repr__(self) -> str:
        kind = "joint" if self.joint else "separate"
        return f"Tokenizer({kind}, src_vocab_size={self.src_vocab_size}, tgt_vocab_size={self.tgt_vocab_size})"
