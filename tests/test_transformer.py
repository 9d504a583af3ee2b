"""Transformer encoder/decoder: shapes, masks, causality, KV-cache equivalence, beam reordering, tying."""

import pytest
import torch
from torch import nn

from seqed.decoders.transformer import TransformerDecoder, TransformerState
from seqed.embeddings import POSITIONS, LearnedPositions, SinusoidalPositions
from seqed.encoders.transformer import TransformerEncoder
from seqed.layers import MultiHeadAttention
from seqed.memory import Memory
from seqed.vocab import BOS_ID, PAD_ID

V, D, H, F = 20, 16, 2, 32


def _emb(dim=D):
    torch.manual_seed(0)
    return nn.Embedding(V, dim, padding_idx=PAD_ID)


def _encoder(code="mean", positions="sinusoidal", layers=2):
    torch.manual_seed(1)
    return TransformerEncoder(embedding=_emb(), d_model=D, heads=H, ffn_size=F, layers=layers,
                              positions=positions, code=code, max_positions=32).eval()


def _decoder(layers=2, positions="sinusoidal", memory_size=D, **kw):
    torch.manual_seed(2)
    return TransformerDecoder(embedding=_emb(), d_model=D, heads=H, ffn_size=F, layers=layers,
                              memory_size=memory_size, positions=positions, max_positions=32, **kw).eval()


def _src():
    # Two sources, the second padded.
    return torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, PAD_ID, PAD_ID]])


def _memory(memory_size, B=2, S=5, lengths=(5, 3)):
    g = torch.Generator().manual_seed(3)
    states = torch.randn(B, S, memory_size, generator=g)
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    return Memory(states=states, mask=mask, code=states.mean(1))


def _tgt():
    g = torch.Generator().manual_seed(4)
    tgt = torch.randint(4, V, (2, 6), generator=g)
    tgt[:, 0] = BOS_ID
    return tgt


# ---------------------------------------------------------------- positions

@pytest.mark.parametrize("kind", sorted(POSITIONS))
def test_positions_offset_slices_the_same_table(kind):
    pos = POSITIONS[kind](8, max_positions=10)
    x = torch.zeros(3, 6, 8)
    full = pos(x)
    assert full.shape == (3, 6, 8)
    assert torch.equal(pos(x[:, :2], offset=4), full[:, 4:6])
    with pytest.raises(ValueError, match="max_positions=10"):
        pos(torch.zeros(1, 3, 8), offset=8)


def test_sinusoidal_values():
    pe = SinusoidalPositions(6, max_positions=4)(torch.zeros(1, 4, 6))[0]
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(pe[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(pe[3, 1], torch.cos(torch.tensor(3.0)))
    assert isinstance(LearnedPositions(4, 5).embedding, nn.Embedding)


# ---------------------------------------------------------------- encoder

def test_encoder_shapes_mask_and_zeroed_padding():
    mem = _encoder()(_src())
    assert mem.states.shape == (2, 5, D) and mem.code.shape == (2, D)
    assert mem.mask.dtype == torch.bool
    assert mem.mask.tolist() == [[True] * 5, [True, True, True, False, False]]
    assert torch.all(mem.states[1, 3:] == 0)


@pytest.mark.parametrize("code", ["mean", "token"])
def test_encoder_padding_does_not_change_real_states(code):
    enc = _encoder(code=code)
    src = _src()
    alone = enc(src[1:, :3])
    batched = enc(src)
    assert torch.allclose(batched.states[1, :3], alone.states[0], atol=1e-5)
    assert torch.allclose(batched.code[1], alone.code[0], atol=1e-5)


def test_encoder_mean_code_is_masked_mean():
    enc = _encoder(code="mean")
    mem = enc(_src())
    assert torch.allclose(mem.code[1], mem.states[1, :3].mean(0), atol=1e-6)


def test_encoder_token_code_is_summary_state_and_memory_covers_only_source():
    enc = _encoder(code="token")
    mem = enc(_src())
    assert mem.states.shape == (2, 5, D) and mem.mask.shape == (2, 5)  # the summary slot is dropped
    assert not torch.allclose(mem.code[1], mem.states[1, :3].mean(0), atol=1e-3)
    # not mem.code.sum(): the sum of a LayerNorm's outputs is constant, so its gradient is only rounding noise
    loss = (mem.code * torch.linspace(-1, 1, D)).sum()
    loss.backward()
    assert enc.summary.grad is not None and enc.summary.grad.abs().sum() > 1e-3


def test_encoder_errors():
    with pytest.raises(ValueError, match="code"):
        TransformerEncoder(embedding=_emb(), d_model=D, heads=H, ffn_size=F, layers=1, code="max")
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoder(embedding=_emb(), d_model=D, heads=3, ffn_size=F, layers=1)
    with pytest.raises(ValueError, match="positions"):
        TransformerEncoder(embedding=_emb(), d_model=D, heads=H, ffn_size=F, layers=1, positions="rope")
    with pytest.raises(ValueError, match="max_positions"):
        _encoder()(torch.full((1, 40), 5))


def test_encoder_embedding_narrower_than_d_model():
    enc = TransformerEncoder(embedding=_emb(8), d_model=D, heads=H, ffn_size=F, layers=1)
    assert enc(_src()).states.shape == (2, 5, D)


# ---------------------------------------------------------------- decoder

def test_decoder_shapes_and_attn_only_when_asked():
    dec = _decoder(memory_size=12)
    mem = _memory(12)
    out = dec(_tgt(), mem)
    assert out.logits.shape == (2, 6, V) and out.attn is None
    dec.need_attn = True
    out = dec(_tgt(), mem)
    assert out.attn.shape == (2, 6, 5)
    assert torch.allclose(out.attn.sum(-1), torch.ones(2, 6), atol=1e-5)
    assert torch.all(out.attn[1, :, 3:] == 0)  # padded source positions get no attention


def test_decoder_need_attn_does_not_change_logits():
    dec = _decoder()
    mem = _memory(D)
    plain = dec(_tgt(), mem).logits
    dec.need_attn = True
    assert torch.allclose(dec(_tgt(), mem).logits, plain, atol=1e-5)


def test_decoder_causality():
    dec = _decoder()
    mem = _memory(D)
    tgt = _tgt()
    changed = tgt.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 4) % (V - 4) + 4
    a, b = dec(tgt, mem).logits, dec(changed, mem).logits
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-4)


def test_decoder_source_padding_does_not_change_outputs():
    dec = _decoder()
    mem = _memory(D)
    tgt = _tgt()
    alone = Memory(states=mem.states[1:, :3], mask=mem.mask[1:, :3], code=mem.code[1:])
    noisy = Memory(states=mem.states.clone(), mask=mem.mask, code=mem.code)
    noisy.states[1, 3:] = 100.0  # garbage at padded positions must be ignored
    ref = dec(tgt[1:], alone).logits[0]
    assert torch.allclose(dec(tgt, mem).logits[1], ref, atol=1e-5)
    assert torch.allclose(dec(tgt, noisy).logits[1], ref, atol=1e-5)


def test_decoder_target_right_padding_does_not_change_real_logits():
    dec = _decoder()
    mem = _memory(D)
    tgt = _tgt()
    padded = tgt.clone()
    padded[1, 4:] = PAD_ID
    assert torch.allclose(dec(tgt, mem).logits[1, :4], dec(padded, mem).logits[1, :4], atol=1e-6)


def _step_all(dec, tgt, mem):
    state = dec.init_state(mem)
    logits, attns = [], []
    for t in range(tgt.size(1)):
        lg, state = dec.step(tgt[:, t], mem, state)
        logits.append(lg)
        attns.append(state.attn)
    return torch.stack(logits, 1), attns, state


def test_memory_keys_and_values_are_contiguous_once_per_source():
    """The attention products of every step would copy a transposed view (11% of an int8 step)."""
    state = _decoder(layers=2).init_state(_memory(D))
    assert all(t.is_contiguous() for t in state.cross_k + state.cross_v)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("memory_size", [D, 12])
def test_step_matches_forward(layers, positions, memory_size):
    dec = _decoder(layers=layers, positions=positions, memory_size=memory_size, need_attn=True)
    mem = _memory(memory_size)  # second source padded
    tgt = _tgt()
    full = dec(tgt, mem)
    stepped, attns, state = _step_all(dec, tgt, mem)
    assert torch.allclose(stepped, full.logits, atol=1e-5)
    assert torch.allclose(torch.stack(attns, 1), full.attn, atol=1e-5)
    assert state.length == 6
    assert state.self_k[0].shape == (2, H, 6, D // H)
    assert state.cross_k[-1].shape == (2, H, 5, D // H)


def test_step_without_need_attn_gives_no_attn():
    dec = _decoder()
    mem = _memory(D)
    stepped, attns, _ = _step_all(dec, _tgt(), mem)
    assert all(a is None for a in attns)
    assert torch.allclose(stepped, dec(_tgt(), mem).logits, atol=1e-5)


def test_step_uses_the_cache_not_the_prefix():
    # The cache alone carries the prefix: corrupting it changes the next logits.
    dec = _decoder()
    mem = _memory(D)
    tgt = _tgt()
    state = dec.init_state(mem)
    for t in range(3):
        _, state = dec.step(tgt[:, t], mem, state)
    good, _ = dec.step(tgt[:, 3], mem, state)
    state.self_k[0] = state.self_k[0] + 1.0
    bad, _ = dec.step(tgt[:, 3], mem, state)
    assert not torch.allclose(good, bad, atol=1e-4)


def test_state_index_select_reorders_rows():
    dec = _decoder(need_attn=True)
    mem = _memory(D)
    tgt = _tgt()
    state = dec.init_state(mem)
    for t in range(3):
        _, state = dec.step(tgt[:, t], mem, state)
    idx = torch.tensor([1, 0, 1])
    picked = state.index_select(idx)
    assert isinstance(picked, TransformerState) and picked.length == 3
    assert picked.caches(1)[0].shape[0] == 3 and picked.cross_mask.shape == (3, 5)
    assert picked.self_k[1] is state.self_k[1]  # no cache copied until the next step gathers the rows
    assert torch.equal(picked.attn, state.attn[idx])
    # Continuing from reordered state equals continuing and then reordering.
    a, _ = dec.step(tgt[idx, 3], mem.index_select(idx), picked)
    b, _ = dec.step(tgt[:, 3], mem, state)
    assert torch.allclose(a, b[idx], atol=1e-6)
    full = dec(tgt[idx, :4], mem.index_select(idx)).logits[:, 3]
    assert torch.allclose(a, full, atol=1e-5)
    # Two selections before a step compose into one gather.
    again = torch.tensor([2, 2, 0, 1])
    twice = picked.index_select(again)
    assert torch.equal(twice.order, idx[again]) and torch.equal(twice.caches(0)[1], state.self_v[0][idx[again]])
    c, _ = dec.step(tgt[idx[again], 3], mem.index_select(idx[again]), twice)
    assert torch.allclose(c, b[idx[again]], atol=1e-6)


def test_tie_output_shares_the_parameter():
    emb = _emb()
    dec = TransformerDecoder(embedding=emb, d_model=D, heads=H, ffn_size=F, layers=1, memory_size=D)
    assert dec.output.weight is emb.weight
    untied = TransformerDecoder(embedding=_emb(), d_model=D, heads=H, ffn_size=F, layers=1, memory_size=D,
                                tie_output=False)
    assert untied.output.weight is not untied.embed.embedding.weight
    with pytest.raises(ValueError, match="tie_output"):
        TransformerDecoder(embedding=_emb(8), d_model=D, heads=H, ffn_size=F, layers=1, memory_size=D)
    narrow = TransformerDecoder(embedding=_emb(8), d_model=D, heads=H, ffn_size=F, layers=1, memory_size=D,
                                tie_output=False)
    assert narrow(_tgt(), _memory(D)).logits.shape == (2, 6, V)


def test_gradient_flows_end_to_end():
    enc = _encoder(code="token").train()
    dec = _decoder(memory_size=D).train()
    mem = enc(_src())
    logits = dec(_tgt(), mem).logits
    nn.functional.cross_entropy(logits.reshape(-1, V), _tgt().reshape(-1)).backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        if "positions" in name:
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert enc.layers[0].attn.q_proj.weight.grad.abs().sum() > 0
    assert dec.layers[0].cross_attn.k_proj.weight.grad.abs().sum() > 0


def test_attention_mask_with_causal_combines_both():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=D, heads=H).eval()
    x = torch.randn(1, 4, D)
    mask = torch.tensor([True, False, True, True])[None, None, None, :]
    out, w = mha(x, mask=mask, is_causal=True, need_weights=True)
    allowed = torch.ones(4, 4, dtype=torch.bool).tril() & mask[0, 0]
    assert torch.all(w[0][~allowed] == 0)
    sdpa, _ = mha(x, mask=mask, is_causal=True)
    assert torch.allclose(out, sdpa, atol=1e-5)


def test_attention_kernels_are_chosen_per_device():
    from torch.nn.attention import SDPBackend

    from seqed.layers import attention_backends

    # CPU: explicit matmuls for a decoding step, the math kernel otherwise (benchmarks/micro_cpu.py).
    assert attention_backends("cpu", queries=1, dropout=0.0) is None
    assert attention_backends("cpu", queries=1, dropout=0.1) == [SDPBackend.MATH]
    assert attention_backends("cpu", queries=7, dropout=0.0) == [SDPBackend.MATH]  # training
    with torch.inference_mode():  # a few queries per row at inference (beams sharing one source): matmuls
        assert attention_backends("cpu", queries=7, dropout=0.0) is None
        assert attention_backends("cpu", queries=7, dropout=0.0, causal=True) == [SDPBackend.MATH]
        assert attention_backends("cpu", queries=17, dropout=0.0) == [SDPBackend.MATH]
    # CUDA: never cuDNN (a graph per new shape made bf16 decoding 13x slower than fp32), steps included.
    for queries in (1, 7):
        chosen = attention_backends("cuda", queries=queries, dropout=0.0)
        assert SDPBackend.CUDNN_ATTENTION not in chosen and SDPBackend.EFFICIENT_ATTENTION in chosen


def test_cpu_decoding_step_attention_equals_the_sdpa_kernel():
    from seqed.layers import MultiHeadAttention

    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=16, heads=4).eval()
    q, k, v = torch.randn(3, 4, 1, 4), torch.randn(3, 4, 5, 4), torch.randn(3, 4, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)[:, None, None, :]
    fast, _ = mha.attend(q, k, v, mask=mask)  # the matmul path
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, 1, dh)
    ref = mha.out_proj(ref.transpose(1, 2).reshape(3, 1, 16))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("need_attn", [False, True])
def test_beams_attending_their_sentence_together_decode_like_one_row_each(monkeypatch, need_attn):
    # Beam search keeps one copy of each sentence's memory keys and attends with its K beams' queries
    # as one block (`TransformerState.select_beams`); without that method every row carries its own
    # copy (`index_select`). Same hypotheses, scores and attention, with sentences leaving at different steps.
    from seqed.config import load_config
    from seqed.model import build_model
    from seqed.search import beam_search
    from test_search import random_src

    torch.manual_seed(0)
    cfg = load_config(None, ["model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.ffn=32",
                             "model.decoder.ffn=32", "model.encoder.heads=2", "model.decoder.heads=2",
                             "model.encoder.layers=2", "model.decoder.layers=2"])
    model = build_model(cfg, 24, 24).eval()
    model.decoder.need_attn = need_attn
    src = random_src(24, [5, 9, 3, 7, 2, 6, 11], seed=3)
    kw = dict(beam_size=4, nbest=3, length_penalty=1.0, max_len_a=1.5, max_len_b=3)
    grouped = beam_search(model, src, **kw)
    monkeypatch.delattr(TransformerState, "select_beams")
    per_row = beam_search(model, src, **kw)
    assert [[h.tokens for h in hyps] for hyps in grouped] == [[h.tokens for h in hyps] for hyps in per_row]
    assert len({len(hyps[0].tokens) for hyps in grouped}) > 1  # sentences ended at different steps
    for a, b in zip((h for hyps in grouped for h in hyps), (h for hyps in per_row for h in hyps)):
        assert a.score == pytest.approx(b.score, abs=1e-5)
        if need_attn:
            torch.testing.assert_close(a.attn, b.attn)
        else:
            assert a.attn is None and b.attn is None
