"""Ensembles: one model or two copies decode like the model; a step is the log of the members' mean
probability; beam search over mixed architectures rescores exactly; load_ensemble checks vocabularies."""

import copy
import random

import pytest
import torch

from seqed.checkpoint import save_atomic
from seqed.config import load_config, to_dict
from seqed.ensemble import Ensemble
from seqed.loading import load_ensemble, load_model
from seqed.model import build_model
from seqed.search import beam_search, greedy_search, sample_search
from seqed.tokenizer import Tokenizer
from seqed.translator import Translator
from seqed.vocab import BOS_ID
from test_search import TinyModel, random_src, rescore

pytestmark = pytest.mark.usefixtures("one_thread")
KW = dict(max_len_a=1.5, max_len_b=2)


def tiny(seed):
    torch.manual_seed(seed)
    return TinyModel().eval()


def same_output(a, b, atol=1e-5):
    assert [[h.tokens for h in hyps] for hyps in a] == [[h.tokens for h in hyps] for hyps in b]
    for ha, hb in zip((h for hyps in a for h in hyps), (h for hyps in b for h in hyps)):
        assert ha.log_prob == pytest.approx(hb.log_prob, abs=atol)
        assert ha.score == pytest.approx(hb.score, abs=atol)
        torch.testing.assert_close(ha.attn, hb.attn)


@pytest.mark.parametrize("members", [1, 2])
def test_ensemble_of_copies_decodes_like_the_model(members):
    model = tiny(0)
    ensemble = Ensemble([model] + [copy.deepcopy(model) for _ in range(members - 1)])
    src = random_src(12, [5, 9, 3, 7], seed=1)
    same_output(greedy_search(ensemble, src, **KW), greedy_search(model, src, **KW))
    beam = dict(beam_size=3, nbest=3, length_penalty=0.6, **KW)
    same_output(beam_search(ensemble, src, **beam), beam_search(model, src, **beam))
    draw = lambda m: sample_search(m, src, nbest=4, generator=torch.Generator().manual_seed(0), **KW)  # noqa: E731
    same_output(draw(ensemble), draw(model))


def test_ensemble_step_is_the_log_of_the_mean_probability():
    models = [tiny(0), tiny(1), tiny(2)]
    ensemble = Ensemble(models)
    src = random_src(12, [5, 9, 3], seed=2)
    with torch.no_grad():
        memory = ensemble.encode(src)
        state = ensemble.decoder.init_state(memory)
        singles = [(m, m.encode(src)) for m in models]
        singles = [(m, mem, m.decoder.init_state(mem)) for m, mem in singles]
        tokens = torch.full((3,), BOS_ID)
        for t in range(4):
            mixed, state = ensemble.decoder.step(tokens, memory, state)  # (3, V)
            probs = []
            for i, (m, mem, st) in enumerate(singles):
                logits, st = m.decoder.step(tokens, mem, st)
                probs.append(logits.softmax(-1))
                singles[i] = (m, mem, st)
            torch.testing.assert_close(mixed, (sum(probs) / 3).log(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(3))  # already normalised
            torch.testing.assert_close(state.attn, sum(s.attn for _, _, s in singles) / 3)
            tokens = torch.tensor([4 + t, 5, 6 + t % 3])
        # index_select reorders every member's state
        picked = state.index_select(torch.tensor([2, 0]))
        torch.testing.assert_close(picked.members[1].hidden, singles[1][2].hidden[[2, 0]])


def test_beam_search_over_mixed_architectures_rescores_under_the_mixture():
    cfg = lambda *o: load_config(None, ["model.encoder.hidden=16", "model.decoder.hidden=16", *o])  # noqa: E731
    torch.manual_seed(0)
    transformer = build_model(cfg("model.encoder.heads=2", "model.decoder.heads=2", "model.encoder.ffn=32",
                                  "model.decoder.ffn=32", "model.encoder.layers=1", "model.decoder.layers=1"),
                              20, 20).eval()
    rnn = build_model(cfg("model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.embed_dim=8",
                          "model.decoder.embed_dim=8", "model.encoder.reverse_source=true"), 20, 20).eval()
    ensemble = Ensemble([transformer, rnn])
    src = random_src(20, [6, 4, 8], seed=3)
    out = beam_search(ensemble, src, beam_size=3, nbest=2, length_penalty=0.0, **KW)
    with torch.no_grad():
        for row, hyps in zip(src, out):
            assert len(hyps) == 2
            for h in hyps:
                assert h.log_prob == pytest.approx(rescore(ensemble, row, h.tokens), abs=1e-4)
                assert h.log_prob != pytest.approx(rescore(rnn, row, h.tokens), abs=1e-3)
    assert len(Translator(ensemble, None, beam_size=2).translate_ids([[5, 6, 7]])[0]) == 1


SENTENCES = ["the cat sees a dog", "a red house", "the woman walks with the man", "a big small street"]


SMALL = ("model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.heads=2", "model.decoder.heads=2",
         "model.encoder.ffn=32", "model.decoder.ffn=32", "model.encoder.layers=1", "model.decoder.layers=1")


def write_checkpoint(path, vocab_size, seed, *overrides, base=SMALL):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(" ".join(SENTENCES).split()) for _ in range(rng.randint(2, 7))) for _ in range(200)]
    tokenizer = Tokenizer.train(texts, texts, vocab_size=vocab_size, model_type="bpe")
    cfg = load_config(None, [*base, *overrides])
    torch.manual_seed(seed)
    model = build_model(cfg, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    save_atomic({"version": 1, "model": model.state_dict(), "config": to_dict(cfg),
                 "tokenizer": tokenizer.to_dict()}, path)
    return str(path)


def test_load_ensemble_checks_vocabularies(tmp_path):
    a = write_checkpoint(tmp_path / "a.pt", 60, 0)
    b = write_checkpoint(tmp_path / "b.pt", 60, 1, "model.encoder={type: rnn, hidden: 16, layers: 1, embed_dim: 8}",
                         "model.decoder={type: rnn, hidden: 16, layers: 1, embed_dim: 8}", "model.max_positions=64",
                         "data.max_len=30", base=())
    c = write_checkpoint(tmp_path / "c.pt", 50, 2)
    loaded = load_ensemble([a, b], device="cpu")
    assert isinstance(loaded.model, Ensemble) and len(loaded.model) == 2 and not loaded.model.training
    assert loaded.max_pieces == min(load_model(p, "cpu").max_pieces for p in (a, b)) < load_model(a).max_pieces
    out = Translator(loaded.model, loaded.tokenizer, beam_size=3, max_len_b=3).translate_text(SENTENCES[:2])
    assert len(out) == 2
    with pytest.raises(ValueError, match=r"cannot ensemble .*a\.pt and .*c\.pt: their source vocabularies differ "
                                         r"\(60 and 50 pieces\)"):
        load_ensemble([a, b, c], device="cpu")
    with pytest.raises(ValueError, match="at least one"):
        load_ensemble([], device="cpu")
