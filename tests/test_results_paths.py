"""Committed results files carry no machine paths (issue 10): `benchlib.portable_paths` rewrites them,
and every results JSON in the repository is checked for this machine's absolute paths."""

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import benchlib  # noqa: E402

RESULTS = sorted([*REPO.glob("benchmarks/results/*.json"), *REPO.glob("recipes/**/results/**/*.json")])


def test_portable_paths_rewrites_nested_and_embedded_paths():
    machine = dict(repo="/srv/ck/seqed", data="/srv/data", home="/home/u", python="/home/u/.pyenv/bin/python")
    payload = {
        "out": "/srv/ck/seqed/benchmarks/work/compare/x",
        "repo": "/srv/ck/seqed",
        "data": "/srv/data",
        "src": "/srv/data/multi30k/test2016.en",
        "argv": ["/home/u/.pyenv/bin/python", "-m", "seqed", "train", "out_dir=/srv/ck/seqed/runs/a"],
        "nested": [{"override": "data.train={format: text, src: /srv/data/m/train.en, tgt: /srv/data/m/train.fr}"}],
        "cache": "/home/u/.cache/torch",
        "/srv/ck/seqed/runs/key": ("/home/u",),
        # not under any of them: a sibling whose name only starts like the repository, and other roots
        "sibling": "/srv/ck/seqed2/x",
        "other": "/opt/bin/onmt_translate",
        "relative": "runs/m30k/checkpoint_best.pt",
        "numbers": [1, 2.5, None, True],
    }
    assert benchlib.portable_paths(payload, **machine) == {
        "out": "benchmarks/work/compare/x",
        "repo": ".",
        "data": "$SEQED_DATA",
        "src": "$SEQED_DATA/multi30k/test2016.en",
        "argv": ["python", "-m", "seqed", "train", "out_dir=runs/a"],
        "nested": [{"override": "data.train={format: text, src: $SEQED_DATA/m/train.en, "
                                "tgt: $SEQED_DATA/m/train.fr}"}],
        "cache": "~/.cache/torch",
        "runs/key": ["~"],
        "sibling": "/srv/ck/seqed2/x",
        "other": "/opt/bin/onmt_translate",
        "relative": "runs/m30k/checkpoint_best.pt",
        "numbers": [1, 2.5, None, True],
    }


def test_portable_paths_defaults_are_this_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQED_DATA", str(tmp_path))
    out = benchlib.portable_paths([str(benchlib.REPO / "runs" / "a"), str(tmp_path / "m" / "x.en"), sys.executable])
    assert out == ["runs/a", "$SEQED_DATA/m/x.en", "python"]


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def test_there_are_results_files():
    assert any("benchmarks/results" in str(p) for p in RESULTS)
    assert any("recipes/" in str(p) for p in RESULTS)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_results_have_no_machine_paths(path):
    machine = {str(REPO), os.path.realpath(REPO), str(REPO.parent / "shared" / "data"), "/root/", "/home/"}
    if os.environ.get("SEQED_DATA"):
        machine.add(os.path.abspath(os.environ["SEQED_DATA"]))
    home = str(Path.home())
    if home != "/":
        machine.add(home + "/")
    found = [(s, m) for s in _strings(json.loads(path.read_text(encoding="utf-8"))) for m in machine if m in s]
    assert not found, (f"{path.relative_to(REPO)} holds this machine's paths {found[:3]}: rewrite it with "
                       f"benchlib.portable_paths (publish and the recipes' results writers do so)")
