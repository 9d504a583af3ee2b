"""The benchmark scripts work: argument checks, log parsing, tables, and tiny end-to-end runs.

Nothing here measures speed; it pins what the numbers are computed from (token counts, time
windows, the OpenNMT-py config and piece files) so a benchmark cannot silently measure the wrong thing.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import compare_opennmt  # noqa: E402
import data_scale  # noqa: E402
import decode_throughput  # noqa: E402
import micro_cpu  # noqa: E402
import train_throughput  # noqa: E402

WORDS = "a man woman dog cat runs sits on the red blue green ball street park".split()
MOTS = "un homme femme chien chat court assis sur le rouge bleu vert balle rue parc".split()


def make_multi30k(root: Path, n: int = 240, seed: int = 0) -> Path:
    """A tiny stand-in for $SEQED_DATA/multi30k: aligned word-by-word 'translations'."""
    import random

    rng = random.Random(seed)
    d = root / "multi30k"
    d.mkdir(parents=True)
    for split, count in (("train", n), ("val", 20), ("test2016", 20)):
        en, fr = [], []
        for _ in range(count):
            idx = [rng.randrange(len(WORDS)) for _ in range(rng.randint(3, 9))]
            en.append(" ".join(WORDS[i] for i in idx))
            fr.append(" ".join(MOTS[i] for i in idx))
        (d / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (d / f"{split}.fr").write_text("\n".join(fr) + "\n", encoding="utf-8")
    return root


def run_script(name, *args, env=None):
    return subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True, timeout=300,
                          env=env)


# ---------------------------------------------------------------------------------------------
# benchlib


def test_update_readme_replaces_only_its_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN a -->\nold a\n<!-- END a -->\nmiddle\n"
                      "<!-- BEGIN b -->\nold b\n<!-- END b -->\n")
    benchlib.update_readme("a", "| x |\n| --- |\n| 1 |", readme)
    text = readme.read_text()
    assert "old a" not in text and "| 1 |" in text and "old b" in text and text.startswith("intro\n")
    with pytest.raises(benchlib.BenchError, match="markers"):
        benchlib.update_readme("missing", "x", readme)


def test_md_table_formats_numbers():
    table = benchlib.md_table(["a", "b", "c", "d"], [[2450.4, 0.1234, 12345, 36.456]])
    assert table.splitlines()[2] == "| 2,450 | 0.123 | 12,345 | 36.46 |"


def test_data_dir_honours_seqed_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(benchlib.BenchError, match="nowhere"):
        benchlib.data_dir()  # a SEQED_DATA set on purpose never falls back to other data
    monkeypatch.setenv("SEQED_DATA", str(make_multi30k(tmp_path / "data")))
    assert benchlib.data_dir() == tmp_path / "data"
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("SEQED_DATA", "../data")  # relative: made absolute, so results files say $SEQED_DATA/...
    assert benchlib.data_dir() == tmp_path / "data"
    assert benchlib.portable_paths(str(benchlib.data_dir() / "multi30k" / "test2016.en")) == "$SEQED_DATA/multi30k/test2016.en"


def test_readme_has_a_section_per_script():
    text = (BENCH / "README.md").read_text(encoding="utf-8")
    for section in ("train_throughput", "decode_throughput", "compare_opennmt", "micro_cpu", "gpu", "data_scale",
                    "ensemble", "export_ctranslate2", "serve", "cpu_decode"):
        assert f"<!-- BEGIN {section} -->" in text and f"<!-- END {section} -->" in text


# ---------------------------------------------------------------------------------------------
# train_throughput


def test_summary_counts_only_updates_after_warmup():
    records = [{"src": 100, "tgt": 120, "sents": 10, "padded": 250}] * 2 + \
              [{"src": 200, "tgt": 220, "sents": 20, "padded": 500}] * 3
    s = train_throughput._summary(records, 2, t0=10.0, t_end=13.0)
    assert s["timed_steps"] == 3
    assert s["src_tgt_tokens_per_s"] == pytest.approx(3 * 420 / 3.0)
    assert s["tgt_tokens_per_s"] == pytest.approx(220.0)
    assert s["padding_fraction"] == pytest.approx(1 - 420 / 500)
    with pytest.raises(benchlib.BenchError):
        train_throughput._summary(records[:2], 2, 0.0, 1.0)


def test_bad_bare_shape_is_a_clear_error(tmp_path):
    proc = run_script("train_throughput.py", "--bare-shape", "176x16", "--out", str(tmp_path / "x.json"),
                      "--no-readme")
    assert proc.returncode == 2
    assert "train_throughput: error: --bare-shape must look like 176x16x19" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # trains with the Trainer and a bare loop: ~80 s on a loaded 2-core machine
def test_trainer_and_bare_loops_run_on_tiny_data(tmp_path):
    """The real Trainer (timed through its Update) and both bare loops, a few tiny updates."""
    data = make_multi30k(tmp_path / "data")
    out = tmp_path / "tt.json"
    env = dict(benchlib.thread_env(1), SEQED_DATA=str(data))
    proc = run_script("train_throughput.py", "--models", "transformer", "--precisions", "fp32",
                      "--modes", "trainer", "bare_data", "bare_fixed", "--warmup", "1", "--steps", "2",
                      "--max-tokens", "256", "--threads", "1", "--bare-shape", "4x5x6", "--out", str(out),
                      "--no-readme", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    runs = {r["mode"]: r for r in payload["runs"]}
    assert set(runs) == {"trainer", "bare_data", "bare_fixed"}
    for r in runs.values():
        assert r["timed_steps"] == 2 and r["torch_threads"] == 1
        assert r["src_tgt_tokens_per_s"] > r["tgt_tokens_per_s"] > 0
        assert 0.0 <= r["padding_fraction"] < 1.0 and r["peak_memory_mb"] > 0
    # bare_data replays exactly the trainer's batches (same tokenizer seed, sampler seed, epoch).
    t, b = runs["trainer"], runs["bare_data"]
    assert (t["src_tokens"], t["tgt_tokens"], t["sentences"]) == (b["src_tokens"], b["tgt_tokens"], b["sentences"])
    assert runs["bare_fixed"]["padding_fraction"] == 0.0
    assert runs["bare_fixed"]["tokens_per_step"] == 4 * (5 + 6)
    assert payload["environment"]["versions"]["torch"] == str(torch.__version__)
    assert "| transformer | fp32 | trainer |" in train_throughput.table(payload)


def test_rnn_trainer_measurement(tmp_path):
    """The attention-RNN config builds and trains through the Trainer (in this process, to stay fast)."""
    data = make_multi30k(tmp_path / "data")
    spec = dict(data=str(data), warmup=1, steps=1, max_tokens=256, threads=torch.get_num_threads(), device="cpu",
                bare_shape=[4, 5, 6], vocab_size=8000, model="rnn", precision="bf16", mode="trainer")
    r = train_throughput.child(spec)
    assert r["timed_steps"] == 1 and r["src_tokens"] > 0 and len(r["tokenizer_sha256"]) == 64


# ---------------------------------------------------------------------------------------------
# decode_throughput


def tiny_loaded(tmp_path):
    from seqed.config import load_config
    from seqed.loading import LoadedModel
    from seqed.model import build_model
    from seqed.tokenizer import Tokenizer

    data = make_multi30k(tmp_path / "data")
    src = (data / "multi30k" / "train.en").read_text().splitlines()
    tgt = (data / "multi30k" / "train.fr").read_text().splitlines()
    tok = Tokenizer.train(src, tgt, vocab_size=60, model_type="bpe")
    cfg = load_config(None, ["model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.ffn=32",
                             "model.decoder.ffn=32", "model.encoder.layers=1", "model.decoder.layers=1"])
    torch.manual_seed(0)
    model = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size).eval()
    return LoadedModel(model=model, tokenizer=tok, config=cfg, device=torch.device("cpu"), step=0), data


def test_decode_measure_reports_rates_and_bleu(tmp_path):
    loaded, data = tiny_loaded(tmp_path)
    src = (data / "multi30k" / "test2016.en").read_text().splitlines()
    ref = (data / "multi30k" / "test2016.fr").read_text().splitlines()
    r = decode_throughput.measure(loaded, src, ref, beam=5, batch_size=8, precision="bf16", warmup=2)
    assert r["sentences"] == len(src) == len(r["output"])
    assert r["sentences_per_s"] == pytest.approx(len(src) / r["seconds"], rel=1e-2)
    assert r["output_tokens_per_s"] * r["seconds"] == pytest.approx(r["output_tokens"], rel=1e-2)
    assert 0.0 <= r["bleu"] <= 100.0 and "nrefs:1" in r["bleu_signature"]


def test_decode_flags_bleu_changes_across_batch_sizes():
    runs = [dict(search="beam5", precision="fp32", batch_size=1, bleu=30.0),
            dict(search="beam5", precision="fp32", batch_size=64, bleu=30.05),
            dict(search="greedy", precision="fp32", batch_size=1, bleu=28.0),
            dict(search="greedy", precision="fp32", batch_size=64, bleu=27.5)]
    flagged = decode_throughput.flags(runs)
    assert len(flagged) == 1 and flagged[0].startswith("greedy fp32")


# ---------------------------------------------------------------------------------------------
# compare_opennmt

ONMT_LOG = """\
[2026-11-27 07:42:20,315 INFO] Weighted corpora loaded so far:
[2026-11-27 07:42:42,898 INFO] Step  1/    5; acc: 0.0; ppl: 8155.8; xent: 9.0; lr: 0.00004; sents:     215; bsz: 2365/3711/215;  60/ 94 tok/s;     40 sec;
[2026-11-27 07:42:49,500 INFO] Step  2/    5; acc: 0.0; ppl: 7903.3; xent: 9.0; lr: 0.00006; sents:     273; bsz: 2730/3822/273; 410/574 tok/s;     46 sec;
[2026-11-27 07:42:55,000 INFO] Step  3/    5; acc: 0.0; ppl: 7484.4; xent: 8.9; lr: 0.00008; sents:     227; bsz: 2951/3859/227; 536/701 tok/s;     52 sec;
[2026-11-27 07:43:01,000 INFO] Step 12/  100; acc: 0.7; ppl: 7012.2; xent: 8.9; lr: 0.00010; sents:     256; bsz: 2816/3840/256; 574/783 tok/s;     57 sec;
[2026-11-27 07:43:10,548 INFO] Saving checkpoint /tmp/x/model_step_5.pt
"""


def test_onmt_log_parsing_and_window():
    records = compare_opennmt.parse_onmt_log(ONMT_LOG)
    assert [r["step"] for r in records] == [1, 2, 3, 12]
    assert records[0] | {"time": 0} == {"step": 1, "time": 0, "sents": 215, "src": 2365, "tgt": 3711}
    s = compare_opennmt.summarize_onmt(records, warmup=2)
    # timed: steps 3 and 12, from the end of step 2 (07:42:49.500) to the end of step 12 (07:43:01.000)
    assert s["seconds"] == pytest.approx(11.5)
    assert s["tokens_per_s"] == pytest.approx((2951 + 3859 + 2816 + 3840) / 11.5)
    assert s["sentences_per_s"] == pytest.approx((227 + 256) / 11.5)
    with pytest.raises(benchlib.BenchError, match="warm-up"):
        compare_opennmt.summarize_onmt(records, warmup=4)


def test_onmt_config_matches_seqed_settings(tmp_path):
    cfg = compare_opennmt.onmt_train_config(tmp_path, tmp_path / "run", steps=70, max_tokens=4096, lr=2e-3,
                                            warmup=100, save_every=10)
    d, w = cfg["hidden_size"], cfg["warmup_steps"]
    peak = cfg["learning_rate"] * d ** -0.5 * min(w ** -0.5, w * w ** -1.5)  # OpenNMT-py's noam at step = warmup
    assert peak == pytest.approx(2e-3)
    assert (cfg["enc_layers"], cfg["dec_layers"], cfg["heads"], cfg["transformer_ff"]) == (3, 3, 4, 1024)
    assert cfg["share_embeddings"] and cfg["share_decoder_embeddings"] and cfg["num_workers"] == 0
    assert cfg["batch_type"] == "tokens" and cfg["batch_size"] == 4096 and cfg["report_every"] == 1


def test_pieces_are_seqeds_tokens(tmp_path):
    import sentencepiece as spm

    from seqed.data.batching import ParallelData

    loaded, data = tiny_loaded(tmp_path)
    tok = loaded.tokenizer
    lines_en = (data / "multi30k" / "train.en").read_text().splitlines()[:30]
    lines_fr = (data / "multi30k" / "train.fr").read_text().splitlines()[:30]
    train = ParallelData(tok.encode_src(lines_en), tok.encode_tgt(lines_fr))
    info = compare_opennmt.write_pieces(tok, train, tmp_path / "pieces", data)
    sp = spm.SentencePieceProcessor(model_proto=tok.to_dict()["src_model"])
    written = (tmp_path / "pieces" / "train.en").read_text(encoding="utf-8").splitlines()
    assert [sp.piece_to_id(line.split()) for line in written] == train.src_ids
    vocab = [line.split("\t")[0] for line in (tmp_path / "pieces" / "vocab.txt").read_text().splitlines()]
    assert len(vocab) == len(set(vocab)) == tok.src_vocab_size - 4  # OpenNMT-py adds its own 4 specials
    assert not {"<pad>", "<unk>", "<s>", "</s>"} & set(vocab)
    assert info["tokenizer_sha256"] == compare_opennmt.tokenizer_sha256(tok)
    test_lines = (tmp_path / "pieces" / "test2016.en").read_text().splitlines()
    assert len(test_lines) == 20


def test_compare_says_what_a_decoding_comparison_needs():
    proc = run_script("compare_opennmt.py", "--seqed-checkpoint", "a.pt", "--no-readme")
    assert proc.returncode == 2
    assert "compare_opennmt: error: give --onmt-checkpoint, or --onmt-minutes" in proc.stderr
    proc = run_script("compare_opennmt.py", "--onmt-checkpoint", "b.pt", "--no-readme")
    assert proc.returncode == 2
    assert "compare_opennmt: error: --onmt-checkpoint needs --seqed-checkpoint" in proc.stderr


# ---------------------------------------------------------------------------------------------
# micro_cpu


def test_fused_loss_equals_the_textbook_formula():
    from seqed.losses import label_smoothed_nll

    logits = torch.randn(50, 37)
    target = torch.randint(1, 37, (50,))
    target[::7] = 0
    ref = micro_cpu.smoothed_reference(logits, target, 0.1, 0)
    assert torch.allclose(label_smoothed_nll(logits, target, smoothing=0.1).loss, ref, rtol=1e-5)


def test_micro_interleaved_and_table(tmp_path):
    t = micro_cpu.interleaved({"a": lambda: None, "b": lambda: math.sqrt(2.0)}, rounds=2, calls=3)
    assert set(t) == {"a", "b"} and all(v >= 0 for v in t.values())
    out = tmp_path / "m.json"
    proc = run_script("micro_cpu.py", "--only", "adamw", "--rounds", "1", "--calls", "1", "--threads", "1",
                      "--out", str(out), "--no-readme")
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(out.read_text())
    (run,) = payload["runs"]
    assert set(run["times_s"]) == {"for-loop", "foreach", "fused"}
    assert "7,5" in run["case"]  # ~7.5M parameters: the model the claim is about
    assert "`seqed/optim.py`" in micro_cpu.table(payload)


JOEY_LOG = """\
2026-11-27 07:56:08,390 - INFO - joeynmt.training - EPOCH 1
2026-11-27 07:56:13,517 - INFO - joeynmt.training - Epoch   1, Step:        1, Batch Loss:     7.823312, Batch Acc: 0.000000, Tokens per Sec:      341, Lr: 0.000020
2026-11-27 07:56:17,517 - INFO - joeynmt.training - Epoch   1, Step:        2, Batch Loss:     7.348799, Batch Acc: 0.049041, Tokens per Sec:      400, Lr: 0.000040
2026-11-27 07:56:18,517 - INFO - joeynmt.training - Epoch   1, Step:        3, Batch Loss:     7.335740, Batch Acc: 0.053857, Tokens per Sec:     1000, Lr: 0.000060
2026-11-27 07:56:21,517 - INFO - joeynmt.training - Epoch   1, Step:        4, Batch Loss:     7.323721, Batch Acc: 0.052065, Tokens per Sec:      200, Lr: 0.000080
"""


def test_joey_log_rates_are_weighted_by_step_time(tmp_path):
    steps = compare_opennmt.parse_joey_log(JOEY_LOG)
    assert [s[0] for s in steps] == [1, 2, 3, 4] and steps[2][2] == 1000
    s = compare_opennmt.summarize_joey(steps, warmup=2)
    # step 3 took 1 s at 1000 tok/s, step 4 took 3 s at 200 tok/s: 1600 tokens in 4 s
    assert s["seconds"] == pytest.approx(4.0) and s["tgt_tokens_per_s"] == pytest.approx(400.0)
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    (pieces / "vocab.txt").write_text("\u2581a\t10\n.\t5\n")
    cfg = compare_opennmt.joey_train_config(pieces, tmp_path / "j" / "run", steps=5, max_tokens=4096, lr=2e-3,
                                            warmup=100)
    assert Path(cfg["data"]["src"]["voc_file"]).read_text() == "\u2581a\n.\n"
    assert cfg["model"]["encoder"]["layer_norm"] == "pre" and cfg["training"]["batch_size"] == 4096


def test_compare_decode_table_has_a_row_and_a_ratio_per_precision():
    env = {"environment": {"date": "t", "versions": {"seqed": "0.1.0", "torch": "2.13.0"}, "git": {"commit": "abc"},
                           "cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "loadavg": [0, 0, 0]},
           "onmt_versions": {"onmt": "3.5.1", "torch": "2.13.0", "torch_threads": 2}}

    def rates(sps, bleu):
        return {"sentences_per_s": sps, "wall_sentences_per_s": sps / 2, "bleu": bleu, "chrf": 70.0, "checkpoint": "c"}

    decode = dict(env, seqed={"fp32": rates(100.0, 53.2), "bf16": rates(200.0, 53.1)}, onmt=rates(50.0, 51.3),
                  beam=5, batch_size=64, limit=0, ratio_sentences_per_s={"fp32": 2.0, "bf16": 4.0},
                  ratio_wall={"fp32": 2.0, "bf16": 4.0}, bleu_difference={"fp32": 1.9, "bf16": 1.8})
    text = compare_opennmt.table({"decode": decode})
    assert "| seqed fp32 | 100" in text and "| seqed bf16 | 200" in text and "| OpenNMT-py fp32 | 50" in text
    assert "seqed fp32: **2.00x**" in text and "seqed bf16: **4.00x**" in text and "BLEU +1.80" in text


def test_gpu_benchmark_runs_its_three_parts_on_cpu(tmp_path, monkeypatch):
    """`gpu.py --smoke --device cpu`: the step comparison, the Trainer run and the decoding all run."""
    import gpu

    data = make_multi30k(tmp_path / "data", n=120)
    monkeypatch.setenv("SEQED_DATA", str(data))
    out = tmp_path / "gpu.json"
    assert gpu.main(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["step"]) == {"seqed_eager", "plain_eager"}
    # Same shapes, same work: the two models have the same number of parameters.
    assert payload["step"]["seqed_eager"]["parameters"] == payload["step"]["plain_eager"]["parameters"]
    assert payload["trainer"]["updates"] > 0 and 0 < payload["trainer"]["valid_share"] < 1
    assert {(d["precision"], d["beam"], d["batch_size"]) for d in payload["decode"]} == {
        (p, b, n) for p in ("fp32", "bf16") for b in (1, 5) for n in (256, 1)}


def test_gpu_benchmark_refuses_to_report_cpu_numbers(capsys):
    import gpu

    assert gpu.main(["--device", "cpu"]) == 2
    assert "--smoke" in capsys.readouterr().err


def test_data_scale_table_and_projection():
    def run(n, rate):
        fb = {"seconds": 3.0, "after_import_s": 0.5, "rss_mb": 250.0}
        return {"pairs": n, "preprocess": {"pairs": n, "kept": n, "ids": 20 * n, "pairs_per_s": rate,
                                           "seconds": n / rate, "main_rss_mb": 300.0, "worker_rss_mb": 200.0,
                                           "disk_bytes": 60 * n, "loadavg_1min_at_start": 1.0},
                "train_1proc": {"seconds_to_exit_after_1_update": 9.0, "rss_mb": 900.0},
                "first_batch_1proc": [fb], "first_batch_2proc": [fb, fb]}

    payload = {"runs": [run(1000, 30000.0), run(4000, 32000.0)], "environment": {}}
    payload["runs"][1]["train_2proc"] = {"seconds_to_exit_after_1_update": 12.34, "rss_mb": [700.0, 650.0]}
    payload["runs"][1]["train_1proc"]["seconds_to_first_update"] = 6.54
    payload["projection"] = p = data_scale.projection(payload["runs"])
    assert p["measured_pieces_per_side"] == 10.0  # from the largest run
    assert p["ids_gb"] == round(36e6 * 2 * 32 * 2 / 1e9, 2)
    assert math.isclose(p["preprocess_hours_at_measured_rate"], round(36e6 / (32000 * 10 / 32) / 3600, 2))
    text = data_scale.table(payload)
    assert text.count("\n| 1,000 |") == 1 and "0.50 / 0.50" in text and "WMT14" in text
    assert "| 12.30 | 700 / 650 |" in text and "| not run |" in text  # a row from before train_2proc existed
    assert "| 6.50 | not measured |" in text  # runs from before the first-update time was read


# ---------------------------------------------------------------------------------------------
# ensemble

def test_ensemble_benchmark_rows_and_table(tmp_path, one_thread):
    """Each member alone and the ensemble, beam and greedy: six rows; one checkpoint is refused."""
    import ensemble
    from test_ensemble import SENTENCES, write_checkpoint

    a, b = (write_checkpoint(tmp_path / f"{n}.pt", 60, seed) for n, seed in (("a", 0), ("b", 1)))
    src, ref = tmp_path / "src.en", tmp_path / "ref.fr"
    src.write_text("\n".join(SENTENCES) + "\n")
    ref.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "ens.json"
    args = ["--src", str(src), "--ref", str(ref), "--beam", "2", "--threads", "1", "--out", str(out), "--no-readme"]
    assert ensemble.main(["-c", a, "-c", b, *args]) == 0
    payload = json.loads(out.read_text())
    assert [(r["models"], r["search"]) for r in payload["rows"]] == [
        (m, s) for m in ("model 1", "model 2", "model 1 + model 2") for s in ("beam 2", "greedy")]
    assert all(r["sentences_per_s"] > 0 and r["length_ratio"] >= 0 for r in payload["rows"])
    assert [m["step"] for m in payload["config"]["members"]] == [0, 0]
    assert "| model 1 + model 2 | beam 2 |" in ensemble.table(payload)
    assert ensemble.main(["-c", a, *args]) == 2


def test_batch_composition_batches_fit_and_arguments():
    import batch_composition as bc

    items = [[1] * n for n in (3, 9, 1, 5, 7)]
    sorted_batches = bc.batches(items, "sorted", 2, seed=0)
    assert [[len(x) for x in b] for b in sorted_batches] == [[9, 7], [5, 3], [1]]  # longest first
    arrival = [x for b in bc.batches(list(range(5)), "arrival", 2, seed=0) for x in b]
    assert sorted(arrival) == list(range(5)) and arrival == [x for b in bc.batches(list(range(5)), "arrival", 2, seed=0) for x in b]
    assert bc.fit([(100, 3.0), (300, 5.0), (200, 4.0)]) == {"per_step_ms": 10.0, "fixed_s": 2.0}
    assert bc.parse_composition("arrival:32") == ("arrival", 32)
    for bad in ("random:32", "sorted:0", "sorted"):
        with pytest.raises(benchlib.BenchError, match="want ORDER:SIZE"):
            bc.parse_composition(bad)
    assert bc.main(["-c", "runs/does-not-exist", "--src", __file__, "--ref", __file__, "--limit", "2"]) == 2


def test_cpu_decode_target_takes_a_higher_bleu_as_equal_quality():
    import cpu_decode

    def engines(seqed_int8_bleu):
        rate = {"seqed_fp32": 90.0, "seqed_int8": 120.0, "ctranslate2_int8": 100.0}
        bleu = {"seqed_fp32": 55.6, "seqed_int8": seqed_int8_bleu, "ctranslate2_int8": 55.2}
        return {e: {"sentences_per_s": rate[e], "bleu": bleu[e]} for e in rate}

    better = cpu_decode.targets(engines(55.7), ["avx2"], None)["fp32_only"]
    assert better["engine"] == "seqed_int8" and better["speed_vs_ctranslate2_int8"] == 1.2 and better["met"]
    lower = cpu_decode.targets(engines(55.4), ["avx2"], None)["fp32_only"]  # below fp32, above CTranslate2
    assert lower["engine"] == "seqed_int8" and lower["bleu_minus_ctranslate2_int8"] == 0.2 and lower["met"]
    fp32_only = {e: r for e, r in engines(55.7).items() if e != "seqed_int8"}
    fp32_only["ctranslate2_int8"]["bleu"] = 56.0  # seqed fp32 is 0.4 below CTranslate2: no equal quality
    assert not cpu_decode.targets(fp32_only, ["avx2"], None)["fp32_only"]["met"]
    assert "native_bf16" not in cpu_decode.targets(engines(55.7), ["avx2"], None)  # no native bf16 on this CPU
