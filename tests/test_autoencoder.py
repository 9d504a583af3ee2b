"""Autoencoders end to end: every bottleneck trains through the real CLI on random letter strings, and
`seqed encode / reconstruct / sample / interpolate / evaluate` work on the trained checkpoints.

The three autoencoders train side by side once per module (with a tiny translation model for `encode`):

* memory: the decoder attends over every encoder state: copying is easy, so >= 95% exact.
* code: a tied GRU hourglass (`tie_encoder_decoder`, unidirectional encoder, code-only decoder): the
  sentence must pass through one 128-d vector. A decoder that ignored it would get about 10% of the
  tokens right (1 in 12 letters, plus EOS when it guessed the length); we ask for 45%, and check that
  decoding another sentence's code falls back to that level.
* variational: a Transformer VAE, KL weight annealed linearly over the whole run, free bits against
  posterior collapse; we ask for 20% token accuracy (twice the code-blind level) and check the logged KL.
"""

import json

import numpy as np
import pytest
import torch

from ae_tasks import ALPHABET, letters, seqed, train_all, write_config, write_corpus
from seqed.autoencoder import decode_latents, encode_sentences
from seqed.cli import main
from seqed.evaluate import active_units, reconstruction_report
from seqed.loading import load_model
from seqed.runlog import read_records
from seqed.vocab import EOS_ID

STEPS = 400
KL_STEPS = 400

JOBS = {
    "memory": [],
    # whole sections: the YAML's Transformer keys (heads, ffn) do not apply to an RNN
    "code": ["model.bottleneck=code", "model.tie_encoder_decoder=true",
             "model.encoder={type: rnn, cell: gru, bidirectional: false, reverse_source: true, layers: 1, "
             "hidden: 128, embed_dim: 64, dropout: 0.0}",
             "model.decoder={type: rnn, cell: gru, attention: none, layers: 1, hidden: 128, embed_dim: 64, "
             "dropout: 0.0}", "train.max_tokens=512"],
    "vae": ["model.bottleneck=variational", "model.code_dim=16", "model.free_bits=0.5", "train.kl_anneal=linear",
            f"train.kl_anneal_steps={KL_STEPS}", "train.valid_every=100"],
}



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("autoencoders")
    data = write_corpus(root / "data", "letters")
    config = write_config(root / "letters.yaml", data, root / "unused")
    jobs = {name: [config, f"out_dir={root / name}", f"train.max_steps={STEPS}", *extra]
            for name, extra in JOBS.items()}
    # A translation model (letters -> reversed letters, separate vocabularies): `encode` must work on it.
    rows = letters(300, seed=1)
    (root / "rev.src").write_text("".join(r + "\n" for r in rows))
    (root / "rev.tgt").write_text("".join(" ".join(reversed(r.split())) + "\n" for r in rows))
    jobs["translation"] = [config, f"out_dir={root / 'translation'}", "data.monolingual=false",
                           f"data.train={{format: text, src: {root}/rev.src, tgt: {root}/rev.tgt}}", "data.valid=null",
                           "tokenizer.joint=false", "model.share_embeddings=false",
                           "model.encoder={type: rnn, layers: 1, hidden: 16, dropout: 0.0}",
                           "model.decoder={type: rnn, layers: 1, hidden: 16, dropout: 0.0}",
                           "train.max_steps=10", "train.valid_every=10"]
    return root, data, train_all(jobs, root)


def run_dir(runs, name: str):
    root, _, failures = runs
    assert not failures[name], failures[name]
    return root / name


def held_out(runs) -> list[str]:
    return (runs[1] / "test.txt").read_text().splitlines()


def evaluate_json(runs, name: str, *args) -> dict:
    out = runs[0] / f"{name}.eval.json"
    proc = seqed("evaluate", "-c", run_dir(runs, name), "-i", runs[1] / "test.txt", "--beam", "1", "--device", "cpu",
                 "--json", out, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report == json.loads(proc.stdout)
    return report


def codes_one_by_one(loaded, lines: list[str]) -> np.ndarray:
    """model.encode(src).code for each sentence alone (batch of one, no padding)."""
    rows = []
    with torch.inference_mode():
        for ids in loaded.tokenizer.encode_src(lines):
            src = torch.tensor([ids + [EOS_ID]])  # (1, S)
            rows.append(loaded.model.encode(src).code[0].numpy())
    return np.stack(rows)


# ---------------------------------------------------------------------------------------------
# the bottlenecks


@pytest.mark.slow
def test_memory_bottleneck_copies(runs):
    report = evaluate_json(runs, "memory")
    assert report["n"] == 200 and report["exact_match"] >= 95, report
    assert report["bleu"] >= 95 and report["token_accuracy"] >= 97
    assert sum(row["n"] for row in report["by_length"]) == 200
    assert [row["lengths"] for row in report["by_length"]] == ["1-5", "6-10"]  # 2-6 letters: 1 piece each
    assert "variational" not in report and "noisy_input" not in report


@pytest.mark.slow
def test_code_bottleneck_carries_the_sentence(runs):
    loaded = load_model(str(run_dir(runs, "code")), device="cpu")
    lines = held_out(runs)
    refs = loaded.tokenizer.encode_tgt(lines)

    def token_accuracy(z):
        hyps = [h.tokens for h in decode_latents(loaded.model, z, max_len=12)]
        return reconstruction_report(hyps, refs, loaded.tokenizer.decode_tgt(hyps), lines).token_accuracy

    z = torch.from_numpy(encode_sentences(loaded.model, loaded.tokenizer, lines))  # (N, 128)
    own = token_accuracy(z)
    swapped = token_accuracy(z.roll(1, dims=0))  # every sentence decoded from its neighbour's code
    assert own >= 45, f"token accuracy from its own code {own}%"
    assert swapped <= 20 and own >= 2.5 * swapped, (own, swapped)


@pytest.mark.slow
def test_tied_autoencoder_shares_its_cell_after_loading(runs):
    model = load_model(str(run_dir(runs, "code")), device="cpu").model
    for name, param in model.encoder.rnn.named_parameters():
        assert getattr(model.decoder.rnn, name) is param, name
    # The decoder's cuDNN-style flat weight list points at the shared tensors too.
    assert all(any(w is p for p in model.encoder.rnn.parameters()) for w in model.decoder.rnn._flat_weights)


@pytest.mark.slow
def test_variational_kl_is_logged_positive_and_annealed(runs):
    log = read_records(run_dir(runs, "vae") / "train.log.jsonl")
    assert [r["step"] for r in log] == [100, 200, 300, 400]
    for r in log:
        assert r["valid_kl"] > 0.1, r  # free bits keep the posterior away from the prior
        assert r["kl_weight"] == pytest.approx(min(1.0, r["step"] / KL_STEPS)), r
        assert 0 <= r["valid_active_units"] <= 16, r
    report = evaluate_json(runs, "vae")
    v = report["variational"]
    assert v["kl"] > 0.1 and v["latent_dim"] == 16 and v["active_units"] >= 1 and v["n"] == 200
    assert log[-1]["valid_active_units"] >= 1
    assert v["elbo"] == pytest.approx(-(v["nll"] + v["kl"]))
    assert report["token_accuracy"] >= 20, report


@pytest.mark.slow
def test_memory_log_has_no_kl(runs):
    log = read_records(run_dir(runs, "memory") / "train.log.jsonl")
    assert log and all("valid_kl" not in r and "kl_weight" not in r and "valid_active_units" not in r for r in log)


def test_active_units_count_dimensions_whose_mean_varies():
    torch.manual_seed(0)
    mu = torch.zeros(50, 5)
    mu[:, 1] = torch.randn(50)  # variance ~1
    mu[:, 3] = 0.5 * torch.randn(50)  # ~0.25
    mu[:, 4] = 0.01 * torch.randn(50)  # ~1e-4: inactive (Burda et al.'s threshold is 0.01)
    assert active_units(mu) == 2
    assert active_units(mu, threshold=1e-6) == 3
    assert active_units(mu[:1]) == 0


# ---------------------------------------------------------------------------------------------
# seqed encode


@pytest.mark.slow
@pytest.mark.parametrize("name", ["memory", "code", "vae"])
def test_encode_matches_the_models_code_in_input_order(runs, name, tmp_path):
    lines = held_out(runs)[:50][::-1]  # not in length order
    (tmp_path / "in.txt").write_text("".join(x + "\n" for x in lines))
    out = tmp_path / "codes.npy"
    if name == "memory":  # once through a real process; the others through the same entry point in-process
        proc = seqed("encode", "-c", run_dir(runs, name), "-i", tmp_path / "in.txt", "-o", out, "--batch-size", "7",
                     "--device", "cpu")
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert main(["encode", "-c", str(run_dir(runs, name)), "-i", str(tmp_path / "in.txt"), "-o", str(out),
                     "--batch-size", "7", "--device", "cpu"]) == 0
    codes = np.load(out)
    loaded = load_model(str(run_dir(runs, name)), device="cpu")
    expected = codes_one_by_one(loaded, lines)
    width = {"memory": 32, "code": 128, "vae": 16}[name]
    assert codes.shape == (50, width) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, expected, atol=1e-5)
    # Deterministic: the VAE's code is the posterior mean, never a sample.
    again = encode_sentences(loaded.model, loaded.tokenizer, lines, batch_size=7)
    np.testing.assert_array_equal(again, encode_sentences(loaded.model, loaded.tokenizer, lines, batch_size=7))
    np.testing.assert_allclose(again, codes, atol=1e-5)
    # Batch composition changes nothing but float rounding (padding is masked).
    np.testing.assert_allclose(encode_sentences(loaded.model, loaded.tokenizer, lines, batch_size=50), codes,
                               atol=1e-5)
    if name == "vae":
        with torch.inference_mode():
            src = torch.tensor([loaded.tokenizer.encode_src([lines[0]])[0] + [EOS_ID]])
            mu, _ = loaded.model.bottleneck.posterior(loaded.model.encoder(src).code)
        np.testing.assert_allclose(codes[0], mu[0].numpy(), atol=1e-5)


@pytest.mark.slow
def test_encode_works_on_a_translation_checkpoint(runs, tmp_path):
    lines = letters(20, seed=5)
    (tmp_path / "in.txt").write_text("".join(x + "\n" for x in lines))
    proc = seqed("encode", "-c", run_dir(runs, "translation"), "-i", tmp_path / "in.txt", "-o", tmp_path / "c.npy",
                 "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 20 codes of size 32" in proc.stderr  # bidirectional GRU/LSTM: 2 x 16
    loaded = load_model(str(run_dir(runs, "translation")), device="cpu")
    assert loaded.model.bottleneck is None
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), codes_one_by_one(loaded, lines), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# seqed reconstruct / sample / interpolate


@pytest.mark.slow
def test_reconstruct_copies_and_completes(runs, tmp_path, capsys):
    lines = held_out(runs)[:40]
    stdin = "".join(x + "\n" for x in lines)
    proc = seqed("reconstruct", "-c", run_dir(runs, "memory"), "--beam", "1", "--device", "cpu", input=stdin)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert len(out) == 40 and sum(a == b for a, b in zip(out, lines)) >= 38

    proc = seqed("reconstruct", "-c", run_dir(runs, "memory"), "--beam", "2", "--device", "cpu",
                 "--noise", "mask=0.3", "--seed", "3", input=stdin)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs = [line.split("\t") for line in proc.stdout.splitlines()]
    assert len(pairs) == 40 and all(len(p) == 2 for p in pairs)
    assert sum("⁇" in corrupted for corrupted, _ in pairs) >= 10  # the mask shows as SentencePiece's unknown
    untouched = [rebuilt == clean for (corrupted, rebuilt), clean in zip(pairs, lines) if "⁇" not in corrupted]
    assert untouched and sum(untouched) >= len(untouched) - 1  # sentences the noise missed are copied
    (tmp_path / "in.txt").write_text(stdin)
    # The same seed corrupts the same way (in-process run of the same command).
    assert main(["reconstruct", "-c", str(run_dir(runs, "memory")), "--beam", "2", "--device", "cpu",
                 "--noise", "mask=0.3", "--seed", "3", "-i", str(tmp_path / "in.txt")]) == 0
    assert capsys.readouterr().out == proc.stdout
    assert main(["reconstruct", "-c", str(run_dir(runs, "memory")), "--beam", "2", "--device", "cpu",
                 "--noise", "mask=0.3", "--seed", "4", "-i", str(tmp_path / "in.txt")]) == 0
    assert capsys.readouterr().out != proc.stdout


@pytest.mark.slow
def test_sample_from_the_prior(runs, capsys):
    proc = seqed("sample", "-c", run_dir(runs, "vae"), "-n", "6", "--seed", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = proc.stdout.splitlines()
    assert len(samples) == 6 and all(set(s.split()) <= set(ALPHABET) for s in samples)
    assert sum(bool(s) for s in samples) >= 5
    assert main(["sample", "-c", str(run_dir(runs, "vae")), "-n", "6", "--seed", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == proc.stdout  # seeded


@pytest.mark.slow
def test_interpolate_ends_at_the_reconstructions(runs, tmp_path, capsys):
    a, b = "a b c d e", "l k j"
    proc = seqed("interpolate", "-c", run_dir(runs, "vae"), a, b, "--steps", "5", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [t for t, _ in rows] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    # The end points are the posterior means of A and B: decoding them is greedy reconstruction.
    (tmp_path / "ab.txt").write_text(f"{a}\n{b}\n")
    assert main(["reconstruct", "-c", str(run_dir(runs, "vae")), "--beam", "1", "--device", "cpu",
                 "-i", str(tmp_path / "ab.txt")]) == 0
    assert capsys.readouterr().out.splitlines() == [rows[0][1], rows[-1][1]]
    assert main(["interpolate", "-c", str(run_dir(runs, "vae")), a, b, "--steps", "3", "--slerp",
                 "--device", "cpu"]) == 0
    slerp = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [s[1] for s in slerp[::2]] == [rows[0][1], rows[-1][1]]


@pytest.mark.parametrize("argv, message", [
    (["sample", "-c", "{memory}", "-n", "2"], "needs a variational model"),
    (["interpolate", "-c", "{memory}", "a b", "c d"], "needs a latent space"),
    (["interpolate", "-c", "{vae}", "a b", "c d", "--steps", "1"], "--steps must be at least 2"),
    (["evaluate", "-c", "{memory}", "-i", "{test}", "--fill"], "--fill"),
    (["evaluate", "-c", "{memory}", "-i", "{test}", "--noise", "drop=0.1", "--fill"], "--fill"),
    (["evaluate", "-c", "{memory}", "-i", "{test}", "--noise", "substitute=0.1", "--fill"], "masking only"),
    (["evaluate", "-c", "{memory}", "-i", "{test}", "--noise", "mask=2"], "must be in [0, 1]"),
    (["reconstruct", "-c", "{memory}", "--noise", "blur=0.1"], "unknown key 'blur'"),
])
@pytest.mark.slow
def test_user_mistakes_are_one_line_errors(runs, argv, message, capsys):
    names = {"memory": run_dir(runs, "memory"), "vae": run_dir(runs, "vae"), "test": runs[1] / "test.txt"}
    argv = [a.format(**names) for a in argv]
    assert main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqed: error:") and message in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# the tools, as units (no training)


def test_reconstruction_report_counts_tokens_with_eos_and_buckets_by_length():
    refs = [[5, 6, 7], [5, 6, 7, 8, 9, 10, 11], [9]]
    hyps = [[5, 6, 7], [5, 6, 0, 8], [9, 9]]
    r = reconstruction_report(hyps, refs, ["a b c", "x", "z z"], ["a b c", "y", "z"], buckets=(5,))
    # correct positions (EOS counted): 4 of 4, 3 of 8 (5 6 _ 8, EOS misplaced), 1 of 2
    assert r.token_accuracy == pytest.approx(round(100 * 8 / 14, 2))
    assert r.exact_match == pytest.approx(33.33) and r.n == 3
    assert [(b["lengths"], b["n"]) for b in r.by_length] == [("1-5", 2), (">5", 1)]
    assert r.by_length[1]["token_accuracy"] == pytest.approx(37.5)
    with pytest.raises(ValueError, match="no sentences"):
        reconstruction_report([], [], [], [])


def test_corrupt_ids_is_seeded_and_keeps_masks_aligned():
    from seqed.autoencoder import corrupt_ids, keeps_positions
    from seqed.evaluate import completion_accuracy
    from seqed.noise import parse_noise

    ids = [[4 + (i * 7 + j) % 20 for j in range(3 + i % 6)] for i in range(300)]
    noise = parse_noise("mask=0.3")
    noisy, masked = corrupt_ids(ids, noise, vocab_size=30, seed=3)
    assert (noisy, masked) == corrupt_ids(ids, noise, vocab_size=30, seed=3)
    assert noisy != corrupt_ids(ids, noise, vocab_size=30, seed=4)[0]
    assert [len(x) for x in noisy] == [len(x) for x in ids] and keeps_positions(noise)
    flat = [(t, m, c) for n, f, r in zip(noisy, masked, ids) for t, m, c in zip(n, f, r)]
    assert all((t == 1) == m for t, m, _ in flat) and all(t == c for t, m, c in flat if not m)
    assert abs(sum(m for _, m, _ in flat) / len(flat) - 0.3) < 0.03
    assert completion_accuracy(noisy, ids, masked) == 0.0  # copying the input completes nothing
    assert completion_accuracy(ids, ids, masked) == 100.0
    assert completion_accuracy(ids, ids, [[False] * len(x) for x in ids]) is None
    noisy, _ = corrupt_ids(ids, parse_noise("drop=0.5"), vocab_size=30, seed=3)
    assert sum(map(len, noisy)) < 0.6 * sum(map(len, ids)) and not keeps_positions(parse_noise("drop=0.5"))


def test_fill_masked_predicts_only_masked_positions():
    from seqed.autoencoder import fill_masked

    torch.manual_seed(0)
    cfg_model = build_tiny_model()
    noisy = [[5, 1, 7, 1], [9, 10], [1]]
    masked = [[False, True, False, True], [False, False], [True]]
    out = fill_masked(cfg_model, noisy, masked, batch_size=2)
    assert [len(x) for x in out] == [4, 2, 1]
    for n, m, o in zip(noisy, masked, out):
        for t, f, p in zip(n, m, o):
            assert p == t if not f else p >= 4  # kept, or a word (never a special or the mask)


def build_tiny_model():
    from seqed.config import load_config
    from seqed.model import build_model

    cfg = load_config(None, ["model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.ffn=16",
                             "model.decoder.ffn=16", "model.encoder.layers=1", "model.decoder.layers=1",
                             "model.encoder.heads=2", "model.decoder.heads=2"])
    return build_model(cfg, 20, 20).eval()


def test_interpolation_path_ends_at_both_codes():
    from seqed.autoencoder import interpolation_path

    za, zb = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 3.0, 2.0])
    path = interpolation_path(za, zb, 5)
    assert path.shape == (5, 3) and torch.equal(path[0], za) and torch.allclose(path[-1], zb)
    assert torch.allclose(path[2], (za + zb) / 2)
    sph = interpolation_path(za, zb, 4, spherical=True)
    assert torch.allclose(sph[0], za) and torch.allclose(sph[-1], zb, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        interpolation_path(za, zb, 1)


@pytest.mark.parametrize("command", [["encode", "-o", "codes.npy"], ["reconstruct", "--beam", "1"],
                                     ["evaluate", "--beam", "1"]])
@pytest.mark.slow
def test_autoencoder_commands_read_input_through_the_utf8_check(runs, tmp_path, capsys, command):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("a man\ncafé au lait\n".encode("latin-1"))
    args = [command[0], "-c", str(run_dir(runs, "memory")), "--device", "cpu", "-i", str(bad), *command[1:]]
    if command[0] == "encode":
        args[args.index("codes.npy")] = str(tmp_path / "codes.npy")
    assert main(args) != 0
    err = capsys.readouterr().err
    assert f"{bad}:2: not valid UTF-8" in err
    assert main([command[0], "-c", str(run_dir(runs, "memory")), "-i", str(tmp_path / "missing.txt"),
                 *command[1:]]) != 0
    assert "input file not found" in capsys.readouterr().err
