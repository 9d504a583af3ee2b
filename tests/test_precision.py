"""`precision: auto` resolves per device, with the native-kernel probe mocked both ways; an explicit bf16 on
a CPU that emulates it warns once (Translator, `seqed translate`, training); the resolved precision is
recorded in the run's log."""

import json
import warnings

import pytest
import torch
from torch import nn

from seqed import precision
from seqed.cli import main
from seqed.translator import Translator
from tiny_runs import write_config, write_task


@pytest.fixture
def cpu_bf16(monkeypatch):
    """`set(native)`: make this CPU report native bf16 kernels (True) or emulated ones (False)."""
    precision._warned.clear()

    def set_native(native: bool):
        monkeypatch.setattr(precision, "cpu_lacks_native", lambda dtype: not native)

    yield set_native
    precision._warned.clear()


class Tok:
    def encode_src(self, sentences):
        return [[4 + (ord(c) % 10) for c in s] for s in sentences]

    def decode_tgt(self, ids):
        return [" ".join(map(str, x)) for x in ids]


def test_auto_is_bf16_where_native_and_fp32_where_emulated(cpu_bf16):
    cpu_bf16(True)
    assert precision.resolve("auto", "cpu") == "bf16"
    cpu_bf16(False)
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("bf16", "cpu") == "bf16"  # an explicit choice is kept
    assert precision.resolve("fp16", "cpu") == "fp16"  # fp16 is never chosen by auto, only given
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'int8'"):
        precision.resolve("int8", "cpu")


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve("auto", "cuda") == "fp32"


def test_autocast_context_per_precision():
    with precision.autocast("bf16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), precision.autocast("fp32", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")  # fp32 enters nothing: a caller's autocast stays in force


def test_translator_resolves_auto_and_warns_once_for_emulated_bf16(cpu_bf16):
    model = nn.Sequential(nn.Linear(2, 2))
    cpu_bf16(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Translator(model, Tok()).precision == "bf16"
        assert Translator(model, Tok(), precision="bf16").precision == "bf16"
    assert not caught  # native: nothing to warn about
    cpu_bf16(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = Translator(model, Tok())
        assert tr.precision == "fp32" and tr.model[0].weight.dtype == torch.float32
        for _ in range(3):
            assert Translator(model, Tok(), precision="bf16").precision == "bf16"  # still allowed
    assert [str(w.message) for w in caught] == [
        "this CPU has no native bf16 kernels, so precision=bf16 is emulated and many times slower than fp32: "
        "use precision=auto (fp32 here)"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task"), n_train=100, n_valid=8)


def _train(tmp_path, task, capsys, setting: str):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run, train=f"max_steps: 4, valid_every: 2{setting}")
    capsys.readouterr()
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return run, capsys.readouterr().err


def test_training_records_the_resolved_precision(tmp_path, task, capsys, cpu_bf16):
    cpu_bf16(False)
    run, err = _train(tmp_path, task, capsys, "")
    assert "precision fp32 (train.precision=auto)" in err and "emulated" not in err
    rows = [json.loads(line) for line in (run / "train.log.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in rows if r["event"] == "valid"] == ["fp32", "fp32"]
    assert json.loads((run / "env.json").read_text())["precision"] == "fp32"
    assert "precision: auto" in (run / "config.yaml").read_text()  # the choice is kept; it resolves per machine


def test_training_with_emulated_bf16_warns_once(tmp_path, task, capsys, cpu_bf16):
    cpu_bf16(False)
    run, err = _train(tmp_path, task, capsys, ", precision: bf16")
    assert err.count("no native bf16 kernels") == 1, err  # not again at validation's BLEU decoding
    assert "train.precision=bf16 is emulated" in err
    assert json.loads((run / "train.log.jsonl").read_text().splitlines()[-1])["precision"] == "bf16"


def test_x86_bf16_is_native_only_with_avx512_bf16_or_amx(monkeypatch):
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # true on any AVX-512 CPU
    for bf16, amx, lacks in ((False, False, True), (True, False, False), (False, True, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert precision.cpu_lacks_native(torch.bfloat16) is lacks
