"""Sampling search on the scripted log-probabilities of test_search: top-k=1 is greedy, top-p never
leaves the nucleus, a seed reproduces, a low temperature approaches greedy; Translator options."""

import math

import pytest
import torch

from seqed.search import Sampler, greedy_search, sample_search
from seqed.translator import Translator, parse_sampling
from seqed.vocab import EOS_ID
from test_search import SCRIPT, DEFAULT, CharTokenizer, CopyModel, ScriptedModel, scripted_src

LIMITS = dict(max_len_a=1.0, max_len_b=0)


def sample(src, seed=0, **kwargs):
    model = ScriptedModel()
    out = sample_search(model, src, generator=torch.Generator().manual_seed(seed), **LIMITS, **kwargs)
    return out, model.decoder.batch_sizes


def script_log_prob(sentence, tokens):
    """log p(tokens + EOS) under the script."""
    total, prefix = 0.0, ()
    for tok in list(tokens) + [EOS_ID]:
        total += math.log(SCRIPT.get((sentence, prefix), DEFAULT)[tok])
        prefix += (tok,)
    return total


def test_top_k_1_is_greedy():
    src = scripted_src((10, 5), (20, 3), (30, 6))
    greedy = greedy_search(ScriptedModel(), src, **LIMITS)
    sampled, sizes = sample(src, nbest=3, top_k=1)
    assert sizes[0] == 3 * 3  # nbest rows per sentence in one batch
    for g, hyps in zip(greedy, sampled):
        assert len(hyps) == 3
        for h in hyps:
            assert h.tokens == g[0].tokens
            assert h.log_prob == pytest.approx(g[0].log_prob, abs=1e-6) and h.score == h.log_prob


def test_low_temperature_approaches_greedy():
    src = scripted_src((10, 5), (20, 3), (30, 6))
    greedy = greedy_search(ScriptedModel(), src, **LIMITS)
    sampled, _ = sample(src, nbest=20, temperature=1e-3)
    assert all(h.tokens == g[0].tokens for g, hyps in zip(greedy, sampled) for h in hyps)


def test_samples_score_their_model_log_probability_and_are_sorted():
    sampled, _ = sample(scripted_src((10, 5), (20, 3)), nbest=50, temperature=1.5)
    for sentence, hyps in zip((10, 20), sampled):
        assert len({tuple(h.tokens) for h in hyps}) > 2  # real variety
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:  # the model's own log-probability, not the temperature-scaled one
            assert h.log_prob == pytest.approx(script_log_prob(sentence, h.tokens), abs=1e-5)


def test_top_p_never_samples_outside_the_nucleus():
    # sentence 10, first step: 4 (.5), 5 (.3), 6 (.12), EOS (.08): the .75 nucleus is {4, 5}
    sampled, _ = sample(scripted_src((10, 5)), nbest=400, top_p=0.75)
    first = [h.tokens[0] if h.tokens else EOS_ID for h in sampled[0]]
    assert set(first) == {4, 5}
    assert 0.5 < first.count(4) / len(first) < 0.75  # renormalised in the nucleus: .5 / .8 = .625
    # the most probable token always stays, even when it alone holds more than p
    lprobs = torch.tensor([[.7, .2, .1]]).log().expand(200, 3)
    _, tokens = Sampler(top_p=0.1, generator=torch.Generator().manual_seed(1))(lprobs)
    assert set(tokens.tolist()) == {0}


def test_sampler_top_k_and_log_probs():
    lprobs = torch.tensor([[.1, .4, .3, .2], [.25, .25, .25, .25]]).log().repeat(300, 1)  # (600, 4)
    lp, tokens = Sampler(top_k=2, generator=torch.Generator().manual_seed(0))(lprobs)
    assert set(tokens[0::2].tolist()) == {1, 2}
    assert len(set(tokens[1::2].tolist())) == 2  # ties: exactly k tokens stay
    torch.testing.assert_close(lp, lprobs.gather(1, tokens.unsqueeze(1)).squeeze(1))
    with pytest.raises(ValueError, match="top_p"):
        Sampler(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Sampler(temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        Sampler(top_k=-1)


def test_same_seed_same_samples():
    src = scripted_src((10, 5), (20, 3))
    tokens = lambda out: [[h.tokens for h in hyps] for hyps in out]  # noqa: E731
    a, _ = sample(src, seed=7, nbest=10)
    b, _ = sample(src, seed=7, nbest=10)
    c, _ = sample(src, seed=8, nbest=10)
    assert tokens(a) == tokens(b) and tokens(a) != tokens(c)
    with pytest.raises(ValueError, match="nbest"):
        sample(src, nbest=0)


def test_translator_sampling_options():
    lines = ["hello world", "", "ab"]
    greedy = Translator(CopyModel(), CharTokenizer(), beam_size=1).translate_text(lines)
    top1 = Translator(CopyModel(), CharTokenizer(), sampling="topk=1", nbest=2, seed=3).translate_text(lines)
    assert [[t for t, _ in hyps] for hyps in top1] == [["hello world"] * 2, [""], ["ab"] * 2]
    assert [hyps[0] for hyps in top1] == [hyps[0] for hyps in greedy]
    hot = dict(sampling="topp=1", temperature=20.0, nbest=4, beam_size=1)  # nbest > beam_size is fine here
    a = Translator(CopyModel(), CharTokenizer(), seed=5, **hot).translate_text(lines)
    b = Translator(CopyModel(), CharTokenizer(), seed=5, **hot).translate_text(lines)
    assert a == b and a != greedy
    assert parse_sampling("topk=5") == {"top_k": 5} and parse_sampling("topp=0.9") == {"top_p": 0.9}
    for bad in ("topk=0", "topp=1.5", "topk=x", "nucleus", "topp=0"):
        with pytest.raises(ValueError, match="'topk=K'"):
            parse_sampling(bad)
    with pytest.raises(ValueError, match="sampling only"):
        Translator(CopyModel(), CharTokenizer(), temperature=0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Translator(CopyModel(), CharTokenizer(), sampling="topk=3", temperature=0.0)
