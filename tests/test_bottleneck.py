"""Bottlenecks, KL annealing, decoder word dropout and encoder-decoder weight tying, as units."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from seqed.bottleneck import (CodeBottleneck, Identity, VariationalBottleneck, build_bottleneck, kl_weight,
                              latent_memory)
from seqed.config import ConfigError, load_config
from seqed.memory import Memory
from seqed.model import build_model, count_parameters
from seqed.noise import word_dropout
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

V = 30


pytestmark = pytest.mark.usefixtures("one_thread")


def memory(B=4, S=5, C=8, seed=0) -> Memory:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[0, 3:] = False
    return Memory(states=torch.randn(B, S, C, generator=g), mask=mask, code=torch.randn(B, C, generator=g))


# ---------------------------------------------------------------------------------------------
# KL annealing


def test_kl_weight_none_is_always_one():
    assert all(kl_weight(s, kind="none", steps=100) == 1.0 for s in (0, 1, 50, 10 ** 6))


def test_kl_weight_linear():
    w = [kl_weight(s, kind="linear", steps=200) for s in range(0, 400)]
    assert w[0] == 0.0 and w[50] == 0.25 and w[100] == 0.5 and w[200] == 1.0 and w[399] == 1.0
    assert all(b >= a for a, b in zip(w, w[1:]))  # monotone
    assert kl_weight(7, kind="linear", steps=0) == 1.0  # no annealing horizon: full weight


def test_kl_weight_cyclical():
    """Fu et al. 2019: 4 cycles of 250 steps over 1000; each rises linearly for half a cycle, then holds 1."""
    w = lambda s: kl_weight(s, kind="cyclical", steps=1000, cycles=4, ratio=0.5)  # noqa: E731
    for start in (0, 250, 500, 750):
        assert w(start) == 0.0
        assert w(start + 62) == pytest.approx(62 / 125)
        assert w(start + 125) == 1.0 and w(start + 249) == 1.0
    assert w(1000) == 1.0 and w(5000) == 1.0
    assert kl_weight(30, kind="cyclical", steps=100, cycles=2, ratio=1.0) == pytest.approx(0.6)


def test_kl_weight_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown KL annealing"):
        kl_weight(1, kind="sigmoid")
    with pytest.raises(ValueError, match="cycles"):
        kl_weight(1, kind="cyclical", steps=10, cycles=0)
    with pytest.raises(ValueError, match="ratio"):
        kl_weight(1, kind="cyclical", steps=10, ratio=0.0)


def test_config_rejects_bad_annealing():
    with pytest.raises(ConfigError, match="kl_cycles"):
        load_config(None, ["train.kl_cycles=0"])
    with pytest.raises(ConfigError, match="kl_anneal"):
        load_config(None, ["train.kl_anneal=sigmoid"])


# ---------------------------------------------------------------------------------------------
# bottlenecks


def test_identity_passes_the_memory_through():
    m = memory()
    out = Identity(8)(m)
    assert out.memory is m and out.kl is None


def test_code_bottleneck_is_one_slot_of_code_dim():
    m = memory(C=8)
    b = CodeBottleneck(8, 3)
    out = b(m)
    assert out.memory.states.shape == (4, 1, 3) and out.memory.mask.all() and out.memory.mask.shape == (4, 1)
    assert torch.equal(out.memory.states[:, 0], out.memory.code)
    assert out.memory.code.abs().max() < 1  # tanh
    # Only the code gets through: the per-token states do not matter.
    other = Memory(states=torch.randn(4, 9, 8), mask=torch.ones(4, 9, dtype=torch.bool), code=m.code)
    assert torch.equal(b(other).memory.code, out.memory.code)
    assert out.kl is None and b.output_size == 3 and b.code_size == 3


def test_variational_kl_is_the_closed_form_and_positive():
    b = VariationalBottleneck(8, 5)
    m = memory(B=6, C=8)
    out = b(m)
    mu, logvar = out.mu, out.logvar
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum()
    assert torch.allclose(out.kl, expected, atol=1e-5) and torch.allclose(out.kl_raw, expected, atol=1e-5)
    assert out.kl > 0 and out.memory.states.shape == (6, 1, 5)
    # The prior itself has zero KL.
    with torch.no_grad():
        b.to_stats.weight.zero_()
        b.to_stats.bias.zero_()
    assert float(b(m).kl.detach()) == 0.0


def test_variational_samples_in_training_and_uses_the_mean_in_eval():
    b = VariationalBottleneck(8, 5)
    m = memory(C=8)
    torch.manual_seed(1)
    z1 = b.train()(m).memory.code
    torch.manual_seed(1)
    z2 = b(m).memory.code
    assert torch.equal(z1, z2)  # seeded
    out = b(m)
    assert not torch.allclose(out.memory.code, out.mu)
    out = b.eval()(m)
    assert torch.equal(out.memory.code, out.mu)
    assert torch.equal(b(m, sample=True).mu, out.mu) and not torch.equal(b(m, sample=True).memory.code, out.mu)


def test_free_bits_floor_the_kl_in_training_only():
    """Kingma et al. 2016: dimensions whose batch-mean KL is below the floor get no KL gradient."""
    b = VariationalBottleneck(8, 4, free_bits=2.0)
    m = memory(B=5, C=8)
    with torch.no_grad():
        b.to_stats.weight.mul_(0.01)  # posterior close to the prior: every dimension below 2 nats
        b.to_stats.bias.zero_()
    out = b.train()(m)
    assert float(out.kl_raw) < 0.5
    assert float(out.kl.detach()) == pytest.approx(2.0 * 4 * 5)  # floor x dims x batch
    out.kl.backward()
    assert b.to_stats.weight.grad.abs().max() == 0
    out = b.eval()(m)
    assert torch.equal(out.kl, out.kl_raw)  # validation reports the real KL
    with pytest.raises(ValueError, match="free_bits"):
        VariationalBottleneck(8, 4, free_bits=-1)


def test_build_bottleneck_and_latent_memory():
    assert isinstance(build_bottleneck("memory", code_size=8, code_dim=3), Identity)
    assert isinstance(build_bottleneck("code", code_size=8, code_dim=3), CodeBottleneck)
    assert isinstance(build_bottleneck("variational", code_size=8, code_dim=3), VariationalBottleneck)
    with pytest.raises(ValueError, match="unknown bottleneck 'hourglass'"):
        build_bottleneck("hourglass", code_size=8, code_dim=3)
    z = torch.randn(3, 4)
    m = latent_memory(z)
    assert m.states.shape == (3, 1, 4) and m.mask.all() and m.code is z


def rnn_cfg(*extra):
    return load_config(None, ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.hidden=16",
                              "model.decoder.hidden=16", "model.encoder.embed_dim=8", "model.decoder.embed_dim=8",
                              "model.encoder.layers=2", "model.decoder.layers=2", "model.decoder.attention=none",
                              "model.encoder.bidirectional=false", "model.encoder.dropout=0",
                              "model.decoder.dropout=0", *extra])


def tf_cfg(*extra):
    return load_config(None, ["model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.ffn=32",
                              "model.decoder.ffn=32", "model.encoder.heads=2", "model.decoder.heads=2",
                              "model.encoder.layers=2", "model.decoder.layers=2", "model.encoder.dropout=0",
                              "model.decoder.dropout=0", *extra])


@pytest.mark.parametrize("kind", ["code", "variational"])
@pytest.mark.parametrize("make", [rnn_cfg, tf_cfg])
def test_a_latent_model_decodes_from_the_code_alone(kind, make):
    torch.manual_seed(0)
    model = build_model(make(f"model.bottleneck={kind}", "model.code_dim=6"), V, V).eval()
    src = torch.randint(4, V, (3, 7))
    src[:, -1] = EOS_ID
    enc = model.encode(src)
    assert enc.states.shape == (3, 1, 6) and enc.code.shape == (3, 6)
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), src[:, :-1]], 1)
    logits = model(src, tgt_in).logits
    # The decoder's whole input is the code: decoding the code alone gives the same output.
    with torch.no_grad():
        direct = model.decoder(tgt_in, latent_memory(enc.code)).logits
    assert torch.allclose(logits, direct, atol=1e-6)
    # Gradient reaches the encoder through the bottleneck.
    model.train()
    out = model(src, tgt_in)
    loss = out.logits.logsumexp(-1).sum() + (out.kl if out.kl is not None else 0)
    loss.backward()
    enc_grads = [p.grad for n, p in model.named_parameters() if n.startswith("encoder.") and "embedding" not in n]
    assert enc_grads and all(g is not None and g.abs().sum() > 0 for g in enc_grads)


def test_rnn_latent_model_needs_a_code_only_decoder():
    with pytest.raises(ConfigError, match="attention=none"):
        load_config(None, ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.bottleneck=code"])


# ---------------------------------------------------------------------------------------------
# decoder word dropout (Bowman et al. 2016)


def test_word_dropout_rate_and_specials():
    g = torch.Generator().manual_seed(0)
    tgt_in = torch.randint(4, V, (200, 30))
    tgt_in[:, 0] = BOS_ID
    tgt_in[:100, 20:] = PAD_ID
    out = word_dropout(tgt_in, 0.25, g)
    dropped = out == UNK_ID
    assert not dropped[:, 0].any() and not dropped[:100, 20:].any()
    assert torch.equal(out[~dropped], tgt_in[~dropped])
    words = (tgt_in != PAD_ID) & (tgt_in != BOS_ID)
    assert abs(dropped.sum().item() / words.sum().item() - 0.25) < 0.02
    assert torch.equal(out, word_dropout(tgt_in, 0.25, torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------------------------------------
# symmetric weights


def distinct(*modules) -> int:
    """Parameters of the modules, shared tensors counted once."""
    return sum(p.numel() for p in {id(p): p for m in modules for p in m.parameters()}.values())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tying_halves_an_rnn_autoencoders_recurrent_stack(cell):
    plain = build_model(rnn_cfg(f"model.encoder.cell={cell}", f"model.decoder.cell={cell}"), V, V)
    tied = build_model(rnn_cfg(f"model.encoder.cell={cell}", f"model.decoder.cell={cell}",
                               "model.tie_encoder_decoder=true"), V, V)
    assert distinct(plain.encoder.rnn, plain.decoder.rnn) == 2 * distinct(tied.encoder.rnn, tied.decoder.rnn)
    for name, param in tied.encoder.rnn.named_parameters():
        assert getattr(tied.decoder.rnn, name) is param
    assert count_parameters(plain) - count_parameters(tied) == distinct(tied.encoder.rnn)
    # nn.LSTM/GRU run from `_flat_weights`: they must be the shared tensors too, also after .to().
    tied = tied.to(torch.float64)
    enc = {id(p) for p in tied.encoder.rnn.parameters()}
    assert all(id(w) in enc for w in tied.decoder.rnn._flat_weights)


def test_tying_a_transformer_autoencoder_shares_everything_but_cross_attention():
    plain = build_model(tf_cfg(), V, V)
    tied = build_model(tf_cfg("model.tie_encoder_decoder=true"), V, V)

    def stacks(model):
        return [model.encoder.layers, model.decoder.layers]

    def own(model):  # what a decoder layer has that an encoder layer has not
        return [m for layer in model.decoder.layers for m in (layer.cross_attn, layer.cross_norm)]

    cross = distinct(*own(tied))
    assert cross == distinct(*own(plain))
    # Without cross-attention (which has no encoder counterpart) the pair of stacks is halved.
    assert distinct(*stacks(plain)) - cross == 2 * (distinct(*stacks(tied)) - cross)
    for enc, dec in zip(tied.encoder.layers, tied.decoder.layers):
        assert dec.self_attn is enc.attn and dec.ffn is enc.ffn
        assert dec.self_norm is enc.attn_norm and dec.ffn_norm is enc.ffn_norm
        assert dec.cross_attn.q_proj.weight is not enc.attn.q_proj.weight


def test_tying_needs_matching_shapes():
    with pytest.raises(ConfigError, match="tie_encoder_decoder"):
        build_model(load_config(None, ["model.encoder.type=rnn", "model.encoder.hidden=16",
                                       "model.decoder.hidden=16", "model.tie_encoder_decoder=true"]), V, V)


@pytest.mark.parametrize("make", [rnn_cfg, tf_cfg])
def test_a_tied_autoencoder_trains_and_stays_tied(make):
    torch.manual_seed(0)
    model = build_model(make("model.bottleneck=code", "model.tie_encoder_decoder=true"), V, V)
    g = torch.Generator().manual_seed(0)
    words = torch.randint(4, V, (16, 5), generator=g)
    src = torch.cat([words, torch.full((16, 1), EOS_ID)], 1)  # (B, S)
    tgt_in = torch.cat([torch.full((16, 1), BOS_ID), words], 1)  # (B, T)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(80):
        logits = model(src, tgt_in).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), src.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    state = model.state_dict()
    again = build_model(make("model.bottleneck=code", "model.tie_encoder_decoder=true"), V, V)
    again.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(again.eval()(src, tgt_in).logits, model.eval()(src, tgt_in).logits, atol=1e-5)
    enc = {id(p) for p in again.encoder.parameters()}
    shared = [p for n, p in again.decoder.named_parameters() if id(p) in enc]
    assert shared  # loading the weights kept the sharing
    assert not math.isnan(losses[-1])


def test_the_model_names_its_bottleneck_kind():
    from seqed.autoencoder import has_latent, is_variational
    from seqed.config import load_config
    from seqed.model import build_model

    for kind, latent, variational in (("memory", False, False), ("code", True, False), ("variational", True, True)):
        cfg = load_config(None, [f"model.bottleneck={kind}", "model.encoder.layers=1", "model.decoder.layers=1",
                                 "model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.heads=2",
                                 "model.decoder.heads=2", "model.encoder.ffn=16", "model.decoder.ffn=16"])
        model = build_model(cfg, 30, 30)
        assert model.bottleneck_kind == kind
        assert (has_latent(model), is_variational(model)) == (latent, variational)
