"""CTranslate2 export (seqed.export) and its translator (seqed.translator_ct2).

The weight mapping is checked where it is exact, per token: CTranslate2's `score_batch` against
seqed's teacher-forced log-probabilities, for several architectures with random weights. Search is
checked on a tiny trained reversal model: greedy and beam outputs token-identical to seqed's fp32.
"""

import json
import math
import random
import sys

import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")

from seqed.checkpoint import save_atomic  # noqa: E402
from seqed.config import load_config, to_dict  # noqa: E402
from seqed.export import ExportError, export_ctranslate2, vocabularies  # noqa: E402
from seqed.loading import load_model  # noqa: E402
from seqed.model import build_model  # noqa: E402
from seqed.tokenizer import Tokenizer  # noqa: E402
from seqed.train import train  # noqa: E402
from seqed.translator import Translator  # noqa: E402
from seqed.translator_ct2 import CTranslate2Translator  # noqa: E402
from seqed.vocab import BOS_ID, EOS_ID  # noqa: E402
from tiny_runs import ALPHABET, write_config, write_task  # noqa: E402

TINY = ["model.encoder.hidden=32", "model.encoder.ffn=64", "model.encoder.layers=2", "model.encoder.heads=2",
        "model.decoder.hidden=32", "model.decoder.ffn=64", "model.decoder.layers=3", "model.decoder.heads=4",
        "model.max_positions=64", "data.max_len=20", "tokenizer.vocab_size=30", "tokenizer.type=bpe"]
RNN_ENCODER = "model.encoder={type: rnn, hidden: 32, layers: 1}"  # whole sections: no Transformer-only keys
RNN_DECODER = "model.decoder={type: rnn, hidden: 32, layers: 1}"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _texts(n=200, seed=0):
    rng = random.Random(seed)
    src = [" ".join(rng.choice(ALPHABET) for _ in range(rng.randint(3, 8))) for _ in range(n)]
    return src, [" ".join(reversed(s.split())) for s in src]


def _random_checkpoint(path, overrides):
    """A checkpoint of an untrained model (weights perturbed so no table stays at its init)."""
    torch.manual_seed(0)
    cfg = load_config(None, TINY + list(overrides))
    src, tgt = _texts()
    tok = Tokenizer.train(src, tgt, vocab_size=30, model_type="bpe", joint=cfg.tokenizer.joint)
    model = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_atomic({"model": model.state_dict(), "config": to_dict(cfg), "tokenizer": tok.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1+1-layer reversal model trained for 200 steps (~10 s): short outputs that end with EOS."""
    root = tmp_path_factory.mktemp("ct2")
    task = write_task(root)
    cfg = write_config(root / "cfg.yaml", task, root / "run", train="max_steps: 200, valid_every: 200, lr: 0.005")
    train(load_config(cfg), progress=False)
    out = export_ctranslate2(root / "run", root / "ct2")
    sources = (task / "valid.src").read_text().splitlines()
    return root / "run" / "checkpoint_best.pt", out, sources


VARIANTS = {
    "defaults": [],
    "learned positions, untied output": ["model.encoder.positions=learned", "model.decoder.positions=learned",
                                         "model.tie_output=false"],
    "separate vocabularies, projected embeddings": [
        "tokenizer.joint=false", "model.share_embeddings=false", "model.tie_output=false",
        "model.encoder.embed_dim=16", "model.decoder.embed_dim=24"],
    "wider encoder, tied layers": ["model.encoder.hidden=48", "model.share_embeddings=false",
                                   "model.encoder.heads=4", "model.encoder.layers=3"],
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_exported_model_gives_seqeds_log_probabilities(tmp_path, overrides):
    ckpt = _random_checkpoint(tmp_path / "ckpt.pt", overrides)
    out = export_ctranslate2(ckpt, tmp_path / "ct2")
    loaded = load_model(str(ckpt), device="cpu")
    src_vocab, tgt_vocab = vocabularies(loaded.tokenizer)
    src_text, tgt_text = _texts(6, seed=1)
    srcs, tgts = loaded.tokenizer.encode_src(src_text), loaded.tokenizer.encode_tgt(tgt_text)
    ct2 = ctranslate2.Translator(str(out), compute_type="float32", intra_threads=1)
    scored = ct2.score_batch([[src_vocab[i] for i in s] for s in srcs], [[tgt_vocab[i] for i in t] for t in tgts])
    for s, t, result in zip(srcs, tgts, scored):
        src = torch.tensor([s + [EOS_ID]])  # (1, S)
        tgt_in, tgt_out = torch.tensor([[BOS_ID] + t]), torch.tensor(t + [EOS_ID])  # (1, T), (T,)
        with torch.no_grad():
            lprobs = torch.log_softmax(loaded.model(src, tgt_in).logits[0], dim=-1)  # (T, V)
        expected = lprobs[torch.arange(len(tgt_out)), tgt_out]  # (T,)
        assert torch.allclose(torch.tensor(result.log_probs), expected, atol=1e-4), (result.log_probs, expected)


def _below_limit(hyps, sources, tokenizer, a=1.2, b=10):
    """Indices of sentences whose seqed hypotheses all end before the length limit."""
    ids = tokenizer.encode_src(sources)
    return [i for i, (h, s) in enumerate(zip(hyps, ids)) if all(len(x.tokens) < math.floor((len(s) + 1) * a + b)
                                                                 for x in h)]


@pytest.mark.parametrize("beam,nbest", [(1, 1), (5, 1), (4, 3)])
def test_greedy_and_beam_outputs_match_seqed(trained, beam, nbest):
    ckpt, out, sources = trained
    loaded = load_model(str(ckpt), device="cpu")
    ours = Translator(loaded.model, loaded.tokenizer, beam_size=beam, nbest=nbest, length_penalty=0.0,
                      precision="fp32").translate(sources)  # CTranslate2 runs float32
    theirs = CTranslate2Translator(out, compute_type="float32", beam_size=beam, nbest=nbest, length_penalty=0.0,
                                   threads=1).translate(sources)
    keep = range(len(sources)) if beam == 1 else _below_limit(ours, sources, loaded.tokenizer)
    assert len(keep) >= len(sources) * 3 // 4  # the comparison covers most sentences
    for i in keep:
        assert ours[i][0].tokens == theirs[i][0].tokens, sources[i]  # nbest > 1: only the best is guaranteed
        assert ours[i][0].score == pytest.approx(theirs[i][0].score, abs=1e-4)
        assert len(theirs[i]) == nbest
        assert [h.score for h in theirs[i]] == sorted((h.score for h in theirs[i]), reverse=True)


def test_length_penalty_ranks_by_gnmt(trained):
    ckpt, out, sources = trained
    alpha = 1.0
    theirs = CTranslate2Translator(out, compute_type="float32", beam_size=4, nbest=4, length_penalty=alpha,
                                   threads=1).translate(sources)
    for hyps in theirs:
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert h.score == pytest.approx(h.log_prob / ((5 + len(h.tokens) + 1) / 6) ** alpha)
    # not guaranteed (the candidate sets may differ, see seqed.translator_ct2), but true of this model
    loaded = load_model(str(ckpt), device="cpu")
    ours = Translator(loaded.model, loaded.tokenizer, beam_size=4, length_penalty=alpha,
                      precision="fp32").translate(sources)
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(ours, theirs))
    assert same >= len(sources) * 3 // 4


@pytest.mark.parametrize("beam,alpha", [(1, 0.0), (4, 1.0), (4, 0.0)])
def test_batches_of_mixed_limits_search_like_one_sentence_at_a_time(trained, beam, alpha):
    """A batch runs under its largest length limit; sentences whose search reached their own limit are
    searched again under it (alpha 0 beam search batches by limit instead): the outputs are those of
    searching each sentence alone. Tight limits (0.6 |src| + 1) make many searches reach them."""
    _, out, sources = trained
    options = dict(compute_type="float32", beam_size=beam, nbest=1, length_penalty=alpha, max_len_a=0.6,
                   max_len_b=1, threads=1)
    alone = CTranslate2Translator(out, batch_size=1, **options)
    batched = CTranslate2Translator(out, batch_size=64, **options)
    calls = []
    search = batched._search
    batched._search = lambda source, limit, settings: calls.append((len(source), limit)) or search(source, limit,
                                                                                                   settings)
    expected, got = alone.translate(sources), batched.translate(sources)
    for e, g, text in zip(expected, got, sources):
        assert e[0].tokens == g[0].tokens, text
        assert e[0].score == pytest.approx(g[0].score, abs=1e-5)
    limits = [alone._limit(len(x) + 1, alone.settings) for x in alone.tokenizer.encode_src(sources)]
    assert len(set(limits)) > 1  # the batches mix limits
    assert sum(len(h[0].tokens) == limit for h, limit in zip(got, limits)) >= len(sources) // 10
    batches = -(-len(sources) // 64)
    if beam == 1 or alpha:
        assert len(calls) > batches and calls[0][1] == max(limits)  # searched again under own limits
    else:
        assert len(calls) == len(set(limits)) and all(n <= 64 for n, _ in calls)


def test_translate_text_interface_and_quantization(trained):
    _, out, _ = trained
    lines = ["a b c", "", "d e f g", "   ", "a " * 80]
    with pytest.warns(UserWarning, match="1 source sentence"):
        got = CTranslate2Translator(out, compute_type="int8", beam_size=3, nbest=2, max_src_len=40,
                                    threads=1).translate_text(lines)
    assert len(got) == len(lines)
    assert got[1] == [("", 0.0)] and got[3] == [("", 0.0)]
    assert all(len(n) == 2 and all(isinstance(t, str) for t, _ in n) for i, n in enumerate(got) if i not in (1, 3))
    with pytest.raises(ExportError, match="not supported on this cpu"):
        CTranslate2Translator(out, compute_type="float16")
    with pytest.raises(ValueError, match="nbest"):
        CTranslate2Translator(out, beam_size=2, nbest=3)


@pytest.mark.parametrize("overrides,match", [
    ([RNN_ENCODER, RNN_DECODER], r"the encoder, a RNNEncoder \(model.encoder.type=rnn\)"),
    ([RNN_DECODER], r"the decoder, a RNNDecoder \(model.decoder.type=rnn\)"),
    (["model.bottleneck=variational"], "'variational' bottleneck"),
    (["model.bottleneck=code"], "'code' bottleneck"),
    (["model.encoder.code=token"], "summary token"),
])
def test_unsupported_models_are_refused_clearly(tmp_path, overrides, match):
    ckpt = _random_checkpoint(tmp_path / "ckpt.pt", overrides)
    with pytest.raises(ExportError, match=match) as err:
        export_ctranslate2(ckpt, tmp_path / "ct2")
    assert str(err.value).startswith(f"{ckpt}: ")
    assert not (tmp_path / "ct2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ct2")]  # no temporary directory left


def test_existing_directory_missing_install_and_not_an_export(tmp_path, monkeypatch):
    ckpt = _random_checkpoint(tmp_path / "ckpt.pt", [])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="already exists"):
        export_ctranslate2(ckpt, tmp_path / "out")
    export_ctranslate2(ckpt, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "model.bin").is_file() and not (tmp_path / "out" / "keep.txt").exists()
    with pytest.raises(ExportError, match="not a seqed CTranslate2 export"):
        CTranslate2Translator(tmp_path)
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'seqed\[ctranslate2\]'"):
        export_ctranslate2(ckpt, tmp_path / "other")
    with pytest.raises(ExportError, match=r"pip install 'seqed\[ctranslate2\]'"):
        CTranslate2Translator(tmp_path / "out")


def _benchmark(name, trained, tmp_path):
    """The benchmark script module `name`, and a source and reference file of 8 validation sentences."""
    import importlib
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(bench))
    _, _, sources = trained
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("\n".join(sources[:8]) + "\n")
    ref.write_text("\n".join(" ".join(reversed(s.split())) for s in sources[:8]) + "\n")
    return module, src, ref


def test_benchmark_runs_every_engine(trained, tmp_path):
    benchmark, src, ref = _benchmark("export_ctranslate2", trained, tmp_path)
    ckpt = trained[0]
    out = tmp_path / "bench.json"
    assert benchmark.main(["-c", str(ckpt), "--src", str(src), "--ref", str(ref), "--bf16-limit", "3",
                           "--warmup", "2", "--threads", "1", "--out", str(out), "--no-readme"]) == 0
    engines = json.loads(out.read_text())["engines"]
    assert set(engines) == {"seqed_fp32", "seqed_bf16", "ctranslate2_fp32", "ctranslate2_int8"}
    assert engines["seqed_bf16"]["sentences"] == 3 and engines["ctranslate2_int8"]["sentences"] == 8
    assert all(r["sentences_per_s"] > 0 and 0 <= r["bleu"] <= 100 for r in engines.values())
    assert engines["seqed_fp32"]["same_as_seqed_fp32"] == 1.0
    # --rounds: every engine timed N times (median reported); --baseline: the translator of a git revision
    assert benchmark.main(["-c", str(ckpt), "--src", str(src), "--ref", str(ref), "--engines", "ctranslate2_int8",
                           "--rounds", "2", "--baseline", "HEAD", "--warmup", "0", "--threads", "1",
                           "--out", str(out), "--no-readme"]) == 0
    result = json.loads(out.read_text())
    engines = result["engines"]
    assert set(engines) == {"ctranslate2_int8", "ctranslate2_int8@HEAD"} and result["config"]["rounds"] == 2
    assert all(len(r["round_seconds"]) == 2 and r["seconds"] == pytest.approx(sum(r["round_seconds"]) / 2, abs=2e-3)
               for r in engines.values())
    assert benchmark.main(["-c", str(ckpt), "--src", str(src), "--ref", str(ref), "--baseline", "no-such-rev",
                           "--engines", "ctranslate2_int8", "--out", str(out), "--no-readme"]) == 2


@pytest.mark.slow  # trains through subprocesses
def test_cli_export_and_translate_with_ctranslate2(trained, tmp_path):
    """End to end through `python -m seqed`: export, translate with both engines, clear refusals."""
    import subprocess

    from tiny_runs import child_env, seqed_argv

    ckpt, _, sources = trained
    run = ckpt.parent

    def seqed(*args):
        return subprocess.run(seqed_argv(*args), capture_output=True, text=True, env=child_env(), timeout=300)

    src = tmp_path / "in.txt"
    src.write_text("\n".join(sources[:6] + ["", sources[6]]) + "\n")
    out_dir = tmp_path / "exported"
    done = seqed("export", "--format", "ctranslate2", "-c", run, "-o", out_dir)
    assert done.returncode == 0, done.stderr
    assert (out_dir / "model.bin").is_file() and (out_dir / "seqed_export.json").is_file()

    ours = seqed("translate", "-c", run, "--device", "cpu", "--beam", "1", "-i", src)
    theirs = seqed("translate", "-c", out_dir, "--engine", "ctranslate2", "--quantization", "float32",
                   "--device", "cpu", "--beam", "1", "-i", src)
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    assert theirs.stdout == ours.stdout and theirs.stdout.split("\n")[6] == ""  # greedy: identical lines
    on_the_fly = seqed("translate", "-c", run, "--engine", "ctranslate2", "--quantization", "int8",
                       "--device", "cpu", "--nbest", "2", "-i", src)
    assert on_the_fly.returncode == 0, on_the_fly.stderr
    assert "exporting" in on_the_fly.stderr and len(on_the_fly.stdout.splitlines()) == 2 * 7 + 1  # the empty line: one

    refused = seqed("export", "--format", "ctranslate2", "-c", run, "-o", out_dir)
    assert refused.returncode == 2 and "already exists" in refused.stderr and "Traceback" not in refused.stderr
    int8 = seqed("translate", "-c", run, "--device", "cpu", "--quantization", "int8", "-i", src)  # seqed's own int8
    assert int8.returncode == 0 and len(int8.stdout.splitlines()) == 8, int8.stderr
    refused = seqed("translate", "-c", run, "--quantization", "int16", "-i", src)
    assert refused.returncode == 2 and "--quantization int16 needs --engine ctranslate2" in refused.stderr
    rnn = _random_checkpoint(tmp_path / "rnn.pt", [RNN_ENCODER, RNN_DECODER])
    refused = seqed("export", "--format", "ctranslate2", "-c", rnn, "-o", tmp_path / "rnn_ct2")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("seqed: error: ")
    assert "cannot export the encoder, a RNNEncoder" in refused.stderr


@pytest.mark.slow  # times every engine and starts `seqed translate` in a subprocess
def test_cpu_decode_benchmark_runs_tiny(trained, tmp_path):
    """benchmarks/cpu_decode.py end to end on the tiny model: every engine, search work, targets,
    settings and start-up recorded."""
    cpu_decode, src, ref = _benchmark("cpu_decode", trained, tmp_path)
    ckpt = trained[0]
    out = tmp_path / "cpu.json"
    files = ["--src", str(src), "--ref", str(ref), "--val-src", str(src), "--val-ref", str(ref)]
    assert cpu_decode.main(["--model", str(ckpt), *files, "--limit", "6", "--rounds", "2", "--warmup", "2",
                            "--threads", "1", "--startup-runs", "1", "--isolated-rounds", "1", "--out", str(out),
                            "--no-readme"]) == 0
    result = json.loads(out.read_text())
    engines = result["engines"]
    assert {"seqed_fp32", "seqed_int8", "ctranslate2_int8", "ctranslate2_fp32"} <= set(engines)
    assert all(r["sentences"] == 6 and len(r["round_seconds"]) == 2 and 0 <= r["bleu"] <= 100
               and r["seconds"] == pytest.approx(min(r["round_seconds"]), abs=2e-3)  # the best round
               for r in engines.values())
    seqed_fp32 = engines["seqed_fp32"]
    assert seqed_fp32["decoder_steps"] > 0 and 1 <= seqed_fp32["rows_per_step"] <= 5 * 6
    assert "decoder_steps" not in engines["ctranslate2_int8"]  # not observable inside CTranslate2
    assert "fp32_only" in result["targets"] and "nrefs:1" in seqed_fp32["bleu_signature"]
    assert [(r["batch_size"], r["patience"]) for r in result["settings"]] == [
        (64, None), (128, None), (256, None), (64, 1.0), (64, 2.0)]
    assert result["startup"]["best_seconds"] > 0 and result["config"]["load_seconds"] >= 0
    assert "| seqed_int8 |" in cpu_decode.table(result)
    isolated = result["engines_isolated"]  # each engine timed again in a fresh process of its own
    assert set(isolated) == set(engines) and all(len(r["round_seconds"]) == 1 for r in isolated.values())
    assert all(isolated[e]["bleu"] == engines[e]["bleu"] for e in ("seqed_fp32", "ctranslate2_fp32"))  # same outputs
    assert "fp32_only" in result["targets_isolated"]
    assert "Each engine in a process of its own" in cpu_decode.table(result)


def test_cpu_decode_runs_ctranslate2_before_torch_is_imported(trained, tmp_path):
    """`--openmp own`: the export runs in a child process and CTranslate2 translates once before the
    benchmark's process imports torch (what keeps torch's OpenMP threads from sleeping around every
    kernel once a CTranslate2 translator has run; cpu_decode.py's docstring)."""
    import subprocess
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    out = tmp_path / "ct2"
    code = (f"import sys; sys.path.insert(0, {str(bench)!r}); import cpu_decode\n"
            f"assert cpu_decode.separate_runtimes({str(trained[0])!r}, {str(out)!r}, 1)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import ctranslate2\n"
            f"print(ctranslate2.Translator({str(out)!r}).translate_batch([['a']], max_decoding_length=2)[0].hypotheses)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.bin").is_file() and proc.stdout.startswith("[[")
    cpu_decode = _benchmark("cpu_decode", trained, tmp_path)[0]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="seqed export failed"):  # a broken checkpoint: the child's error
        cpu_decode.separate_runtimes(str(bad), str(tmp_path / "bad_ct2"), 1)
