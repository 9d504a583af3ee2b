"""The recipes as a user runs them: every YAML file is a valid config, and `run.sh` goes from raw
corpus files to RUN/results.json on a tiny stand-in corpus (letter strings and their reversals named
like Multi30k's files), through the real `seqed` commands, with a tiny model given as overrides."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqed.config import load_config
from tiny_runs import child_env, write_task

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
YAMLS = sorted(RECIPES.glob("*/*.yaml"))
TINY_TRANSFORMER = [f"model.{side}.{k}={v}" for side in ("encoder", "decoder")
                    for k, v in (("layers", 1), ("hidden", 32), ("ffn", 64), ("heads", 2))]
TINY_TRAIN = ["tokenizer.type=bpe", "tokenizer.vocab_size=20", "train.max_steps=30", "train.valid_every=10",
              "train.max_minutes=0", "train.threads=1", "train.max_tokens=256", "train.warmup=10"]


@pytest.mark.parametrize("path", YAMLS, ids=[f"{p.parent.name}/{p.stem}" for p in YAMLS])
def test_every_recipe_config_loads_and_validates(path):
    cfg = load_config(str(path))
    cfg.validate()
    train = cfg.data.train
    paths = [train.src, train.tgt, train.path] if train.format != "hf" else []
    if path.parent.name == "demo":  # the bundled corpus: no network, no $SEQED_DATA
        assert all((REPO / p).is_file() for p in paths if p)
    else:
        assert all(p.startswith("$SEQED_DATA/") for p in paths if p), "data paths are $SEQED_DATA/<corpus>/..."


def test_recipes_cover_what_the_readme_lists():
    names = {f"{p.parent.name}/{p.stem}" for p in YAMLS}
    assert {"multi30k_en_fr/transformer", "multi30k_en_fr/rnn_attention", "multi30k_en_fr/rnn_fixed",
            "multi30k_en_fr/gru_luong", "multi30k_en_fr/transformer_gpu", "tatoeba_en_fr/transformer",
            "wmt14_en_fr/transformer_base", "wmt14_en_fr/transformer_big", "autoencoder/rnn_code",
            "autoencoder/attention", "autoencoder/denoising", "autoencoder/variational",
            "autoencoder/masked", "autoencoder/rnn_code_tied"} <= names


def gpu_overrides(config: str) -> list[str]:
    """recipes/autoencoder/gpu.overrides as run.sh reads it with GPU=1: `key=value` lines for every config,
    `CONFIG: key=value ...` lines for one, `#` comments."""
    words = []
    for line in (RECIPES / "autoencoder" / "gpu.overrides").read_text().splitlines():
        line = line.split("#", 1)[0]
        name, sep, rest = line.partition(":")
        if not sep:
            words += line.split()
        elif name.strip() == config:
            words += rest.split()
    return words


def test_gpu_overrides_make_valid_configs_of_every_autoencoder_config():
    """GPU=1: each config's data, tokenizer and model, on CUDA for 5 minutes; every key a valid config key."""
    configs = sorted(p.stem for p in (RECIPES / "autoencoder").glob("*.yaml"))
    assert not [c for c in configs if c.endswith("_gpu")], "GPU settings live in gpu.overrides, not in copies"
    named = {line.partition(":")[0].strip() for line in (RECIPES / "autoencoder" / "gpu.overrides")
             .read_text().splitlines() if ":" in line.split("#", 1)[0]}
    assert named <= set(configs), f"gpu.overrides names configs that do not exist: {named - set(configs)}"
    for name in configs:
        cpu = load_config(str(RECIPES / "autoencoder" / f"{name}.yaml"))
        gpu = load_config(str(RECIPES / "autoencoder" / f"{name}.yaml"), gpu_overrides(name))
        gpu.validate()
        assert (gpu.data, gpu.tokenizer, gpu.model) == (cpu.data, cpu.tokenizer, cpu.model), name
        assert gpu.train.device == "cuda" and gpu.train.max_minutes == 5, name
    assert "train.schedule=plateau" in gpu_overrides("rnn_code") and "train.schedule=plateau" not in gpu_overrides(
        "rnn_code_tied")


def fake_multi30k(root: Path, splits: dict[str, int], langs=("en", "fr")) -> Path:
    """root/multi30k/<split>.<lang>: reversal pairs named like Multi30k's files."""
    task = root / "task"
    task.mkdir(parents=True)
    write_task(task, n_train=sum(splits.values()), n_valid=0)
    src = (task / "train.src").read_text().splitlines(keepends=True)
    tgt = (task / "train.tgt").read_text().splitlines(keepends=True)
    out = root / "multi30k"
    out.mkdir(parents=True)
    start = 0
    for split, n in splits.items():
        for lang, lines in zip(langs, (src, tgt)):
            (out / f"{split}.{lang}").write_text("".join(lines[start:start + n]))
        start += n
    return root


def run_recipe(script: str, args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(RECIPES / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def recipe_env(**extra) -> dict:
    bindir = str(Path(sys.executable).parent)  # the `seqed` entry point of this interpreter's environment
    return child_env(PATH=bindir + os.pathsep + os.environ.get("PATH", ""), PYTHON=sys.executable, DEVICE="cpu",
                     **extra)


@pytest.mark.slow  # trains through subprocesses
def test_translation_recipe_runs_end_to_end(tmp_path):
    raw = fake_multi30k(tmp_path / "raw", {"train": 300, "val": 20, "test2016": 20, "test2017": 15})
    run = tmp_path / "run"
    env = recipe_env(SEQED_DATA=str(raw), PREPARED=str(tmp_path / "prepared"), RUN=str(run), AVG_LAST="3",
                     BEAM="2", LENGTH_PENALTIES="0.6 1.5")
    proc = run_recipe("multi30k_en_fr/run.sh", ["transformer", *TINY_TRANSFORMER, *TINY_TRAIN,
                                                "train.precision=fp32"], env)
    assert "mscoco2017.en: skipping mscoco2017" in proc.stdout
    prepared = json.loads((tmp_path / "prepared" / "multi30k" / "prepare.json").read_text())
    assert prepared["verified"] is False  # not the real files: used with a warning
    result = json.loads((run / "results.json").read_text())
    assert result["recipe"] == "multi30k_en_fr" and result["config"] == "transformer"
    assert "train.max_steps=30" in result["overrides"]
    assert set(result["tests"]) == {"test2016", "test2017"}
    for name, n in (("test2016", 20), ("test2017", 15)):
        t = result["tests"][name]
        assert t["sentences"] == n and t["beam"] == 2 and 0 <= t["bleu"] <= 100
        assert t["bleu_signature"].startswith("nrefs:1|") and t["sentences_per_second"] > 0
        assert len((run / f"{name}.hyp.fr").read_text().splitlines()) == n
        assert t["length_penalty"] == result["length_penalty"]["chosen"] and 0 <= t["length_ratio"]
        assert 0 <= t["greedy"]["bleu"] <= 100 and 0 <= t["greedy"]["length_ratio"]
    lp = result["length_penalty"]
    assert set(lp["valid_bleu"]) == {"0.6", "1.5"}
    assert lp["valid_bleu"][str(lp["chosen"])] == max(lp["valid_bleu"].values())
    assert set(result["selection"]["valid_bleu"]) == {"checkpoint_best.pt", "avg.pt"}
    assert result["checkpoint"] in result["selection"]["valid_bleu"]
    if result["checkpoint"] == "avg.pt":
        assert result["averaged_from"] == ["checkpoint_10.pt", "checkpoint_20.pt", "checkpoint_30.pt"]
    assert result["training"]["steps"] == 30 and result["hardware"]["torch_threads"] == 1
    assert (run / "train.done").is_file()

    row = subprocess.run([sys.executable, str(RECIPES / "results.py"), "row", str(run / "results.json"),
                          "--tests", "test2017,test2016"], capture_output=True, text=True, check=True).stdout
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    t16, t17 = result["tests"]["test2016"], result["tests"]["test2017"]
    assert cells[4] == f"{t17['bleu']:.1f} / {t17['chrf']:.1f}" and cells[5] == f"{t16['bleu']:.1f} / {t16['chrf']:.1f}"
    search = subprocess.run([sys.executable, str(RECIPES / "results.py"), "search", str(run / "results.json"),
                             "--tests", "test2016"], capture_output=True, text=True, check=True).stdout
    cells = [c.strip() for c in search.strip().strip("|").split("|")]
    assert cells[1] == "test2016" and cells[4] == f"{t16['greedy']['bleu']:.2f}"
    assert cells[6] == f"{t16['bleu'] - t16['greedy']['bleu']:+.2f}"


@pytest.mark.slow  # trains through subprocesses
def test_autoencoder_recipe_runs_end_to_end(tmp_path):
    raw = fake_multi30k(tmp_path / "raw", {"train": 300, "val": 20, "test2016": 25}, langs=("en", "unused"))
    run = tmp_path / "run"
    env = recipe_env(SEQED_DATA=str(raw), RUN=str(run))
    tiny_gru = ["model.encoder.hidden=16", "model.encoder.embed_dim=32", "model.decoder.hidden=32",
                "model.decoder.embed_dim=32"]  # the recipe's biGRU + attention, 2 x 16 = 32-wide states
    proc = run_recipe("autoencoder/run.sh", ["denoising", *tiny_gru, *TINY_TRAIN], env)
    result = json.loads((run / "results.json").read_text())
    assert result["config"] == "denoising" and result["checkpoint"] == "checkpoint_last.pt"
    assert result["noise"] == {"drop": 0.1, "mask": 0.15, "shuffle_k": 3}
    assert result["training"]["steps"] == 30 and result["hardware"]["torch_threads"] == 1
    clean, masked = result["evaluations"]["clean"], result["evaluations"]["mask15"]
    assert clean["n"] == masked["n"] == 25 and not clean["noise"] and masked["noise"] == "mask=0.15"
    assert masked["masked_tokens"] > 0 and 0 <= masked["completion_accuracy"] <= 100
    import numpy as np

    codes = np.load(run / "test2016.codes.npy")
    assert codes.shape == (25, 32)
    assert f"trained 30 updates in {result['training']['minutes']} min on 1 thread(s)" in proc.stdout

    rows = subprocess.run([sys.executable, str(RECIPES / "autoencoder" / "summary.py"), "row",
                           str(run / "results.json")], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(rows) == 3 and rows[0].startswith("| `denoising` `")
    assert "(greedy decoding); completion accuracy" in rows[1] and "(fill decoding); completion accuracy" in rows[2]
    fill = result["evaluations"]["mask15_fill"]
    assert fill["decoding"] == "fill" and fill["masked_tokens"] == masked["masked_tokens"]


@pytest.mark.slow  # trains through subprocesses
def test_wmt14_recipe_preprocesses_once_then_trains_with_two_processes(tmp_path):
    """run.sh with NPROC=2 on a tiny stand-in for a prepared WMT14 directory: `seqed preprocess` writes
    data.binarized, torchrun trains 2 gloo processes on it (neither encodes the corpus), then the usual
    selection, decoding and results.json."""
    raw = fake_multi30k(tmp_path / "raw", {"train": 300, "valid": 20, "test": 15})
    (raw / "multi30k").rename(raw / "wmt14")
    (raw / "wmt14" / "prepare.json").write_text("{}")
    run = tmp_path / "run"
    env = recipe_env(SEQED_DATA=str(raw), RUN=str(run), AVG_LAST="1", BEAM="2", LENGTH_PENALTIES="1.0", NPROC="2")
    proc = run_recipe("wmt14_en_fr/run.sh", ["transformer_base", *TINY_TRANSFORMER, *TINY_TRAIN,
                                             "train.device=cpu", "train.precision=fp32", "train.max_steps=10"], env)
    binarized = raw / "wmt14" / "binarized_bpe32k"
    assert (binarized / "manifest.json").is_file() and str(binarized) in proc.stdout
    assert proc.stderr.count("[seqed] preprocessed ") == 1  # by `seqed preprocess`, not again by training
    result = json.loads((run / "results.json").read_text())
    assert result["training"]["steps"] == 10 and set(result["tests"]) == {"test"}
    state = torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=True)["train_state"]
    assert state["world"] == 2


def test_autoencoder_summary_rows_every_committed_run_and_skips_other_json():
    """Its usage line, `summary.py row recipes/autoencoder/results/*.json`, as written."""
    results = sorted((RECIPES / "autoencoder" / "results").glob("*.json"))
    proc = subprocess.run([sys.executable, str(RECIPES / "autoencoder" / "summary.py"), "row", *map(str, results)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = [p for p in results if "training" in json.loads(p.read_text())]
    assert runs and len(runs) < len(results)
    assert sum(1 for line in proc.stdout.splitlines() if line.startswith("| `")) >= len(runs)
    assert proc.stderr.count("skipping") == len(results) - len(runs)
