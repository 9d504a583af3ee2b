"""SentencePiece wrapper: special ids, round trips, persistence, argument checks."""

import io
import random

import pytest
import torch

from seqed.tokenizer import Tokenizer
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

EN = "the a big small red blue cat dog house car sees eats runs near under".split()
FR = "le la un une grand petit rouge bleu chat chien maison voiture voit mange court près sous".split()


def _corpus(words, n=300, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def texts():
    return _corpus(EN), _corpus(FR, seed=1)


@pytest.fixture(scope="module")
def joint_unigram(texts):
    return Tokenizer.train(*texts, vocab_size=80, model_type="unigram", joint=True)


@pytest.fixture(scope="module")
def separate_bpe(texts):
    return Tokenizer.train(*texts, vocab_size=80, model_type="bpe", joint=False)


def _special_pieces(tok_side):
    return [tok_side.id_to_piece(i) for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID)]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("joint", [True, False])
def test_round_trip_and_special_ids(texts, model_type, joint):
    src, tgt = texts
    tok = Tokenizer.train(src, tgt, vocab_size=80, model_type=model_type, joint=joint)
    assert tok.joint is joint
    for side in (tok._src, tok._tgt):
        assert (side.pad_id(), side.unk_id(), side.bos_id(), side.eos_id()) == (0, 1, 2, 3)
        assert _special_pieces(side) == ["<pad>", "<unk>", "<s>", "</s>"]
    src_ids, tgt_ids = tok.encode_src(src[:20]), tok.encode_tgt(tgt[:20])
    assert all(min(row) > EOS_ID for row in src_ids + tgt_ids)  # no specials, no unk in-domain
    assert max(max(r) for r in src_ids) < tok.src_vocab_size
    assert max(max(r) for r in tgt_ids) < tok.tgt_vocab_size
    assert tok.decode_src(src_ids) == src[:20]
    assert tok.decode_tgt(tgt_ids) == tgt[:20]
    if joint:
        assert tok.src_vocab_size == tok.tgt_vocab_size
        assert tok.encode_src(tgt[:5]) == tok.encode_tgt(tgt[:5])


def test_separate_models_differ(separate_bpe):
    # the English-only source model never saw "è"; the French target model did
    assert UNK_ID in separate_bpe.encode_src(["près"])[0]
    assert UNK_ID not in separate_bpe.encode_tgt(["près"])[0]


def test_decode_strips_pad_bos_eos(joint_unigram):
    ids = joint_unigram.encode_tgt(["le chat voit"])[0]
    padded = [BOS_ID] + ids + [EOS_ID, PAD_ID, PAD_ID]
    assert joint_unigram.decode_tgt([padded]) == ["le chat voit"]
    assert joint_unigram.decode_tgt(torch.tensor([padded])) == ["le chat voit"]


def test_pieces_concatenate_to_text(joint_unigram):
    pieces = joint_unigram.src_pieces("the big cat")
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).replace("\u2581", " ").strip() == "the big cat"


def test_monolingual_shares_one_model(texts):
    tok = Tokenizer.train(texts[0], None, vocab_size=60)
    assert tok.joint and tok.src_vocab_size == tok.tgt_vocab_size
    assert tok.encode_src(texts[0][:5]) == tok.encode_tgt(texts[0][:5])


def test_tiny_corpus_gets_small_vocab():
    tok = Tokenizer.train(["a b c", "b c d"], ["x y", "y z"], vocab_size=8000)
    assert 4 < tok.src_vocab_size < 8000


@pytest.mark.parametrize("fixture", ["joint_unigram", "separate_bpe"])
def test_dict_and_directory_persistence(request, texts, tmp_path, fixture):
    tok = request.getfixturevalue(fixture)
    buf = io.BytesIO()
    torch.save({"tokenizer": tok.to_dict()}, buf)
    buf.seek(0)
    restored = Tokenizer.from_dict(torch.load(buf, weights_only=True)["tokenizer"])
    tok.save(tmp_path / "tok")
    loaded = Tokenizer.load(tmp_path / "tok")
    names = sorted(p.name for p in (tmp_path / "tok").iterdir())
    assert names == (["joint.model", "tokenizer.json"] if tok.joint else ["src.model", "tgt.model", "tokenizer.json"])
    for other in (restored, loaded):
        assert other.joint == tok.joint
        assert (other.src_vocab_size, other.tgt_vocab_size) == (tok.src_vocab_size, tok.tgt_vocab_size)
        assert other.encode_src(texts[0][:30]) == tok.encode_src(texts[0][:30])
        assert other.encode_tgt(texts[1][:30]) == tok.encode_tgt(texts[1][:30])


def test_training_is_deterministic(texts):
    a = Tokenizer.train(*texts, vocab_size=70, seed=3)
    b = Tokenizer.train(*texts, vocab_size=70, seed=3)
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_size=0), "vocab_size"),
    (dict(vocab_size=-5), "vocab_size"),
    (dict(vocab_size=100.0), "vocab_size"),
    (dict(model_type="word"), "model_type"),
    (dict(character_coverage=0.0), "character_coverage"),
])
def test_bad_arguments_raise(texts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Tokenizer.train(*texts, **kwargs)


def test_empty_training_text_raises(texts):
    with pytest.raises(ValueError, match="src_texts"):
        Tokenizer.train(["", "  "], texts[1], vocab_size=50)
    with pytest.raises(ValueError, match="tgt_texts"):
        Tokenizer.train(texts[0], [], vocab_size=50)


def test_load_errors(tmp_path, joint_unigram):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="to_dict"):
        Tokenizer.from_dict({"something": 1})
    with pytest.raises(ValueError, match="list of sentences"):
        joint_unigram.encode_src("one string")
