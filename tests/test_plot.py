"""`seqed plot`: training curves and attention heatmaps written as PNG files, from tiny models trained for
a few steps through the real Trainer; the attention of a reversed-source encoder comes back in reading order."""

import copy
import json
import random

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from seqed import cli  # noqa: E402
from seqed.config import load_config  # noqa: E402
from seqed.loading import load_model  # noqa: E402
from seqed.plot import attention_of  # noqa: E402
from seqed.search import greedy_search  # noqa: E402
from seqed.train import train  # noqa: E402
from seqed.vocab import EOS_ID  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
WORDS = "the a man woman dog cat sees walks with red big small house street".split()
FR = dict(zip(WORDS, "le un homme femme chien chat voit marche avec rouge grand petit maison rue".split()))

TINY = ["tokenizer.vocab_size=60", "tokenizer.type=bpe", "train.max_steps=4", "train.valid_every=2",
        "train.max_tokens=512", "train.log_every=1", "train.warmup=2", "data.max_len=30",
        "model.encoder.layers=1", "model.decoder.layers=1", "search.max_len_b=5"]
MODELS = {
    "rnn_reversed": ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.hidden=16",
                     "model.decoder.hidden=16", "model.encoder.embed_dim=12", "model.decoder.embed_dim=12",
                     "model.encoder.reverse_source=true", "model.decoder.attention=bahdanau"],
    "transformer": ["model.encoder.hidden=16", "model.decoder.hidden=16", "model.encoder.heads=2",
                    "model.decoder.heads=2", "model.encoder.ffn=32", "model.decoder.ffn=32"],
    "rnn_fixed": ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.hidden=16",
                  "model.decoder.hidden=16", "model.encoder.embed_dim=12", "model.decoder.embed_dim=12",
                  "model.decoder.attention=none"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories of three tiny models trained for 4 steps (2 validations each)."""
    root = tmp_path_factory.mktemp("plot_runs")
    rng = random.Random(0)
    for split, n in (("train", 300), ("valid", 12)):
        rows = [[rng.choice(WORDS) for _ in range(rng.randint(2, 6))] for _ in range(n)]
        (root / f"{split}.en").write_text("".join(" ".join(r) + "\n" for r in rows))
        (root / f"{split}.fr").write_text("".join(" ".join(FR[w] for w in r) + "\n" for r in rows))
    data = [f"data.train.src={root}/train.en", f"data.train.tgt={root}/train.fr",
            f"data.valid.src={root}/valid.en", f"data.valid.tgt={root}/valid.fr"]
    torch.manual_seed(0)
    for name, overrides in MODELS.items():
        train(load_config(None, [f"out_dir={root / name}", *data, *TINY, *overrides]), progress=False)
    return root


def seqed(*argv) -> int:
    return cli.main([str(a) for a in argv])


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


@pytest.mark.slow  # the module's `runs` trains three models: the largest setup of the fast tier
def test_plot_curves_writes_a_png(runs, tmp_path, capsys):
    out = tmp_path / "pics" / "curves.png"
    assert seqed("plot", "curves", runs / "rnn_reversed", runs / "transformer", "-o", out) == 0
    assert_png(out)
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > height > 100
    assert seqed("plot", "curves", runs / "transformer" / "train.log.jsonl", "-o", tmp_path / "one.png",
                 "--labels", "tiny transformer") == 0
    assert_png(tmp_path / "one.png")


@pytest.mark.slow  # the module's `runs` trains three models: the largest setup of the fast tier
def test_plot_curves_errors(runs, tmp_path, capsys):
    assert seqed("plot", "curves", tmp_path, "-o", tmp_path / "x.png") == 2
    assert "no training log" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.log.jsonl").write_text(json.dumps({"step": 1, "valid_nll": 2.0}) + "\n{oops\n")
    assert seqed("plot", "curves", bad, "-o", tmp_path / "x.png") == 2
    assert "train.log.jsonl:2" in capsys.readouterr().err
    assert seqed("plot", "curves", runs / "transformer", "-o", tmp_path / "x.png", "--labels", "a,b") == 2
    assert "--labels" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow  # the module's `runs` trains three models: the largest setup of the fast tier
@pytest.mark.parametrize("name", ["rnn_reversed", "transformer"])
def test_plot_attention_writes_a_png(runs, tmp_path, capsys, name):
    out = tmp_path / f"{name}.png"
    assert seqed("plot", "attention", "-c", runs / name, "the man sees a red dog", "-o", out) == 0
    assert_png(out)
    assert capsys.readouterr().out.strip()  # the translation is printed


@pytest.mark.slow  # the module's `runs` trains three models: the largest setup of the fast tier
@pytest.mark.parametrize("name", ["rnn_reversed", "transformer"])
def test_attention_rows_are_distributions_over_the_source(runs, name):
    loaded = load_model(str(runs / name), device="cpu")
    result = attention_of(loaded.model, loaded.tokenizer, "a big cat walks with the woman")
    ids = loaded.tokenizer.encode_src(["a big cat walks with the woman"])[0]
    assert result.src_tokens[-1] == "</s>" and len(result.src_tokens) == len(ids) + 1
    assert result.weights.shape == (len(result.tgt_tokens), len(result.src_tokens))
    assert np.allclose(result.weights.sum(axis=1), 1.0, atol=1e-4)
    assert getattr(loaded.model.decoder, "need_attn", False) is False  # the flag is restored


@pytest.mark.slow  # the module's `runs` trains three models: the largest setup of the fast tier
def test_reversed_source_attention_is_in_reading_order(runs):
    """The reversed encoder's attention equals that of a plain encoder fed the reversed source, flipped."""
    loaded = load_model(str(runs / "rnn_reversed"), device="cpu")
    assert loaded.model.encoder.reverse_source
    sentence = "the small dog walks in the street"
    result = attention_of(loaded.model, loaded.tokenizer, sentence, max_len_a=1.2, max_len_b=10)
    plain = copy.deepcopy(loaded.model)
    plain.encoder.reverse_source = False
    ids = loaded.tokenizer.encode_src([sentence])[0]
    reversed_src = torch.tensor([list(reversed(ids + [EOS_ID]))])  # (1, S + 1)
    hyp = greedy_search(plain, reversed_src, max_len_a=1.2, max_len_b=10)[0][0]
    assert len(result.tgt_tokens) == len(hyp.tokens) + 1
    # column s of the plain run holds reversed_src[s] = source piece S - s: flipped, column j is piece j
    assert np.allclose(result.weights, hyp.attn.numpy()[:, ::-1], atol=1e-5)
    assert not np.allclose(result.weights, hyp.attn.numpy(), atol=1e-3)


@pytest.mark.slow  # the module's `runs` trains three models: the largest setup of the fast tier
def test_plot_attention_without_attention_is_an_error(runs, tmp_path, capsys):
    assert seqed("plot", "attention", "-c", runs / "rnn_fixed", "a dog", "-o", tmp_path / "a.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("seqed: error:") and "no attention" in err
    assert not (tmp_path / "a.png").exists()


def _recipe_plots():
    """recipes/autoencoder/plots.py as a module (a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "autoencoder" / "plots.py"
    spec = importlib.util.spec_from_file_location("ae_plots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_vae_plot_reads_the_validations_of_a_training_log(tmp_path):
    import matplotlib.image

    rows = [{"step": 10, "loss": 5.0}]  # a log line between validations: skipped
    rows += [{"step": s, "valid_nll": 3.0 - s / 1000, "valid_kl": 2.0 + s / 100, "kl_weight": min(1.0, s / 300),
              "valid_active_units": min(16, s // 50)} for s in (100, 200, 300, 400)]
    (tmp_path / "train.log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plots = _recipe_plots()
    series = plots.vae_series(tmp_path)
    assert series["step"] == [100, 200, 300, 400]
    assert series["valid_active_units"] == [2, 4, 6, 8]
    assert plots.main(["vae", str(tmp_path), "--latent-dim", "16", "-o", str(tmp_path / "vae.png")]) == 0
    assert matplotlib.image.imread(tmp_path / "vae.png").shape[2] in (3, 4)
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "train.log.jsonl").write_text(json.dumps({"step": 100, "valid_nll": 1.0}) + "\n")
    with pytest.raises(SystemExit, match="not a variational run"):
        plots.vae_series(tmp_path / "memory")
    with pytest.raises(SystemExit, match="no training log"):
        plots.vae_series(tmp_path / "missing")
