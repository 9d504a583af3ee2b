"""Hard alignments from attention: known answers from scripted attention (diagonal, anti-diagonal, a
reversed-source encoder), BOS/EOS offsets, real tiny Transformer/RNN models and ensembles, and the error
for a decoder without attention."""

import copy

import pytest
import torch
from torch import nn

from seqed.alignment import attention_enabled, hard_alignment, pharaoh, reading_order
from seqed.config import load_config
from seqed.ensemble import Ensemble
from seqed.model import build_model
from seqed.search import greedy_search
from seqed.translator import Translator
from test_search import CharTokenizer, CopyDecoder, CopyModel, PositionState, random_src

pytestmark = pytest.mark.usefixtures("one_thread")


class PointingDecoder(CopyDecoder):
    """Copies its source; at step t it attends memory position `point(t, L)` of a source of L real
    positions (EOS included)."""

    def __init__(self, point):
        self.point = point

    def step(self, tokens, memory, state):
        logits, new = super().step(tokens, memory, state)
        lengths = memory.mask.sum(1)  # (N,)
        where = torch.stack([torch.tensor(self.point(int(t), int(n))) for t, n in zip(state.position, lengths)])
        attn = nn.functional.one_hot(where.clamp(min=0), memory.mask.size(1)).float() * 0.9  # (N, S)
        attn = attn + 0.1 * memory.mask.float() / lengths.unsqueeze(1)  # a little everywhere else
        return logits, PositionState(new.position, attn)


def pointing(point, reverse_source=False):
    model = CopyModel()
    model.decoder = PointingDecoder(point)
    model.encoder = nn.Module()
    model.encoder.reverse_source = reverse_source
    return model


def aligned(model, lines, **kwargs):
    tr = Translator(model, CharTokenizer(), alignment=True, max_len_b=2, **kwargs)
    return [[pharaoh(h.alignment) for h in hyps] for hyps in tr.translate(lines)]


@pytest.mark.parametrize("beam", [1, 3])
def test_diagonal_attention_gives_the_diagonal(beam):
    diagonal = pointing(lambda t, n: t)
    assert aligned(diagonal, ["abc", "", "hello"], beam_size=beam) == [
        ["0-0 1-1 2-2"], [""], ["0-0 1-1 2-2 3-3 4-4"]]
    # output j attends source piece n - 2 - j (the last one before EOS first): source index first
    anti = pointing(lambda t, n: max(n - 2 - t, 0))
    assert aligned(anti, ["abc", "hello"], beam_size=beam) == [["2-0 1-1 0-2"], ["4-0 3-1 2-2 1-3 0-4"]]


def test_reversed_source_is_aligned_in_reading_order():
    # the encoder read "abc" + EOS backwards: memory position s holds piece n - 1 - s, EOS at position 0
    reversed_diagonal = pointing(lambda t, n: n - 1 - t, reverse_source=True)
    assert aligned(reversed_diagonal, ["abc", "hello"], beam_size=2) == [["0-0 1-1 2-2"], ["0-0 1-1 2-2 3-3 4-4"]]


def test_eos_row_and_column_take_no_part():
    attn = torch.tensor([[.1, .2, .7],    # output 0 looks most at the source EOS: its best real piece is 1
                         [.6, .3, .1],
                         [.0, .0, 1.]])   # the EOS step
    assert hard_alignment(attn) == [(1, 0), (0, 1)]
    assert hard_alignment(torch.ones(1, 4)) == [] and hard_alignment(torch.ones(3, 1)) == []
    assert pharaoh([(1, 0), (0, 1)]) == "1-0 0-1" and pharaoh([]) == ""


def test_no_attention_is_an_error():
    with pytest.raises(ValueError, match="no attention"):
        Translator(CopyModel(), CharTokenizer(), alignment=True).translate(["abc"])
    assert Translator(CopyModel(), CharTokenizer(), alignment=True).translate([""])[0][0].alignment == []


def tiny_models():
    common = ["model.encoder.hidden=16", "model.decoder.hidden=16"]
    rnn = ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.embed_dim=8", "model.decoder.embed_dim=8"]
    configs = {
        "transformer": ["model.encoder.heads=2", "model.decoder.heads=2", "model.encoder.ffn=32",
                        "model.decoder.ffn=32", "model.encoder.layers=2", "model.decoder.layers=2"],
        "rnn_reversed": [*rnn, "model.encoder.reverse_source=true", "model.decoder.attention=bahdanau"],
        "rnn_luong": [*rnn, "model.decoder.attention=general"],
        "rnn_fixed": [*rnn, "model.decoder.attention=none"],
        "transformer_code": ["model.encoder.heads=2", "model.decoder.heads=2", "model.encoder.ffn=32",
                             "model.decoder.ffn=32", "model.encoder.layers=1", "model.decoder.layers=1",
                             "model.bottleneck=code"],
    }
    torch.manual_seed(0)
    return {name: build_model(load_config(None, common + o), 24, 24).eval() for name, o in configs.items()}


@pytest.fixture(scope="module")
def models():
    return tiny_models()


SOURCES = [[5, 6, 7, 8], [9, 10], [4, 11, 12, 13, 14, 15, 16]]


def expected(model, name):
    """Greedy outputs and their alignments computed by hand from the raw attention."""
    src = random_src(24, [len(s) + 1 for s in SOURCES], seed=0)
    for b, s in enumerate(SOURCES):
        src[b, :len(s)] = torch.tensor(s)
    with attention_enabled(model):
        hyps = [h[0] for h in greedy_search(model, src, max_len_a=1.2, max_len_b=10, max_len_cap=100)]
    out = []
    for h in hyps:
        attn = h.attn.flip(-1) if name == "rnn_reversed" else h.attn  # (T + 1, S + 1) reading order
        out.append((h.tokens, [(int(attn[j, :-1].argmax()), j) for j in range(len(h.tokens))]))
    return out


@pytest.mark.parametrize("name", ["transformer", "rnn_reversed", "rnn_luong"])
def test_tiny_models_align_every_output_piece(models, name):
    model = models[name]
    tr = Translator(model, None, precision="fp32", beam_size=1, alignment=True, max_len_cap=100)
    hyps = [h[0] for h in tr.translate_ids(SOURCES)]
    assert [(h.tokens, h.alignment) for h in hyps] == expected(model, name)
    for h, s in zip(hyps, SOURCES):
        assert [j for _, j in h.alignment] == list(range(len(h.tokens)))
        assert all(0 <= i < len(s) for i, _ in h.alignment)
    assert getattr(model.decoder, "need_attn", False) is False  # the flag is restored
    beam = Translator(model, None, precision="fp32", beam_size=3, nbest=2, alignment=True,
                      max_len_cap=100).translate_ids(SOURCES)
    assert all(len(h.alignment) == len(h.tokens) for hyps in beam for h in hyps)
    # an ensemble of one aligns like its model, reversed source included
    ens = Translator(Ensemble([model]), None, precision="fp32", beam_size=1, alignment=True,
                     max_len_cap=100).translate_ids(SOURCES)
    assert [h[0].alignment for h in ens] == [h.alignment for h in hyps]


def test_transformer_attention_is_only_computed_for_alignments(models):
    plain = Translator(models["transformer"], None, precision="fp32", beam_size=2).translate_ids(SOURCES)
    assert all(h.attn is None and h.alignment is None for hyps in plain for h in hyps)


def test_ensemble_alignment_averages_members_in_reading_order(models):
    ensemble = Ensemble([models["rnn_reversed"], models["rnn_luong"], models["rnn_fixed"]])
    tr = Translator(ensemble, None, precision="fp32", beam_size=2, alignment=True, max_len_cap=100)
    for hyps, s in zip(tr.translate_ids(SOURCES), SOURCES):
        assert hyps[0].attn.shape == (len(hyps[0].tokens) + 1, len(s) + 1)
        torch.testing.assert_close(hyps[0].attn.sum(-1), torch.ones(len(hyps[0].tokens) + 1))
        assert len(hyps[0].alignment) == len(hyps[0].tokens)
    with pytest.raises(ValueError, match="no attention"):
        Translator(Ensemble([models["rnn_fixed"]]), None, alignment=True).translate_ids(SOURCES)
    with pytest.raises(ValueError, match="no attention"):
        Translator(copy.deepcopy(models["rnn_fixed"]), None, alignment=True).translate_ids(SOURCES)


def test_a_code_bottleneck_is_not_aligned(models):
    with pytest.raises(ValueError, match="1 memory slot"):
        Translator(models["transformer_code"], None, alignment=True).translate_ids(SOURCES)
    # in an ensemble, a code bottleneck's attention is left out of the average
    ensemble = Ensemble([models["transformer_code"], models["rnn_luong"]])
    out = Translator(ensemble, None, beam_size=2, alignment=True).translate_ids(SOURCES)
    assert all(len(h[0].alignment) == len(h[0].tokens) for h in out)
