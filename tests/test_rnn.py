"""RNN encoder, attention and RNN decoders: shapes, masks, source reversal, cache equivalence, gradients."""

import itertools

import pytest
import torch
from torch import nn

from seqed.attention import ATTENTIONS, Attention
from seqed.decoders.rnn import RNNDecoder, RNNState
from seqed.encoders.rnn import RNNEncoder
from seqed.layers import reverse_padded
from seqed.memory import Memory
from seqed.vocab import BOS_ID, PAD_ID

V, E, H = 20, 8, 16


def embedding() -> nn.Embedding:
    return nn.Embedding(V, E, padding_idx=PAD_ID)


def padded_batch(lengths, seed=0, max_len=None) -> torch.Tensor:
    """(B, S) random real tokens (ids 4..V-1) followed by PAD."""
    g = torch.Generator().manual_seed(seed)
    S = max_len or max(lengths)
    src = torch.full((len(lengths), S), PAD_ID, dtype=torch.long)
    for b, n in enumerate(lengths):
        src[b, :n] = torch.randint(4, V, (n,), generator=g)
    return src


def encoder(**kw) -> RNNEncoder:
    kw.setdefault("hidden_size", H // 2)
    return RNNEncoder(embedding=embedding(), **kw).eval()


# -- encoder ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,bidirectional,layers",
                         itertools.product(["lstm", "gru"], [True, False], [1, 2]))
def test_encoder_shapes_masks_and_padding_invariance(cell, bidirectional, layers):
    torch.manual_seed(0)
    enc = encoder(cell=cell, bidirectional=bidirectional, layers=layers)
    src = padded_batch([5, 2, 4])
    mem = enc(src)
    D = 2 if bidirectional else 1
    assert enc.output_size == enc.code_size == D * H // 2
    assert mem.states.shape == (3, 5, enc.output_size)
    assert mem.code.shape == (3, enc.code_size)
    assert torch.equal(mem.mask, src != PAD_ID)
    assert torch.all(mem.states[~mem.mask] == 0)
    # A sentence encoded alone equals the same sentence inside the padded batch.
    for b, n in enumerate([5, 2, 4]):
        alone = enc(src[b:b + 1, :n])
        torch.testing.assert_close(alone.states[0], mem.states[b, :n], atol=1e-6, rtol=0)
        torch.testing.assert_close(alone.code[0], mem.code[b], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell,bidirectional,layers",
                         itertools.product(["lstm", "gru"], [True, False], [1, 2]))
def test_encoder_padded_cpu_path_equals_packed_path(cell, bidirectional, layers):
    """The CPU path (no packing: each direction over the padded rows, the backward one reversed within each
    row's length) gives the packed path's states, code and gradients, on the same nn.LSTM/GRU weights."""
    torch.manual_seed(0)
    enc = encoder(cell=cell, bidirectional=bidirectional, layers=layers).train()  # dropout 0: deterministic
    src = padded_batch([5, 2, 4, 1, 5], seed=3)
    mask = src != PAD_ID
    lengths = mask.sum(1)
    results = []
    for run in (lambda x: enc._run_packed(x, lengths), lambda x: enc._run_padded(x, lengths, mask)):
        enc.zero_grad()
        states, code = run(enc.embedding(src))
        (states.pow(2).sum() + code.sin().sum()).backward()
        results.append((states, code, [p.grad.clone() for p in enc.parameters()]))
    (s1, c1, g1), (s2, c2, g2) = results
    torch.testing.assert_close(s2, s1, atol=1e-6, rtol=0)
    torch.testing.assert_close(c2, c1, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert torch.equal(enc(src).states, s2.detach())  # forward takes the padded path on CPU


def test_encoder_code_is_top_layer_final_h():
    torch.manual_seed(0)
    enc = encoder(cell="lstm", bidirectional=True, layers=2)
    src = padded_batch([4])
    mem = enc(src)
    # Forward direction: its output at the last token; backward: its output at the first token.
    h = H // 2
    torch.testing.assert_close(mem.code[0, :h], mem.states[0, -1, :h])
    torch.testing.assert_close(mem.code[0, h:], mem.states[0, 0, h:])


def test_reverse_padded_keeps_padding_at_the_end():
    src = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [4, 5, 6, 7]])
    out = reverse_padded(src, (src != PAD_ID).sum(1))
    assert out.tolist() == [[7, 6, 5, 0], [9, 8, 0, 0], [7, 6, 5, 4]]


def test_reverse_source_equals_encoding_reversed_tokens():
    torch.manual_seed(0)
    enc = encoder(reverse_source=True)
    plain = encoder()
    plain.load_state_dict(enc.state_dict())
    src = padded_batch([5, 3, 1])
    rev = src.clone()
    for b, n in enumerate([5, 3, 1]):
        rev[b, :n] = src[b, :n].flip(0)
    a, b = enc(src), plain(rev)
    torch.testing.assert_close(a.states, b.states)
    torch.testing.assert_close(a.code, b.code)
    assert torch.equal(a.mask, src != PAD_ID)


def test_encoder_rejects_empty_rows_left_padding_and_unknown_cells():
    enc = encoder()
    with pytest.raises(ValueError, match="empty"):
        enc(torch.tensor([[5, 6], [0, 0]]))
    with pytest.raises(ValueError, match="right padding"):
        enc(torch.tensor([[0, 5, 6], [5, 6, 7]]))
    with pytest.raises(ValueError, match="unknown cell"):
        RNNEncoder(embedding=embedding(), hidden_size=4, cell="rnn")


# -- attention -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ATTENTIONS)
def test_attention_weights_sum_to_one_and_ignore_padding(kind):
    torch.manual_seed(0)
    att = Attention(kind=kind, query_size=H, memory_size=H)
    values = torch.randn(3, 5, H)
    mask = padded_batch([5, 2, 4]) != PAD_ID
    keys = att.precompute(values)
    query = torch.randn(3, 4, H)
    ctx, w = att(query, keys, values, mask)
    assert ctx.shape == (3, 4, H) and w.shape == (3, 4, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    assert torch.all(w.masked_select(~mask.unsqueeze(1).expand_as(w)) == 0)
    # Changing the padded states changes nothing.
    noisy = values.masked_fill(~mask.unsqueeze(-1), 123.0)
    ctx2, w2 = att(query, att.precompute(noisy), noisy, mask)
    torch.testing.assert_close(ctx2, ctx)
    torch.testing.assert_close(w2, w)
    # One query at a time equals T queries at once.
    ctx1, w1 = att(query[:, 2], keys, values, mask)
    torch.testing.assert_close(ctx1, ctx[:, 2])
    torch.testing.assert_close(w1, w[:, 2])


def test_attention_rejects_bad_sizes_and_kinds():
    with pytest.raises(ValueError, match="must equal the memory size"):
        Attention(kind="dot", query_size=8, memory_size=16)
    with pytest.raises(ValueError, match="unknown kind"):
        Attention(kind="concat", query_size=8, memory_size=8)
    Attention(kind="general", query_size=8, memory_size=16)  # general and bahdanau project: fine
    Attention(kind="bahdanau", query_size=8, memory_size=16, attn_size=5)


# -- decoder ---------------------------------------------------------------------------------------

def _decoder_cases():
    for cell, layers in itertools.product(["lstm", "gru"], [1, 2]):
        for feed_code in (False, True):
            yield dict(attention=None, cell=cell, layers=layers, feed_code=feed_code)
        yield dict(attention="bahdanau", cell=cell, layers=layers)
        for kind, feeding in itertools.product(["dot", "general"], [True, False]):
            yield dict(attention=kind, cell=cell, layers=layers, input_feeding=feeding)


CASES = list(_decoder_cases())


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


def build(seed=0, **kw):
    """A bidirectional encoder (2 * H/2 = H wide, so 'dot' fits) and a decoder, both in eval mode."""
    torch.manual_seed(seed)
    enc = encoder(cell=kw.get("cell", "lstm"))
    kw.setdefault("dropout", 0.3)  # eval mode must make it a no-op
    dec = RNNDecoder(embedding=embedding(), hidden_size=H, memory_size=enc.output_size,
                     code_size=enc.code_size, **kw).eval()
    return enc, dec


def targets(B=3, T=6, seed=1):
    tgt = padded_batch([T - 1] * B, seed=seed)
    return torch.cat([torch.full((B, 1), BOS_ID), tgt], dim=1)  # (B, T)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_step_reproduces_forward(case):
    enc, dec = build(**case)
    with torch.no_grad():
        mem = enc(padded_batch([5, 2, 4]))
        tgt = targets()
        out = dec(tgt, mem)
        assert out.logits.shape == (3, 6, V)
        state = dec.init_state(mem)
        for t in range(tgt.size(1)):
            logits, state = dec.step(tgt[:, t], mem, state)
            assert (logits - out.logits[:, t]).abs().max() <= 1e-5
            if case["attention"] is None:
                assert state.attn is None
            else:
                torch.testing.assert_close(state.attn, out.attn[:, t], atol=1e-6, rtol=0)
    if case["attention"] is None:
        assert out.attn is None
    else:
        assert out.attn.shape == (3, 6, 5)
        torch.testing.assert_close(out.attn.sum(-1), torch.ones(3, 6))
        assert torch.all(out.attn.masked_select(~mem.mask.unsqueeze(1).expand_as(out.attn)) == 0)


@pytest.mark.parametrize("case", [c for c in CASES if c["layers"] == 2 and c["cell"] == "lstm"], ids=_case_id)
def test_state_index_select_reorders_the_batch(case):
    enc, dec = build(**case)
    idx = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        mem = enc(padded_batch([5, 2, 4]))
        tgt = targets()
        state = dec.init_state(mem)
        for t in range(2):
            _, state = dec.step(tgt[:, t], mem, state)
        # Reorder the state after two steps, then step once more ...
        reordered, _ = dec.step(tgt[idx, 2], mem.index_select(idx), state.index_select(idx))
        # ... equals stepping the reordered batch from the start.
        mem_r, state_r = mem.index_select(idx), dec.init_state(mem.index_select(idx))
        for t in range(3):
            logits_r, state_r = dec.step(tgt[idx, t], mem_r, state_r)
    torch.testing.assert_close(reordered, logits_r, atol=1e-6, rtol=0)


def test_state_index_select_selects_layers_dim_1():
    L, B = 2, 3
    state = RNNState(hidden=torch.arange(L * B * 4.).view(L, B, 4), cell=None, feed=torch.randn(B, 5),
                     keys=torch.randn(B, 7, 4), attn=None)
    idx = torch.tensor([1, 1])
    out = state.index_select(idx)
    assert out.hidden.shape == (L, 2, 4) and torch.equal(out.hidden[:, 0], state.hidden[:, 1])
    assert out.feed.shape == (2, 5) and out.keys.shape == (2, 7, 4) and out.cell is None and out.attn is None


@pytest.mark.parametrize("attention", [None, "bahdanau", "general"])
def test_gradient_reaches_encoder_embeddings(attention):
    enc, dec = build(attention=attention, dropout=0.0)
    enc.train(), dec.train()
    src, tgt = padded_batch([5, 2, 4]), targets()
    dec(tgt, enc(src)).logits.logsumexp(-1).sum().backward()
    grad = enc.embedding.weight.grad
    assert grad is not None and grad[src.unique()[1:]].abs().sum(-1).gt(0).all()
    assert grad[PAD_ID].abs().sum() == 0


@pytest.mark.parametrize("feed_code", [False, True])
def test_code_only_decoder_never_reads_memory_states(feed_code):
    enc, dec = build(attention=None, feed_code=feed_code)
    with torch.no_grad():
        mem = enc(padded_batch([5, 2, 4]))
        poisoned = Memory(states=torch.full_like(mem.states, float("nan")), mask=mem.mask, code=mem.code)
        a, b = dec(targets(), mem).logits, dec(targets(), poisoned).logits
        assert torch.equal(a, b)
        la, _ = dec.step(targets()[:, 0], poisoned, dec.init_state(poisoned))
        assert torch.isfinite(la).all()
        other_code = Memory(states=mem.states, mask=mem.mask, code=mem.code + 1.0)
        assert not torch.allclose(dec(targets(), other_code).logits, a)


def test_tie_output_shares_the_embedding_parameter():
    _, dec = build(tie_output=True)
    assert dec.output.weight is dec.embedding.weight
    names = [n for n, _ in dec.named_parameters()]
    assert "output.weight" not in names  # one parameter, counted once
    _, untied = build(tie_output=False)
    assert untied.output.weight is not untied.embedding.weight


def test_decoder_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown attention"):
        RNNDecoder(embedding=embedding(), hidden_size=H, memory_size=H, code_size=H, attention="luong")
    with pytest.raises(ValueError, match="must equal the memory size"):
        RNNDecoder(embedding=embedding(), hidden_size=H, memory_size=2 * H, code_size=H, attention="dot")
    with pytest.raises(ValueError, match="unknown cell"):
        RNNDecoder(embedding=embedding(), hidden_size=H, memory_size=H, code_size=H, cell="rnn")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_under_cpu_bf16_autocast_runs_and_matches_fp32(cell):
    """oneDNN's bf16 LSTM fails on CPUs without native bf16 for many shapes (torch 2.13, AVX2):
    run_rnn falls back to fp32 there; everywhere it must run and agree with fp32 to bf16 accuracy."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from seqed.layers import CELLS, run_rnn

    torch.manual_seed(0)
    rnn = CELLS[cell](8, 8, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, 8)
    ref, _ = rnn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = run_rnn(rnn, x)
        packed, _ = run_rnn(rnn, pack_padded_sequence(x, [5, 4, 2], batch_first=True))
    assert torch.allclose(out.float(), ref, atol=3e-2)
    assert packed.data.shape[0] == 11


def test_code_fed_readout_equals_the_concatenated_readout():
    """With feed_code the readout's code term is computed once per sentence: W [s_t; code] + b all the same."""
    enc, dec = build(attention=None, cell="gru", feed_code=True)
    with torch.no_grad():
        mem = enc(padded_batch([5, 2, 4]))
        out = torch.randn(3, 6, H)  # (B, T, H) decoder outputs
        code = mem.code.unsqueeze(1).expand(-1, 6, -1)  # (B, T, C)
        expected = torch.tanh(dec.readout(torch.cat([out, code], dim=-1)))  # (B, T, E)
        torch.testing.assert_close(dec._read([out], mem), expected, atol=1e-6, rtol=0)
