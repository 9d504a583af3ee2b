"""Greedy and beam search on scripted log-probabilities with known answers, beam 1 == greedy, Translator."""

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from torch import Tensor, nn

from seqed.memory import Memory
from seqed.search import LengthPenalty, beam_search, block_topk, greedy_search, max_lengths
from seqed.translator import Translator
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID

E = EOS_ID
V = 8  # PAD, UNK, BOS, EOS and the words 4, 5, 6, 7

# Next-token probabilities per (sentence, prefix); any other prefix gets DEFAULT.
# Sentence 10: greedy goes 4, 4, EOS (p .12) but [5] ends with p .27.
# Sentence 20: never ends by itself before its length limit (3), where EOS is forced; greedy gives
# [4, 4, 7] (p .066), beam 2 finds [5, 4, 7] (p .0756).
SCRIPT = {
    (10, ()): {4: .5, 5: .3, 6: .12, E: .08},
    (10, (4,)): {4: .4, 6: .35, E: .25},
    (10, (5,)): {E: .9, 6: .1},
    (10, (6,)): {E: .4, 7: .6},
    (10, (4, 4)): {E: .6, 6: .4},
    (10, (4, 6)): {E: .6, 4: .4},
    (20, ()): {4: .55, 5: .3, 6: .1, E: .05},
    (20, (4,)): {4: .5, 5: .4, E: .1},
    (20, (5,)): {4: .9, E: .1},
    (20, (4, 4)): {7: .6, E: .4},
    (20, (5, 4)): {7: .7, E: .3},
    # Sentence 30: a peaked model whose best output [4, 4, 4] (p .96^3 * .99) ends late, while an
    # unlikely EOS is among the top candidates at every earlier step.
    (30, ()): {4: .96, E: .02, 5: .01, 6: .01},
    (30, (4,)): {4: .96, E: .02, 5: .01, 6: .01},
    (30, (4, 4)): {4: .96, E: .02, 5: .01, 6: .01},
    (30, (4, 4, 4)): {E: .99, 4: .01},
    # Sentence 40: EOS is the best first step (p .5), but [4] (p .49 * .99) ranks higher once the
    # length penalty (alpha = 1) normalises: -0.620 against -0.693.
    (40, ()): {E: .5, 4: .49, 5: .01},
    (40, (4,)): {E: .99, 5: .01},
}
DEFAULT = {E: .4, 7: .6}


@dataclass
class PrefixState:
    sentence: Tensor  # (N,) which script
    history: Tensor  # (N, t) tokens fed so far, BOS first
    attn: Optional[Tensor] = None

    def index_select(self, idx):
        return PrefixState(self.sentence.index_select(0, idx), self.history.index_select(0, idx),
                           None if self.attn is None else self.attn.index_select(0, idx))


class ScriptedDecoder:
    def __init__(self):
        self.batch_sizes = []

    def init_state(self, memory):
        n = memory.batch_size
        return PrefixState(memory.code[:, 0].long(), torch.empty(n, 0, dtype=torch.long))

    def step(self, tokens, memory, state):
        self.batch_sizes.append(tokens.size(0))
        history = torch.cat([state.history, tokens.unsqueeze(1)], dim=1)
        probs = torch.zeros(tokens.size(0), V)
        for n, (sent, hist) in enumerate(zip(state.sentence.tolist(), history.tolist())):
            assert hist[0] == BOS_ID
            for tok, p in SCRIPT.get((sent, tuple(hist[1:])), DEFAULT).items():
                probs[n, tok] = p
        # uniform attention over the real source positions
        attn = memory.mask.float() / memory.mask.sum(1, keepdim=True)
        return probs.log(), PrefixState(state.sentence, history, attn)


class ScriptedModel:
    """The source's first token names the script; its length sets the length limit."""

    def __init__(self):
        self.decoder = ScriptedDecoder()

    def encode(self, src):
        mask = src != PAD_ID
        return Memory(states=mask.float().unsqueeze(-1), mask=mask, code=src[:, :1].float())


def scripted_src(*sentences):
    """(script id, source length) pairs -> (B, S) source ids, PAD padded."""
    width = max(length for _, length in sentences)
    src = torch.full((len(sentences), width), PAD_ID)
    for b, (sent, length) in enumerate(sentences):
        src[b, :length] = sent
    return src


def run(search, src, **kwargs):
    """Search with the length limit = source length; returns ([(tokens, log_prob, score)] per sentence, batch sizes)."""
    model = ScriptedModel()
    out = search(model, src, max_len_a=1.0, max_len_b=0, **kwargs)
    return [[(h.tokens, h.log_prob, h.score) for h in hyps] for hyps in out], model.decoder.batch_sizes


def check(got, expected, alpha=0.0):
    """expected: per sentence, [(tokens, probability)]."""
    assert len(got) == len(expected)
    for hyps, want in zip(got, expected):
        assert [h[0] for h in hyps] == [tokens for tokens, _ in want]
        for (tokens, log_prob, score), (_, p) in zip(hyps, want):
            assert log_prob == pytest.approx(math.log(p), abs=1e-5)
            lp = ((5 + len(tokens) + 1) / 6) ** alpha
            assert score == pytest.approx(math.log(p) / lp, abs=1e-5)


def test_beam2_finds_better_than_greedy_and_shrinks_the_batch():
    src = scripted_src((10, 5), (20, 3))
    greedy, greedy_sizes = run(greedy_search, src)
    check(greedy, [[([4, 4], .12)], [([4, 4, 7], .066)]])
    assert greedy_sizes == [2, 2, 2, 1]  # sentence 10 leaves after its EOS at step 2

    beam, sizes = run(beam_search, src, beam_size=2, nbest=2, length_penalty=0.0)
    check(beam, [[([5], .27), ([4, 4], .12)],
                 [([5, 4, 7], .0756), ([4, 4, 7], .066)]])  # 20: EOS forced at its limit, 3
    # the first step runs one row per sentence (the beams start identical); sentence 10 is done after
    # step 2 (two ended), its rows dropped
    assert sizes == [2, 4, 4, 2]


def test_beam3_nbest_and_length_penalty():
    src = scripted_src((10, 5), (20, 3))
    beam, sizes = run(beam_search, src, beam_size=3, nbest=3, length_penalty=1.0)
    check(beam, [[([5], .27), ([4, 4], .12), ([4, 6], .105)],
                 [([5, 4, 7], .0756), ([4, 4, 7], .066), ([4, 5, 7], .0528)]], alpha=1.0)
    # sentence 10 stays until step 4: a live beam could still beat [4, 6] (.105) under alpha = 1
    assert sizes == [2, 6, 6, 6, 3]
    top1, _ = run(beam_search, src, beam_size=3, nbest=1, length_penalty=1.0)
    assert top1 == [hyps[:1] for hyps in beam]


def test_length_penalty_reorders_hypotheses():
    # sentence 10 with [5] and the EOS at step 0 allowed: [] (p .08) ends at step 0 under beam 4
    src = scripted_src((10, 5))
    raw, _ = run(beam_search, src, beam_size=4, nbest=4, length_penalty=0.0)
    # step 0: EOS is 4th of the 8 candidates -> [] ends; step 1: [5,E] .27, [4,4] .2, [4,6] .175,
    # [4,E] .125 -> [5] and [4] end, and [5,E] is the step's best candidate; step 2: [4,4,E] .12 and
    # [4,6,E] .105 end, which makes four: the search stops, and [4,6] outranks [] (.08)
    check(raw, [[([5], .27), ([4], .125), ([4, 4], .12), ([4, 6], .105)]])
    # alpha = 5 rewards length so much that the longest outputs, up to the limit of 5, win
    strong, _ = run(beam_search, src, beam_size=4, nbest=4, length_penalty=5.0)
    assert [len(tokens) for tokens, _, _ in strong[0]] == [5, 5, 5, 5]
    assert [score for _, _, score in strong[0]] == sorted((score for _, _, score in strong[0]), reverse=True)


def test_min_len_forbids_early_eos():
    src = scripted_src((10, 5), (20, 3))
    beam, _ = run(beam_search, src, beam_size=2, nbest=2, length_penalty=0.0, min_len=2)
    # [5] can no longer end at step 1; EOS's probability is not renormalised away
    check(beam, [[([4, 4], .12), ([4, 6], .105)],
                 [([5, 4, 7], .0756), ([4, 4, 7], .066)]])
    greedy, _ = run(greedy_search, src, min_len=3)
    # sentence 10: 4, 4 (EOS forbidden), 6, then 7 until EOS is forced at the limit, 5
    check(greedy, [[([4, 4, 6, 7, 7], .5 * .4 * .4 * .6 * .6 * .4)], [([4, 4, 7], .066)]])
    for hyps in beam:
        assert all(len(h[0]) >= 2 for h in hyps)


def test_max_length_forces_eos_and_cap():
    src = scripted_src((20, 9))
    capped, sizes = run(greedy_search, src, max_len_cap=2)
    check(capped, [[([4, 4], .55 * .5 * .4)]])
    assert sizes == [1, 1, 1]
    beam, _ = run(beam_search, src, beam_size=2, nbest=2, length_penalty=0.0, max_len_cap=1)
    check(beam, [[([4], .55 * .1), ([5], .3 * .1)]])


def test_results_come_back_in_input_order():
    forward, _ = run(beam_search, scripted_src((10, 5), (20, 3)), beam_size=2, nbest=2, length_penalty=1.0)
    backward, sizes = run(beam_search, scripted_src((20, 3), (10, 5)), beam_size=2, nbest=2, length_penalty=1.0)
    assert backward == forward[::-1]
    assert sizes == [2, 4, 4, 4]  # sentence 10 (limit 5) now stays as long as sentence 20 (limit 3)
    g_forward, _ = run(greedy_search, scripted_src((10, 5), (20, 3), (10, 4)))
    g_backward, _ = run(greedy_search, scripted_src((10, 4), (20, 3), (10, 5)))
    assert g_backward == g_forward[::-1]


def test_attention_rows_per_output_step():
    src = scripted_src((10, 5), (20, 3))
    for out in (beam_search(ScriptedModel(), src, beam_size=2, nbest=2, max_len_a=1.0, max_len_b=0),
                greedy_search(ScriptedModel(), src, max_len_a=1.0, max_len_b=0)):
        for hyps, s_real in zip(out, (5, 3)):
            for h in hyps:
                assert h.attn.shape == (len(h.tokens) + 1, s_real)
                torch.testing.assert_close(h.attn, torch.full_like(h.attn, 1 / s_real))


def test_length_penalty_and_max_lengths_math():
    lp = LengthPenalty(alpha=0.6)
    lengths = torch.tensor([1, 4, 10])
    torch.testing.assert_close(lp(lengths), ((5 + lengths.float()) / 6) ** 0.6)
    assert lp(torch.tensor(1)).item() == pytest.approx(1.0)  # lp(1) = 1 for every alpha
    torch.testing.assert_close(LengthPenalty(0.0)(lengths), torch.ones(3))
    assert (LengthPenalty(1.0)(lengths) == (5 + lengths) / 6).all()
    limits = max_lengths(torch.tensor([1, 10, 100]), a=1.2, b=10, cap=50)
    assert limits.tolist() == [11, 22, 50] and limits.dtype == torch.long


def test_bad_arguments_raise():
    src = scripted_src((10, 5))
    with pytest.raises(ValueError, match="nbest"):
        beam_search(ScriptedModel(), src, beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(ScriptedModel(), src, beam_size=0)
    with pytest.raises(ValueError, match="min_len"):
        greedy_search(ScriptedModel(), src, min_len=600)
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        greedy_search(ScriptedModel(), src[0])


# A random tiny attentional GRU decoder: beam 1 must equal greedy, and every beam hypothesis's
# log_prob must match rescoring it alone (which catches state reordering mistakes).

@dataclass
class GRUState:
    hidden: Tensor  # (N, H)
    attn: Optional[Tensor] = None  # (N, S)

    def index_select(self, idx):
        return GRUState(self.hidden.index_select(0, idx), None if self.attn is None else self.attn.index_select(0, idx))


class TinyGRUDecoder(nn.Module):
    def __init__(self, vocab, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.cell = nn.GRUCell(2 * hidden, hidden)
        self.out = nn.Linear(2 * hidden, vocab)

    def init_state(self, memory):
        return GRUState(memory.code)

    def step(self, tokens, memory, state):
        scores = torch.einsum("nsh,nh->ns", memory.states, state.hidden).masked_fill(~memory.mask, -math.inf)
        attn = scores.softmax(dim=1)  # (N, S)
        context = torch.einsum("ns,nsh->nh", attn, memory.states)  # (N, H)
        hidden = self.cell(torch.cat([self.embed(tokens), context], dim=1), state.hidden)  # (N, H)
        return 3.0 * self.out(torch.cat([hidden, context], dim=1)), GRUState(hidden, attn)


class TinyModel(nn.Module):
    def __init__(self, vocab=12, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden, padding_idx=PAD_ID)
        self.decoder = TinyGRUDecoder(vocab, hidden)

    def encode(self, src):
        mask = src != PAD_ID
        states = torch.tanh(self.embed(src).cumsum(dim=1))  # (B, S, H)
        code = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, H)
        return Memory(states=states, mask=mask, code=code)


def random_src(vocab, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD_ID)
    for b, n in enumerate(lengths):
        src[b, :n - 1] = torch.randint(4, vocab, (n - 1,), generator=g)
        src[b, n - 1] = EOS_ID
    return src


def rescore(model, src_row, tokens):
    """Sum of log-probs of tokens + EOS for one source, one teacher-forced step at a time."""
    memory = model.encode(src_row.unsqueeze(0))
    state = model.decoder.init_state(memory)
    total, prev = 0.0, BOS_ID
    for tok in tokens + [EOS_ID]:
        logits, state = model.decoder.step(torch.tensor([prev]), memory, state)
        total += torch.log_softmax(logits, -1)[0, tok].item()
        prev = tok
    return total


def test_beam1_equals_greedy_and_beam_log_probs_rescore():
    torch.manual_seed(0)
    model = TinyModel().eval()
    src = random_src(12, [5, 9, 3, 7, 2, 6], seed=1)
    kwargs = dict(max_len_a=1.5, max_len_b=2)
    greedy = greedy_search(model, src, **kwargs)
    beam1 = beam_search(model, src, beam_size=1, length_penalty=0.0, **kwargs)
    assert [[h.tokens for h in hyps] for hyps in beam1] == [[h.tokens for h in hyps] for hyps in greedy]
    for g, b in zip(greedy, beam1):
        assert b[0].log_prob == pytest.approx(g[0].log_prob, abs=1e-6)
        torch.testing.assert_close(b[0].attn, g[0].attn)
    assert len({len(h[0].tokens) for h in greedy}) > 1  # sentences finish at different steps

    beam = beam_search(model, src, beam_size=4, nbest=4, length_penalty=0.8, **kwargs)
    with torch.no_grad():
        for row, hyps in zip(src, beam):
            assert len(hyps) == 4 and len({tuple(h.tokens) for h in hyps}) == 4
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps:
                assert h.log_prob == pytest.approx(rescore(model, row, h.tokens), abs=1e-4)
                assert not {PAD_ID, BOS_ID, EOS_ID} & set(h.tokens)
                assert h.attn.shape == (len(h.tokens) + 1, int((row != PAD_ID).sum()))


# Translator: a character tokenizer and a model that copies its source.

class CharTokenizer:
    def encode_src(self, sentences):
        return [[ord(c) + 4 for c in s] for s in sentences]

    def decode_tgt(self, ids):
        return ["".join(chr(i - 4) if i >= 4 else "?" for i in seq) for seq in ids]


@dataclass
class PositionState:
    position: Tensor  # (N,)
    attn: Optional[Tensor] = None

    def index_select(self, idx):
        return PositionState(self.position.index_select(0, idx))


class CopyDecoder:
    """Emits source token t at step t (the source ends with EOS); other tokens are far less likely."""

    def init_state(self, memory):
        return PositionState(torch.zeros(memory.batch_size, dtype=torch.long))

    def step(self, tokens, memory, state):
        rows = torch.arange(tokens.size(0))
        target = memory.states[rows, state.position.clamp(max=memory.states.size(1) - 1)]  # (N, V) one-hot
        logits = 10.0 * target
        logits[:, EOS_ID] -= 5.0 * (1 - target[:, EOS_ID])  # like a real model: EOS unlikely mid-sentence
        return logits, PositionState(state.position + 1)


class CopyModel(nn.Module):
    def __init__(self, vocab=132):
        super().__init__()
        self.vocab = vocab
        self.decoder = CopyDecoder()
        self.batches = []

    def encode(self, src):
        self.batches.append(src.clone())
        mask = src != PAD_ID
        return Memory(states=nn.functional.one_hot(src, self.vocab).float(), mask=mask,
                      code=mask.float().sum(1, keepdim=True))


def test_translator_sorts_batches_and_restores_order():
    model = CopyModel()
    lines = ["hello world", "", "ab", "a much longer sentence", "   ", "xyz"]
    translator = Translator(model, CharTokenizer(), beam_size=3, nbest=2, batch_size=2, max_len_b=2,
                            precision="fp32")  # fp32: searches `model` itself, not a cast copy
    out = translator.translate_text(lines)
    assert [hyps[0][0] for hyps in out] == ["hello world", "", "ab", "a much longer sentence", "", "xyz"]
    assert [len(hyps) for hyps in out] == [2, 1, 2, 2, 1, 2]
    assert out[0][0][1] > out[0][1][1]
    # 4 non-empty sources, longest first, 2 per batch, each ending in EOS
    assert [b.size(0) for b in model.batches] == [2, 2]
    lengths = [int(n) for b in model.batches for n in (b != PAD_ID).sum(1)]
    assert lengths == sorted(lengths, reverse=True) == [23, 12, 4, 3]
    assert all(b[0, (b[0] != PAD_ID).sum() - 1] == EOS_ID for b in model.batches)

    greedy = Translator(model, CharTokenizer(), beam_size=1, batch_size=3).translate(lines)
    assert [h[0].tokens for h in greedy] == CharTokenizer().encode_src([s.strip() and s for s in lines])


def test_translator_empty_input_skips_the_model_and_truncates_long_sources(capsys):
    model = CopyModel()
    translator = Translator(model, CharTokenizer(), beam_size=2, max_src_len=4, progress=True)
    assert translator.translate_text(["", "  "]) == [[("", 0.0)], [("", 0.0)]]
    assert translator.translate([]) == []
    assert model.batches == []
    with pytest.warns(UserWarning, match="2 source sentence"):
        out = translator.translate_text(["abcdef", "ab", "", "uvwxyz"])
    assert [hyps[0][0] for hyps in out] == ["abc", "ab", "", "uvw"]
    assert "1/1" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translator.translate(["abc"])  # exactly max_src_len with EOS: no warning
    with pytest.raises(ValueError, match="nbest"):
        Translator(model, CharTokenizer(), beam_size=1, nbest=2)


class AutocastSpy(CopyDecoder):
    """A CopyDecoder that records the CPU autocast dtype (None when off) at each step."""

    def __init__(self):
        self.seen = set()

    def step(self, tokens, memory, state):
        self.seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return super().step(tokens, memory, state)


@pytest.mark.parametrize("beam", [1, 3])
def test_translator_precision_runs_search_under_autocast(beam):
    outputs = {}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = CopyModel()
        model.decoder = AutocastSpy()
        tr = Translator(model, CharTokenizer(), beam_size=beam, precision=precision)
        outputs[precision] = tr.translate_text(["hello", "ab"])
        assert tr.model.decoder.seen == {dtype}  # (bf16 searches a cast copy of the model)
    assert outputs["bf16"] == outputs["fp32"]
    # fp32 leaves a caller's autocast alone
    model = CopyModel()
    model.decoder = AutocastSpy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Translator(model, CharTokenizer(), beam_size=beam, precision="fp32").translate_text(["hello"])
    assert model.decoder.seen == {torch.bfloat16}
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Translator(CopyModel(), CharTokenizer(), precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        Translator(CopyModel(), CharTokenizer(), precision="int8")


def test_translator_bf16_casts_a_copy_of_the_weights():
    model = nn.Sequential(nn.Linear(4, 4))
    tr = Translator(model, CharTokenizer(), precision="bf16")
    assert tr.model[0].weight.dtype == torch.bfloat16
    assert model[0].weight.dtype == torch.float32  # the caller's model is left as it was
    assert Translator(model, CharTokenizer(), precision="fp32").model[0].weight.dtype == torch.float32


def test_early_unlikely_endings_do_not_stop_the_search():
    # Stopping after K ended hypotheses (fairseq's rule) would return [] and [4] here: both end among
    # the top-2 candidates of steps 0 and 1, before the best hypothesis is complete.
    src = scripted_src((30, 6))
    beam, _ = run(beam_search, src, beam_size=2, nbest=2, length_penalty=0.0)
    check(beam, [[([4, 4, 4], .96 ** 3 * .99), ([], .02)]])
    greedy, _ = run(greedy_search, src)
    check(greedy, [[([4, 4, 4], .96 ** 3 * .99)]])


def test_length_penalty_longer_hypothesis_wins_where_the_old_rule_stopped():
    # Stopping once a step's best candidate is EOS returned [] here (EOS is best at step 0).
    src = scripted_src((40, 4))
    beam, _ = run(beam_search, src, beam_size=2, nbest=1, length_penalty=1.0)
    check(beam, [[([4], .49 * .99)]], alpha=1.0)
    raw, _ = run(beam_search, src, beam_size=2, nbest=1, length_penalty=0.0)
    check(raw, [[([], .5)]])  # alpha = 0: [] is the best by raw log-probability
    # beam 1 with alpha > 0 goes on past greedy's EOS along the step's second-best token
    greedy, _ = run(greedy_search, src)
    check(greedy, [[([], .5)]])
    beam1, _ = run(beam_search, src, beam_size=1, nbest=1, length_penalty=1.0)
    check(beam1, [[([4], .49 * .99)]], alpha=1.0)


def test_peaked_search_is_not_stopped_by_early_endings_under_a_length_penalty():
    beam, _ = run(beam_search, scripted_src((30, 6)), beam_size=2, nbest=2, length_penalty=1.0)
    assert beam[0][0][0] == [4, 4, 4]


def test_patience_stops_after_k_times_patience_endings():
    """The optional patience stop ends sentence 30 once 2 x 1 hypotheses ([] and [4]) have ended, before
    the best [4, 4, 4] is found; patience 2 waits for four endings and finds it; exact stopping is the
    default (None)."""
    src = scripted_src((30, 6))
    early, sizes = run(beam_search, src, beam_size=2, nbest=2, length_penalty=1.0, patience=1.0)
    assert [h[0] for h in early[0]] == [[4], []] and len(sizes) == 2
    late, _ = run(beam_search, src, beam_size=2, nbest=2, length_penalty=1.0, patience=2.0)
    assert late[0][0][0] == [4, 4, 4]
    with pytest.raises(ValueError, match="patience must be > 0"):
        run(beam_search, src, beam_size=2, patience=0.0)


def exhaustive_best(sentence, limit, alpha):
    """The best (tokens, log_prob) under alpha by enumerating every output the script allows."""
    best = (None, -math.inf, -math.inf)
    stack = [((), 0.0)]
    while stack:
        prefix, log_prob = stack.pop()
        for tok, p in SCRIPT.get((sentence, prefix), DEFAULT).items():
            if tok == E:
                total = log_prob + math.log(p)
                score = total / (((5 + len(prefix) + 1) / 6) ** alpha)
                if score > best[2]:
                    best = (list(prefix), total, score)
            elif len(prefix) < limit:
                stack.append((prefix + (tok,), log_prob + math.log(p)))
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0, 5.0])
def test_wide_beam_returns_the_exact_best_under_any_penalty(alpha):
    """With a beam wide enough to hold every prefix, the stopping rule alone decides: it must never
    stop before the best hypothesis under the penalty is found."""
    sentences = [(10, 5), (20, 3), (30, 6), (40, 4)]
    beam, _ = run(beam_search, scripted_src(*sentences), beam_size=64, nbest=1, length_penalty=alpha)
    for (sentence, limit), hyps in zip(sentences, beam):
        tokens, log_prob, score = exhaustive_best(sentence, limit, alpha)
        assert hyps[0][0] == tokens
        assert hyps[0][1] == pytest.approx(log_prob, abs=1e-5)
        assert hyps[0][2] == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("rows,cols,k,block", [(6, 40000, 10, 64), (3, 1000, 10, 64), (5, 333, 7, 8),
                                               (2, 50, 10, 64), (4, 641, 10, 64), (3, 130, 2, 64)])
def test_block_topk_is_topk(rows, cols, k, block):
    g = torch.Generator().manual_seed(cols)
    x = torch.randn(rows, cols, generator=g)
    x[0, -1] = 100.0  # the best value in the columns after the last whole block
    n = min(block, cols)
    x[1, :n] = 50.0 + torch.arange(n) / n  # the k best together in one block
    values, cols_ = block_topk(x, k, block)
    expected = x.topk(k, dim=1)
    assert torch.equal(values, expected.values) and torch.equal(cols_, expected.indices)
    # ties (here -inf everywhere but one column): the same values, columns that hold them
    y = torch.full((2, cols), -math.inf)
    y[:, 3] = 1.0
    values, cols_ = block_topk(y, k, block)
    assert torch.equal(values, y.topk(k, dim=1).values)
    assert torch.equal(y.gather(1, cols_), values) and (cols_[:, 0] == 3).all()
