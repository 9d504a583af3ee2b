"""Train tiny models through the real CLI on a synthetic reversal task, then decode and check them."""

import random
import subprocess
import sys

import pytest

from seqed.runlog import read_records

ALPHABET = "a b c d e f g h i j k l".split()


def make_task(tmp_path, n_train=3000, n_test=60, seed=0):
    rng = random.Random(seed)

    def sample():
        return [rng.choice(ALPHABET) for _ in range(rng.randint(3, 8))]

    seen, rows = set(), []
    while len(rows) < n_train + n_test:
        s = tuple(sample())
        if s not in seen:
            seen.add(s)
            rows.append(s)
    for name, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        (tmp_path / f"{name}.src").write_text("".join(" ".join(s) + "\n" for s in part))
        (tmp_path / f"{name}.tgt").write_text("".join(" ".join(reversed(s)) + "\n" for s in part))
    return tmp_path


def seqed(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "seqed", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


MODELS = {
    "transformer": ["model.encoder.type=transformer", "model.decoder.type=transformer",
                    "model.encoder.hidden=64", "model.decoder.hidden=64", "model.encoder.ffn=128",
                    "model.decoder.ffn=128", "model.encoder.layers=2", "model.decoder.layers=2",
                    "model.encoder.dropout=0.0", "model.decoder.dropout=0.0", "train.lr=3e-3", "train.warmup=100"],
    "rnn_attention": ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.hidden=64",
                      "model.decoder.hidden=64", "model.encoder.embed_dim=32", "model.decoder.embed_dim=32",
                      "model.encoder.layers=1", "model.decoder.layers=1", "model.decoder.attention=bahdanau",
                      "model.encoder.dropout=0.0", "model.decoder.dropout=0.0", "train.lr=5e-3",
                      "train.warmup=50", "train.schedule=constant"],
}


@pytest.mark.slow  # trains through subprocesses
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_train_and_decode_reversal(tmp_path, arch):
    data = make_task(tmp_path)
    run = tmp_path / "run"
    cfg = tmp_path / "task.yaml"
    cfg.write_text(
        f"out_dir: {run}\n"
        f"data:\n  train: {{format: text, src: {data}/train.src, tgt: {data}/train.tgt}}\n"
        f"  valid: {{format: text, src: {data}/test.src, tgt: {data}/test.tgt}}\n  max_len: 20\n"
        "tokenizer: {vocab_size: 20, type: bpe}\n"
        # fp32: bf16 on a CPU with native kernels makes these 64-wide models slower (1.8x for the RNN), not faster
        "train: {max_tokens: 1024, label_smoothing: 0.0, valid_every: 300, max_steps: 900, log_every: 100, "
        "precision: fp32}\n")
    proc = seqed("train", str(cfg), *MODELS[arch], "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_records(run / "train.log.jsonl")
    assert log[-1]["step"] == 900 and "valid_bleu" in log[-1]
    out = tmp_path / "hyp.txt"
    proc = seqed("translate", "-c", str(run), "--beam", "1", "-i", str(data / "test.src"), "-o", str(out),
                 "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    hyps = out.read_text().splitlines()
    refs = (data / "test.tgt").read_text().splitlines()
    assert len(hyps) == len(refs)
    exact = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
    assert exact >= 0.95, f"{arch}: exact match {exact:.2%}\n" + "\n".join(hyps[:5])
    # Beam search decodes the same model at least as well.
    proc = seqed("translate", "-c", str(run / "checkpoint_best.pt"), "--beam", "4", "-i", str(data / "test.src"))
    beam_exact = sum(h == r for h, r in zip(proc.stdout.splitlines(), refs)) / len(refs)
    assert beam_exact >= 0.95
    # Standard input in a subprocess (no -i) reads the same lines and gives the same output.
    piped = seqed("translate", "-c", str(run / "checkpoint_best.pt"), "--beam", "4",
                  input=(data / "test.src").read_text())
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert piped.stdout == proc.stdout


def test_every_command_module_registers_its_commands():
    """The CLI package imports its command modules statically: each one's commands are in the parser."""
    from seqed.cli.main import COMMAND_MODULES, build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {m.__name__.rsplit(".", 1)[1] for m in COMMAND_MODULES} == {
        "train", "translate", "checkpoints", "export", "autoencoder", "prepare", "preprocess", "plot", "serve"}
    assert {"train", "translate", "score", "average", "encode", "reconstruct", "sample", "interpolate",
            "evaluate", "prepare", "preprocess", "plot", "export", "serve"} <= set(sub.choices)


def test_every_option_of_every_command_has_help():
    """`seqed CMD --help` explains each option and argument (sample and interpolate once had none)."""
    import argparse

    from seqed.cli.main import build_parser

    def silent(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from silent(sub, f"{name} {sub_name}".strip())
            elif not action.help:
                yield f"seqed {name} {'/'.join(action.option_strings) or action.dest}"

    assert list(silent(build_parser(), "")) == []


def test_score_reads_through_the_utf8_check(tmp_path, capsys):
    from seqed.cli import main

    ref = tmp_path / "ref.txt"
    ref.write_text("a cat\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_bytes(b"a \xe9cat\n")
    assert main(["score", "-r", str(ref), "--hyp", str(hyp)]) == 2
    assert f"{hyp}:1: not valid UTF-8" in capsys.readouterr().err
