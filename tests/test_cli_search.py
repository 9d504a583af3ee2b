"""`seqed translate` decoding options end to end through the real CLI: an ensemble of checkpoints
(-c A -c B), sampling (--sampling, --temperature, --seed, --nbest), --print-alignment, and their errors."""

import contextlib
import io
import re
import types

import pytest

from seqed.cli import main
from test_end_to_end import make_task
from test_ensemble import write_checkpoint


def seqed(*args):
    """`seqed ARGS` in this process (what `python -m seqed` runs), without a process start-up per call."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

RNN = ["model.encoder={type: rnn, hidden: 16, layers: 1, embed_dim: 8}", "model.decoder.type=rnn",
       "model.decoder.hidden=16", "model.decoder.layers=1", "model.decoder.embed_dim=8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Untrained tiny checkpoints (decoding options do not need a good model; training is slow)."""
    tmp = tmp_path_factory.mktemp("cli_search")
    (tmp / "data").mkdir()
    make_task(tmp / "data", n_train=10, n_test=12)
    return {"tmp": tmp,
            "transformer": write_checkpoint(tmp / "transformer.pt", 60, 0),
            "rnn": write_checkpoint(tmp / "rnn.pt", 60, 1, *RNN, "model.decoder.attention=bahdanau", base=()),
            "fixed": write_checkpoint(tmp / "fixed.pt", 60, 2, *RNN, "model.decoder.attention=none", base=()),
            "other_vocab": write_checkpoint(tmp / "other_vocab.pt", 50, 3)}


def translate(runs, *args, ok=True):
    proc = seqed("translate", "-i", str(runs["tmp"] / "data" / "test.src"), "--device", "cpu", "--max-len-b", "2",
                 *args)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ensemble_of_checkpoints(runs):
    single = translate(runs, "-c", runs["transformer"], "--beam", "3").stdout
    assert translate(runs, "-c", runs["transformer"], "-c", runs["transformer"], "--beam", "3").stdout == single
    mixed = translate(runs, "-c", runs["transformer"], "-c", runs["rnn"], "--beam", "3").stdout
    assert len(mixed.splitlines()) == len(single.splitlines())
    proc = translate(runs, "-c", runs["transformer"], "-c", runs["other_vocab"], ok=False)
    assert proc.returncode == 2
    assert "cannot ensemble" in proc.stderr and "other_vocab" in proc.stderr and "vocabularies differ" in proc.stderr


def test_sampling(runs):
    greedy = translate(runs, "-c", runs["rnn"], "--beam", "1").stdout
    assert translate(runs, "-c", runs["rnn"], "--sampling", "topk=1").stdout == greedy
    args = ["-c", runs["rnn"], "--sampling", "topp=0.9", "--temperature", "1.5", "--seed", "3", "--nbest", "4"]
    a, b = translate(runs, *args).stdout, translate(runs, *args).stdout
    assert a == b
    lines = a.splitlines()
    assert len(lines) == 4 * 12 and all(len(line.split("\t")) == 3 for line in lines)
    assert [int(line.split("\t")[0]) for line in lines] == [i for i in range(12) for _ in range(4)]
    for bad, message in ((["--sampling", "nucleus"], "topk=K"), (["--temperature", "0.5"], "sampling")):
        proc = translate(runs, "-c", runs["rnn"], *bad, ok=False)
        assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_print_alignment(runs, arch):
    plain = translate(runs, "-c", runs[arch], "--beam", "2").stdout.splitlines()
    out = translate(runs, "-c", runs[arch], "--beam", "2", "--print-alignment").stdout.splitlines()
    sources = (runs["tmp"] / "data" / "test.src").read_text().splitlines()
    assert len(out) == len(plain) == len(sources)
    for line, text in zip(out, plain):
        hyp, sep, alignment = line.partition(" ||| ")
        assert sep and hyp == text
        pairs = [tuple(map(int, p.split("-"))) for p in alignment.split()]
        assert all(re.fullmatch(r"\d+-\d+", p) for p in alignment.split())
        assert [j for _, j in pairs] == list(range(len(pairs)))
    proc = translate(runs, "-c", runs["fixed"], "--print-alignment", ok=False)
    assert proc.returncode == 2 and "no attention" in proc.stderr
