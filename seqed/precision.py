"""Precision: the one home of `train.precision` and `--precision` (auto | fp32 | bf16 | fp16).

`auto` (the default) resolves to bf16 where the device has native bf16 kernels (CUDA with bf16 support;
CPUs with AVX512-BF16 or AMX) and to fp32 elsewhere; fp16 is never chosen by default (it needs loss
scaling, and CPUs lack its kernels). On a CPU that emulates bf16, autocast is many times slower than
fp32 (the Multi30k Transformer recipe's first update took 84 s in bf16, its fp32 updates 3.7 s,
torch 2.13), so an explicit bf16 there warns once per process.
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from typing import Callable, Optional

import torch

# The autocast dtype of each explicit precision (None: no autocast); "auto" resolves to one of them.
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", *DTYPES)

_warned: set[str] = set()  # the precisions already warned about in this process


def cpu_lacks_native(dtype: torch.dtype) -> bool:
    """True when oneDNN has no native kernels for `dtype` (bf16, fp16) on this CPU.

    On such CPUs (e.g. AVX2 without AVX512-BF16) autocast in `dtype` is emulated, and oneDNN's bf16 LSTM
    fails for many shapes with "could not create a primitive descriptor for the LSTM forward propagation
    primitive" (seen with torch 2.13).
    """
    try:
        if dtype == torch.bfloat16:
            if platform.machine().lower() in ("x86_64", "amd64"):
                # oneDNN's own check (`_is_mkldnn_bf16_supported`) is true on any AVX-512 (BW/VL/DQ) CPU,
                # where bf16 matmuls are converted to fp32 and back; only AVX512-BF16 or AMX run them natively.
                return not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
            return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        if dtype == torch.float16:
            return not torch.ops.mkldnn._is_mkldnn_fp16_supported()
    except (AttributeError, RuntimeError):
        return True
    return False


def native(precision: str, device: torch.device) -> bool:
    """True when `device` runs a resolved `precision` in native kernels, not emulated."""
    dtype = DTYPES[precision]
    if dtype is None:
        return True
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    return not cpu_lacks_native(dtype)


def resolve(precision: str, device: torch.device | str) -> str:
    """The explicit precision that `precision` means on `device`: "auto" -> "bf16" where native, else "fp32".

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native("bf16", torch.device(device)) else "fp32"


def warn_if_emulated(precision: str, device: torch.device | str, *, setting: str = "precision",
                     log: Optional[Callable[[str], None]] = None) -> bool:
    """Warn, once per process and precision, that an explicit `precision` runs emulated on this CPU.

    Args:
        precision: a resolved precision (`resolve`).
        device: where it runs.
        setting: how the user chose it, for the message ("train.precision", "--precision").
        log: where the message goes (a run's log); a `UserWarning` when None.

    Returns:
        True when a warning was given now.
    """
    device = torch.device(device)
    if device.type != "cpu" or native(precision, device) or precision in _warned:
        return False
    _warned.add(precision)
    msg = (f"this CPU has no native {precision} kernels, so {setting}={precision} is emulated and many times "
           f"slower than fp32: use {setting}=auto ({resolve('auto', device)} here)")
    if log is not None:
        log(f"warning: {msg}")
    else:
        warnings.warn(msg, stacklevel=3)
    return True


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved `precision` on `device` (fp32: none, so a caller's stays in force)."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
