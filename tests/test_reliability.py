"""Issue 6, in process: bad corpora, configs and checkpoints end in one `seqed: error: ...` line (exit 2,
no traceback, no run directory left behind); translation keeps line alignment; non-finite losses and
out-of-memory batches are skipped and counted; a full disk keeps the previous checkpoint.

`seqed.cli.main` is called directly (what `python -m seqed` runs) to save process start-ups; the
signal, kill and pipe cases, which need a real process, are in test_reliability_signals.py.
"""

import json
import os

import pytest
import torch
import yaml

import seqed.update
from seqed.checkpoint import load_checkpoint
from seqed.cli import main
from seqed.runlog import read_records
from seqed.model import EncoderDecoder
from tiny_runs import load_state, write_config, write_task


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def cli(capsys, *args):
    """Run `seqed ARGS` in this process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def fails(capsys, *args, match: str):
    rc, out, err = cli(capsys, *args)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("seqed: error: "), err
    assert match in lines[-1], lines[-1]
    assert "Traceback" not in err
    return lines[-1]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def trained(task, tmp_path_factory):
    """A run directory trained for 20 steps (checkpoints at 10 and 20)."""
    root = tmp_path_factory.mktemp("trained")
    run = root / "run"
    cfg = write_config(root / "cfg.yaml", task, run, train="max_steps: 20")
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return cfg, run


# ---------------------------------------------------------------------------------------------
# corpus files


def test_corpus_errors_name_the_file(capsys, task, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run)
    fails(capsys, "train", cfg, f"data.train.src={tmp_path}/nope.en", match=f"no such file: {tmp_path}/nope.en")

    short = tmp_path / "short.tgt"
    short.write_text("".join((task / "train.tgt").read_text().splitlines(keepends=True)[:250]))
    msg = fails(capsys, "train", cfg, f"data.train.tgt={short}", match="not aligned")
    assert "300 lines" in msg and "250" in msg and str(task / "train.src") in msg and str(short) in msg

    empty = tmp_path / "empty.src"
    empty.write_text("")
    fails(capsys, "train", cfg, f"data.train.src={empty}", match=f"{empty} is empty")

    latin1 = tmp_path / "latin1.src"
    lines = (task / "train.src").read_text().splitlines()
    lines[6] = "a b caf\xe9 d"
    latin1.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    fails(capsys, "train", cfg, f"data.train.src={latin1}", match=f"{latin1}:7: not valid UTF-8 (byte 0xe9")
    assert not run.exists()  # a data error leaves no run directory


def test_empty_lines_are_skipped_and_counted_or_refused_with_strict(capsys, task, tmp_path):
    src = (task / "train.src").read_text().splitlines()
    tgt = (task / "train.tgt").read_text().splitlines()
    src[3], tgt[10], src[20], tgt[20] = "", "   ", "", ""
    (tmp_path / "e.src").write_text("\n".join(src) + "\n")
    (tmp_path / "e.tgt").write_text("\n".join(tgt) + "\n")
    cfg = write_config(tmp_path / "c.yaml", task, tmp_path / "run", train="max_steps: 2, valid_every: 2")
    over = [f"data.train.src={tmp_path}/e.src", f"data.train.tgt={tmp_path}/e.tgt"]
    rc, _, err = cli(capsys, "train", cfg, *over, "--no-progress")
    assert rc == 0, err
    assert "kept 297 of 300 pairs" in err and "dropped 3 empty" in err
    fails(capsys, "train", cfg, *over, "out_dir=" + str(tmp_path / "strict"), "data.strict=true",
          match=f"{tmp_path}/e.src:4: empty sentence (3 pairs with an empty side in data.train)")


def test_crlf_and_overlong_lines_in_training(capsys, task, tmp_path):
    src = (task / "train.src").read_text().splitlines()
    tgt = (task / "train.tgt").read_text().splitlines()
    src[5] = tgt[5] = " ".join(["a"] * 40)  # 40 pieces or more: over data.max_len=20
    (tmp_path / "crlf.src").write_bytes("".join(s + "\r\n" for s in src).encode())
    (tmp_path / "crlf.tgt").write_bytes("".join(s + "\r\n" for s in tgt).encode())
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run, train="max_steps: 2, valid_every: 2")
    rc, _, err = cli(capsys, "train", cfg, f"data.train.src={tmp_path}/crlf.src", f"data.train.tgt={tmp_path}/crlf.tgt",
                     "--no-progress")
    assert rc == 0, err
    assert "kept 299 of 300 pairs" in err and "1 too long" in err
    from seqed.tokenizer import Tokenizer

    tok = Tokenizer.load(run / "tokenizer")
    pieces = [tok._src.id_to_piece(i) for i in range(tok.src_vocab_size)]
    assert not any("\r" in p for p in pieces)  # CR never reached the tokenizer


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("override, match", [
    ("train.max_tokenz=100", "unknown config key 'train.max_tokenz'. Did you mean 'max_tokens'?"),
    ("train.max_steps=lots", "train.max_steps must be an integer, got 'lots'"),
    ("train.valid_bleu=3", "train.valid_bleu must be true or false"),
    ("search.beam=0", "search.beam must be positive, got 0"),
    ("model.encoder.layers=-1", "model.encoder.layers must be positive, got -1"),
    ("train.max_tokens=10", "train.max_tokens=10 is smaller than one sentence of data.max_len=20"),
    ("model.encoder.heads=3", "model.encoder.hidden=32 must be divisible by model.encoder.heads=3"),
    ('model.decoder={"type":"rnn","hidden":32} model.bottleneck=code', "set model.decoder.attention=none"),
    ("model.decoder.type=rnn", "model.decoder.ffn, model.decoder.heads do not apply to model.decoder.type=rnn"),
    ("model.decoder.typo=1", "unknown config key 'model.decoder.typo'. Did you mean 'type'?"),
])
def test_bad_config_is_rejected_before_anything_starts(capsys, task, tmp_path, override, match):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run)
    msg = fails(capsys, "train", cfg, *override.split(), match=match)
    assert str(cfg) in msg  # names the config file
    assert not run.exists()


# ---------------------------------------------------------------------------------------------
# checkpoints


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_bad_checkpoints_are_refused(capsys, trained, tmp_path, monkeypatch):
    _, run = trained
    text = tmp_path / "in.txt"
    text.write_text("a b c\n")
    good = run / "checkpoint_last.pt"
    translate = ["translate", "--device", "cpu", "-i", text, "-c"]
    fails(capsys, *translate, tmp_path / "nope.pt", match=f"checkpoint not found: {tmp_path}/nope.pt")
    fails(capsys, *translate, tmp_path, match=f"no checkpoint_best.pt or checkpoint_last.pt in directory {tmp_path}")

    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    fails(capsys, *translate, tmp_path / "cut.pt", match="truncated or corrupted")
    flipped = bytearray(data)
    flipped[len(data) // 3: len(data) // 3 + 64] = bytes(64)
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    fails(capsys, *translate, tmp_path / "flipped.pt", match=f"{tmp_path}/flipped.pt")

    # A stranger's checkpoint that runs code when unpickled: refused, the payload never runs.
    monkeypatch.chdir(tmp_path)
    state = load_state(good)
    state["payload"] = Evil()
    torch.save(state, tmp_path / "evil.pt")
    fails(capsys, *translate, tmp_path / "evil.pt", match="refused to load")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()

    # Weights that do not fit the stored architecture or vocabulary.
    state = load_state(good)
    state["config"]["model"]["encoder"]["ffn"] = 128
    torch.save(state, tmp_path / "arch.pt")
    fails(capsys, *translate, tmp_path / "arch.pt", match="weights do not match the stored architecture/vocabulary")
    from seqed.tokenizer import Tokenizer

    state = load_state(good)
    state["tokenizer"] = Tokenizer.train(["x y z w v u t s r q p o n m"] * 50, None, vocab_size=30,
                                         model_type="bpe").to_dict()
    torch.save(state, tmp_path / "vocab.pt")
    fails(capsys, *translate, tmp_path / "vocab.pt", match="weights do not match")
    state = load_state(good)
    state["tokenizer"]["src_model"] = b"not a sentencepiece model"
    torch.save(state, tmp_path / "tok.pt")
    fails(capsys, *translate, tmp_path / "tok.pt", match="its tokenizer cannot be read")


def test_resume_refuses_a_different_model_and_a_missing_run(capsys, trained, tmp_path):
    cfg, run = trained
    fails(capsys, "train", cfg, "model.encoder.ffn=128", "--resume",
          match="model.encoder.ffn: 64 in the checkpoint, 128 now")
    fails(capsys, "train", cfg, match="already holds a run (checkpoint_last.pt): add --resume")
    fails(capsys, "train", cfg, f"out_dir={tmp_path}/fresh", "--resume", match="--resume: no ")
    # A checkpoint whose weights do not fit its own config (assembled by hand) is refused on resume too.
    other = tmp_path / "other"
    other.mkdir()
    state = load_state(run / "checkpoint_last.pt")
    state["model"] = {k: v[..., :1] if v.dim() else v for k, v in state["model"].items()}
    torch.save(state, other / "checkpoint_last.pt")
    fails(capsys, "train", cfg, f"out_dir={other}", "--resume", match="checkpoint does not match the model")


def test_resuming_a_finished_run_trains_no_more(capsys, trained, tmp_path):
    cfg, run = trained
    before = sorted(p.name for p in run.glob("checkpoint_*.pt"))
    last = (run / "checkpoint_last.pt").read_bytes()
    lines = (run / "train.log.jsonl").read_text().splitlines()
    rc, _, err = cli(capsys, "train", cfg, "--resume", "--no-progress")
    assert rc == 0, err
    assert "already reached train.max_steps=20 at step 20" in err
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == before
    assert (run / "checkpoint_last.pt").read_bytes() == last
    assert (run / "train.log.jsonl").read_text().splitlines() == lines


# ---------------------------------------------------------------------------------------------
# translation I/O


def test_translate_precision_flag(capsys, trained, tmp_path, monkeypatch):
    import seqed.precision

    _, run = trained
    src = tmp_path / "in.txt"
    src.write_text("a b c\n\nd e f g\n")
    monkeypatch.setattr(seqed.precision, "cpu_lacks_native", lambda dtype: True)  # a CPU that emulates bf16
    monkeypatch.setattr(seqed.precision, "_warned", set())
    rc, out, err = cli(capsys, "translate", "-c", run, "--device", "cpu", "--precision", "bf16", "-i", src)
    assert rc == 0, err
    assert err.count("seqed: warning: this CPU has no native bf16 kernels, so precision=bf16 is emulated") == 1
    assert len(out.split("\n")) == 4 and out.split("\n")[1] == ""
    fails(capsys, "translate", "-c", run, "--device", "cpu", "--precision", "fp16", "-i", src,
          match="fp16 needs a CUDA device")


def test_translation_keeps_every_line(capsys, trained, tmp_path):
    _, run = trained
    lines = ["a b c", "", "d e f g", "   ", "hello 🙂 世界 ÿ", "a " * 200, "b c"]
    src = tmp_path / "in.txt"
    src.write_bytes("".join(line + "\r\n" for line in lines).encode())  # CRLF input
    rc, out, err = cli(capsys, "translate", "-c", run, "--device", "cpu", "--beam", "2", "-i", src)
    assert rc == 0, err
    outs = out.split("\n")
    assert outs[-1] == "" and len(outs) - 1 == len(lines)
    assert outs[1] == "" and outs[3] == ""  # empty in, empty out
    assert "\r" not in out
    warnings = [line for line in err.splitlines() if line.startswith("seqed: warning:")]
    assert len(warnings) == 1 and "1 source sentence(s) longer than" in warnings[0] and "truncated" in warnings[0]

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a b c\nd \xff e\n")
    fails(capsys, "translate", "-c", run, "--device", "cpu", "-i", bad, match=f"{bad}:2: not valid UTF-8 (byte 0xff")
    fails(capsys, "translate", "-c", run, "--device", "cpu", "-i", tmp_path / "missing.txt",
          match="input file not found")


# ---------------------------------------------------------------------------------------------
# numerics, out of memory, full disk


def test_nonfinite_loss_is_skipped_and_counted(capsys, task, tmp_path, monkeypatch):
    real = seqed.update.label_smoothed_nll
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:  # the third training micro-batch
                out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(seqed.update, "label_smoothed_nll", poisoned)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run, train="max_steps: 6, valid_every: 3")
    rc, _, err = cli(capsys, "train", cfg, "--no-progress")
    assert rc == 0, err
    assert "step 3: non-finite loss or gradient, update skipped (1 in a row, 1 in all)" in err
    log = read_records(run / "train.log.jsonl")
    assert [r["step"] for r in log] == [3, 6] and [r["skipped_steps"] for r in log] == [1, 1]
    assert all(torch.isfinite(v).all() for v in load_state(run / "checkpoint_last.pt")["model"].values())


def test_divergence_stops_with_likely_causes(capsys, task, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", task, tmp_path / "run")
    msg = fails(capsys, "train", cfg, "train.lr=1e30", "train.warmup=0", "train.clip=0", "train.max_bad_steps=3",
                "--no-progress", match="3 non-finite losses in a row (train.max_bad_steps): training diverged")
    assert "train.lr=1e+30" in msg and "train.precision" in msg


@pytest.mark.parametrize("skip", [True, False])
def test_out_of_memory_is_reported_with_the_batch_shape(capsys, task, tmp_path, monkeypatch, skip):
    real = EncoderDecoder.forward
    calls = {"n": 0}

    def forward(self, src, tgt_in):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, src, tgt_in)

    monkeypatch.setattr(EncoderDecoder, "forward", forward)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run,
                       train=f"max_steps: 4, valid_every: 4, skip_oom: {str(skip).lower()}")
    rc, _, err = cli(capsys, "train", cfg, "--no-progress")
    assert "out of memory at step 2 on a batch of" in err and "Lower train.max_tokens (now 256" in err
    assert "sentences x padded tokens" in err
    if skip:
        assert rc == 0, err
        assert "batch skipped (train.skip_oom)" in err
        log = read_records(run / "train.log.jsonl")[-1]
        assert log["step"] == 4 and log["oom_skipped"] == 1
    else:
        assert rc == 2 and "set train.skip_oom=true" in err and "Traceback" not in err


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")],
                         ids=["oserror", "torch-short-write"])
def test_full_disk_keeps_the_previous_checkpoint(capsys, task, tmp_path, monkeypatch, failure):
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            if hasattr(f, "write"):
                f.write(b"partial")
            raise failure
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run, train="max_steps: 20, valid_every: 5")
    msg = fails(capsys, "train", cfg, "--no-progress", match=f"cannot write checkpoint {run / 'checkpoint_10.pt'}: ")
    assert "No space left on device" in msg and "--resume" in msg
    assert f"The last good checkpoint, {run / 'checkpoint_last.pt'}, is intact" in msg
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoint_last.pt")["train_state"]["step"] == 5
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not (run / "checkpoint_10.pt").exists()


# ---------------------------------------------------------------------------------------------
# records and determinism


def test_run_directory_records_versions_config_and_seed(trained):
    import sacrebleu
    import sentencepiece

    import seqed

    cfg, run = trained
    env = json.loads((run / "env.json").read_text())
    assert env["versions"]["seqed"] == seqed.__version__ and env["versions"]["torch"] == torch.__version__
    assert env["versions"]["sentencepiece"] == sentencepiece.__version__
    assert env["versions"]["sacrebleu"] == sacrebleu.__version__
    assert env["seed"] == 1
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 20 and saved["model"]["encoder"]["hidden"] == 32
    assert load_checkpoint(run / "checkpoint_last.pt")["config"] == saved


def test_same_config_and_seed_give_the_same_model(capsys, task, tmp_path):
    states = []
    for name in ("a", "b"):
        cfg = write_config(tmp_path / f"{name}.yaml", task, tmp_path / name,
                           train="max_steps: 12, valid_every: 6, word_dropout: 0.1")
        rc, _, err = cli(capsys, "train", cfg, "--no-progress")
        assert rc == 0, err
        states.append(load_state(tmp_path / name / "checkpoint_last.pt"))
    a, b = states
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["valid_nll"] for h in a["train_state"]["history"]] == \
        [h["valid_nll"] for h in b["train_state"]["history"]]


def test_device_side_sums_give_the_logged_losses(capsys, task, tmp_path):
    """Training lines every log_every updates; a validation's train_loss is their token-weighted mean."""
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run, train="max_steps: 6, valid_every: 3, log_every: 1")
    rc, _, err = cli(capsys, "train", cfg, "--no-progress")
    assert rc == 0, err
    lines = read_records(run / "train.log.jsonl", event="train")
    valid = read_records(run / "train.log.jsonl")
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6] and [r["step"] for r in valid] == [3, 6]
    assert all(r["train_loss"] > 0 and r["tokens_per_s"] > 0 and r["lr"] > 0 for r in lines)
    ckpt = load_state(run / "checkpoint_last.pt")
    assert [h["train_loss"] for h in ckpt["train_state"]["history"]] == [r["train_loss"] for r in valid]
    for v, window in ((valid[0], lines[:3]), (valid[1], lines[3:])):
        tokens = sum(r["target_tokens"] for r in window)
        assert v["train_loss"] == pytest.approx(sum(r["train_loss"] * r["target_tokens"] for r in window) / tokens,
                                                rel=1e-12)


def test_tensorboard_logging_writes_scalars(capsys, task, tmp_path, monkeypatch):
    """train.tensorboard=true sends the log lines' numbers to a SummaryWriter in out_dir/tensorboard."""
    import sys
    import types

    written = []

    class Writer:
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed", None))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", task, run, train="max_steps: 4, valid_every: 2, log_every: 1")
    rc, _, err = cli(capsys, "train", cfg, "train.tensorboard=true", "--no-progress")
    assert rc == 0, err
    assert written[0] == ("dir", str(run / "tensorboard")) and written[-1] == ("closed", None)
    assert [s for t, s in written if t == "train/train_loss"] == [1, 2, 3, 4]
    assert [s for t, s in written if t == "valid/valid_nll"] == [2, 4]


def test_tensorboard_without_the_package_is_a_clear_error(capsys, task, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    cfg = write_config(tmp_path / "c.yaml", task, tmp_path / "run", train="max_steps: 2")
    fails(capsys, "train", cfg, "train.tensorboard=true", "--no-progress", match="pip install 'seqed[tensorboard]'")
