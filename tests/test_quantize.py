"""seqed's own int8 engine (`seqed.quantize`): int8 Linear layers in a copy, outputs close to fp32."""

import pytest
import torch
from torch import nn

from seqed.quantize import quantize
from seqed.translator import Translator
from test_beam_reference import trained  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_int8_copy_quantizes_every_linear_and_leaves_the_model(trained):  # noqa: F811
    model, sources = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize(model, "int8")
    assert not any(type(m) is nn.Linear for m in q.modules())  # all replaced, the tied output layer too
    assert any(type(m) is nn.Linear for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    src = torch.nn.utils.rnn.pad_sequence(sources[:4], batch_first=True)
    with torch.inference_mode():
        mem, qmem = model.encode(src), q.encode(src)
    # int8 weights and activations: close to fp32, not equal
    assert 0 < (mem.states - qmem.states).abs().max() < 0.2


def test_translator_int8_translates_like_fp32(trained):  # noqa: F811
    model, sources = trained

    class Ids:  # the translator's tokenizer interface over ids that are already pieces
        def encode_src(self, lines):
            return [[int(x) for x in line.split()] for line in lines]

    lines = [" ".join(map(str, s[:-1].tolist())) for s in sources]
    fp32 = Translator(model, Ids(), beam_size=4).translate(lines)
    int8 = Translator(model, Ids(), beam_size=4, quantization="int8").translate(lines)
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(fp32, int8))
    # a d-32 model trained for 150 steps has flat distributions (14 of 20 equal when written); the
    # quality bar, BLEU within 0.3 of fp32, is measured on Multi30k by benchmarks/cpu_decode.py
    assert same >= 0.5 * len(lines)
    with pytest.raises(ValueError, match="runs in fp32"):
        Translator(model, Ids(), precision="bf16", quantization="int8")
    with pytest.raises(ValueError, match="must be one of int8"):
        Translator(model, Ids(), quantization="int4")


def _quantize_unfused(model):
    """int8 as `quantize` did before the attention projections were fused: the reference."""
    import copy
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear: per_channel_dynamic_qconfig})


def test_fused_attention_projections_change_no_output(trained):  # noqa: F811
    """`fuse_attention` (one Linear for self-attention's q/k/v, one for cross-attention's k/v): fp32 logits
    equal up to rounding, every beam output token-identical, int8 the same integers; the model it copies
    keeps its state dict."""
    import copy

    from seqed.layers import MultiHeadAttention, fuse_attention
    from seqed.search import decode

    model, sources = trained
    keys = set(model.state_dict())
    fused = fuse_attention(copy.deepcopy(model))
    attns = [m for m in fused.modules() if isinstance(m, MultiHeadAttention)]
    assert [(m.qkv_proj is not None, m.kv_proj is not None) for m in attns] == \
        [(True, False), (True, False), (False, True)]  # encoder and decoder self-attention, cross-attention
    assert set(model.state_dict()) == keys
    src = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True)  # (B, S), PAD 0
    tgt = torch.cat([torch.ones(len(sources), 1, dtype=torch.long), src[:, :-1]], dim=1)
    with torch.inference_mode():
        a = model.decoder(tgt, model.encode(src)).logits
        b = fused.decoder(tgt, fused.encode(src)).logits
        assert torch.allclose(a, b, atol=1e-5) and not torch.equal(a, torch.zeros_like(a))
        for m in (model, fused):  # step by step through the caches
            m.eval()
        base = decode(model, src, beam_size=4, nbest=2, length_penalty=1.0)
        assert [[h.tokens for h in r] for r in decode(fused, src, beam_size=4, nbest=2, length_penalty=1.0)] == \
            [[h.tokens for h in r] for r in base]
        q, ref = quantize(model, "int8"), _quantize_unfused(model)
        assert any(m.qkv_proj is not None for m in q.modules() if isinstance(m, MultiHeadAttention))
        assert torch.equal(q.encode(src).states, ref.encode(src).states)
        assert [[h.tokens for h in r] for r in decode(q, src, beam_size=4)] == \
            [[h.tokens for h in r] for r in decode(ref, src, beam_size=4)]
