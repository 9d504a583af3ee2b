"""int8 inference for seqed's own CPU engine: the Linear layers quantized dynamically (`quantize`).

Dynamic quantization (Jacob et al. 2018, https://arxiv.org/abs/1712.05877; PyTorch's "dynamic"
mode): every ``nn.Linear`` gets int8 weights, quantized once, per output channel; each call
quantizes its input activations to uint8 with a scale computed from that batch, multiplies in int8
(fbgemm / oneDNN VNNI kernels) and returns fp32. Embeddings, layer norms, attention products and the
softmax stay fp32. The tied output projection gets its own int8 copy; the embedding table stays fp32.

The API: ``torch.ao.quantization.quantize_dynamic`` with ``per_channel_dynamic_qconfig``. It is
what torch 2.13 itself provides for int8 weights with per-batch int8 activations on the CPU (the
other built-in int8 path, ``torch._weight_int8pack_mm``, is weight-only and was ~40x slower than
fp32 at decoding shapes on this machine). It warns that it is deprecated: its replacement is
torchao's ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``
(https://github.com/pytorch/ao), not a dependency of seqed; switch to it when ``torch.ao`` goes.
The warnings are silenced here, since the user can do nothing about them.

Which kernels: a packed int8 weight keeps the kernels of the quantized engine it was packed under,
whatever engine is selected when it runs. On this project's benchmark CPU (AVX-512 VNNI) oneDNN's
dynamic kernel ran the widening products, (320, 256) x (256, 8000) for the output projection and
(256, 1024) for the feed-forward's first layer, in 1.9 ms against 3.1 ms and 0.27 against 0.31 ms
for fbgemm's (torch's default "x86" engine), while fbgemm was faster for the square and narrowing
ones (0.10 against 0.12 ms at (256, 256)): so Linear layers with more outputs than inputs are packed
for oneDNN where torch has it, the others for the default engine (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn

QUANTIZATIONS = ("int8",)


def quantize(model: nn.Module, quantization: str) -> nn.Module:
    """A copy of `model` (on the CPU, in eval mode) with int8 dynamically quantized Linear layers.

    Args:
        model: a model for decoding (its ``encode`` and ``decoder.step`` keep working).
        quantization: "int8".

    Returns:
        The quantized copy; `model` itself is unchanged.

    Raises:
        ValueError: an unknown quantization, or a model with parameters off the CPU.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantization runs on the CPU only; use --precision bf16 or fp16 on a GPU")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model = copy.deepcopy(model).eval()
    widening = {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features > m.in_features}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices (see the module docstring)
        if widening and "onednn" in torch.backends.quantized.supported_engines:
            with _engine("onednn"):
                quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in widening}, inplace=True)
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


@contextlib.contextmanager
def _engine(name: str):
    """Pack quantized weights for engine `name` within the block (the selected engine is restored)."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before
