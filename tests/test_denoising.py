"""Denoising and masked autoencoders: one tiny model per noise mode, trained through the real CLI on
cyclic letter walks, then asked to rebuild corrupted test sentences with `seqed evaluate --noise`.

Each model must beat what it was given: the corrupted input itself, scored as a reconstruction
(`noisy_input` in the report). For masking and substitution the report's `completion_accuracy` (the
corrupted positions rebuilt correctly) must also be far above chance: copying the input scores 0 there
and guessing a letter 8.3%; a walk's neighbours pin a masked letter down about 3 times out of 4.
"""

import json

import pytest
import torch

from ae_tasks import train_all, write_config, write_corpus
from seqed.cli import main

STEPS = 400

# mode -> (training overrides, evaluation noise, extra evaluate flags)
MODES = {
    "drop": (["data.noise.drop=0.15"], "drop=0.15", []),
    "mask": (["data.noise.mask=0.2"], "mask=0.2", []),
    "substitute": (["data.noise.substitute=0.15"], "substitute=0.15", []),
    "shuffle": (["data.noise.shuffle_k=2"], "shuffle_k=2", []),
    "infill": (["data.noise.infill=0.2"], "infill=0.2", []),
    # Masked autoencoder: loss only where the source was masked; used by forced decoding (--fill).
    "masked": (["data.noise.mask=0.3", "train.loss_on=masked"], "mask=0.3", ["--fill"]),
}



pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # every test trains through subprocesses

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("denoising")
    data = write_corpus(root / "data", "walks")
    config = write_config(root / "walks.yaml", data, root / "unused")
    jobs = {mode: [config, f"out_dir={root / mode}", f"train.max_steps={STEPS}", "train.lr=0.01",
                   f"train.valid_every={STEPS}", *overrides]
            for mode, (overrides, _, _) in MODES.items()}
    return root, data, train_all(jobs, root)


def evaluate(runs, mode: str, capsys) -> dict:
    root, data, failures = runs
    assert not failures[mode], failures[mode]
    _, noise, flags = MODES[mode]
    out = root / f"{mode}.eval.json"
    # The last checkpoint: validation (on clean input) does not measure denoising, so "best" could be early.
    assert main(["evaluate", "-c", str(root / mode / "checkpoint_last.pt"), "-i", str(data / "test.txt"),
                 "--noise", noise, "--seed", "7", "--beam", "1", "--device", "cpu", "--json", str(out),
                 *flags]) == 0
    capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["noise"] == noise and report["n"] == 200
    return report


def test_drop(runs, capsys):
    r = evaluate(runs, "drop", capsys)
    # A gap of 3 or 4 letters betrays a dropped letter; dropped first/last letters cannot come back.
    assert r["exact_match"] >= r["noisy_input"]["exact_match"] + 5, r
    assert r["token_accuracy"] >= r["noisy_input"]["token_accuracy"] + 5, r


def test_mask_completion(runs, capsys):
    r = evaluate(runs, "mask", capsys)
    assert r["masked_tokens"] > 100
    assert r["completion_accuracy"] >= 30, r
    assert r["exact_match"] >= r["noisy_input"]["exact_match"] + 15, r


def test_substitute_repairs(runs, capsys):
    r = evaluate(runs, "substitute", capsys)
    # The model must first find the wrong letter: nothing marks it.
    assert r["completion_accuracy"] >= 15, r
    assert r["exact_match"] >= r["noisy_input"]["exact_match"] + 5, r


def test_local_shuffle_is_undone(runs, capsys):
    r = evaluate(runs, "shuffle", capsys)
    # A walk only moves forward, so the order is recoverable.
    assert r["exact_match"] >= 80 and r["exact_match"] >= r["noisy_input"]["exact_match"] + 30, r


def test_span_infilling(runs, capsys):
    r = evaluate(runs, "infill", capsys)
    # One mask stands for a whole span of unknown length: neighbours tell the length most of the time.
    assert r["exact_match"] >= r["noisy_input"]["exact_match"] + 15, r
    assert "completion_accuracy" not in r  # positions move: completion accuracy is undefined


def test_masked_autoencoder_fills_in(runs, capsys):
    r = evaluate(runs, "masked", capsys)
    assert r["decoding"] == "fill"
    assert r["completion_accuracy"] >= 30, r
    # Forced decoding keeps every unmasked piece, so only masked positions can differ from the reference.
    assert r["token_accuracy"] >= r["noisy_input"]["token_accuracy"], r
