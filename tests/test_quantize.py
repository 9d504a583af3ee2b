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


@pytest.mark.skipif("onednn" not in torch.backends.quantized.supported_engines, reason="torch built without oneDNN")
@pytest.mark.filterwarnings("ignore")  # torch.ao's deprecation notices
def test_widening_layers_run_on_onednn_the_others_on_the_default_engine(trained):  # noqa: F811
    """A packed weight keeps the kernels of the engine it was packed under (seqed.quantize's docstring)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model, _ = trained
    engine = torch.backends.quantized.engine
    q = quantize(model, "int8")
    assert torch.backends.quantized.engine == engine  # restored

    def packed(linear, under):
        torch.backends.quantized.engine = under
        try:
            return quantize_dynamic(nn.Sequential(linear), {nn.Linear: per_channel_dynamic_qconfig})
        finally:
            torch.backends.quantized.engine = engine

    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        kinds = set()
        for name in ("decoder.output", "decoder.layers.0.ffn.inner", "decoder.layers.0.ffn.outer",
                     "decoder.layers.0.self_attn.q_proj"):
            fp32, int8 = model.get_submodule(name), q.get_submodule(name)
            wide = fp32.out_features > fp32.in_features
            kinds.add(wide)
            x = torch.randn(33, 1, fp32.in_features, generator=g) * 3
            onednn, default = packed(fp32, "onednn")(x), packed(fp32, engine)(x)
            assert not torch.equal(onednn, default)  # the engines round differently: the check can tell
            assert torch.equal(int8(x), onednn if wide else default), name
        assert kinds == {True, False}  # both kinds were checked
