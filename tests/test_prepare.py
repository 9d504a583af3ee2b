"""Corpus sources: Multi30k (local directory and checksummed download), Tatoeba's seeded no-leak split,
WMT14 through a local `datasets` stand-in, and the `seqed prepare` command."""

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from seqed import cli
from seqed.data.corpora import (MANIFEST_DIR, PrepareError, fix_multi30k, prepare_wmt14,
                           split_by_source)

SHARED_MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def seqed(*argv) -> int:
    return cli.main([str(a) for a in argv])


# ---------------------------------------------------------------------------------------------
# Multi30k

UPSTREAM = {"train": "train", "val": "val", "test2016": "test_2016_flickr", "test2017": "test_2017_flickr",
            "mscoco2017": "test_2017_mscoco"}


def tiny_multi30k(n=6):
    """{file name: raw upstream text}; train.en has an `&amp;` entity like the real file."""
    texts = {}
    for split in UPSTREAM:
        for lang in ("en", "fr"):
            lines = [f"{split} {lang} sentence {i} ." for i in range(n)]
            if (split, lang) == ("train", "en"):
                lines[2] = "A man &amp; a dog ."
            texts[f"{split}.{lang}"] = "".join(line + "\n" for line in lines)
    return texts


def manifest_for(texts, base_url="file:///nowhere"):
    files = {name: {"upstream": UPSTREAM[name.split(".")[0]], "lines": text.count("\n"),
                    "sha256": hashlib.sha256(fix_multi30k(text).encode()).hexdigest()}
             for name, text in texts.items()}
    return {"name": "multi30k-test", "base_url": base_url, "files": files}


def serve(texts, directory):
    """Gzipped files under upstream names, as in the multi30k/dataset repository; returns a file:// URL."""
    directory.mkdir()
    for name, text in texts.items():
        split, lang = name.split(".")
        (directory / f"{UPSTREAM[split]}.{lang}.gz").write_bytes(gzip.compress(text.encode()))
    return directory.resolve().as_uri()


def test_multi30k_from_local_directory(tmp_path, capsys):
    texts = tiny_multi30k()
    src = tmp_path / "raw"
    src.mkdir()
    for name, text in texts.items():  # our names, upstream names and .gz all work
        split, lang = name.split(".")
        if split == "test2016":
            (src / f"test_2016_flickr.{lang}").write_text(text)
        elif split == "val":
            (src / f"{name}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (src / name).write_text(text)
    (tmp_path / "m.json").write_text(json.dumps(manifest_for(texts)))
    out = tmp_path / "prepared"
    assert seqed("prepare", "multi30k", "--data-dir", src, "--out", out, "--manifest", tmp_path / "m.json") == 0
    for split in ("train", "val", "test2016", "test2017", "mscoco2017"):
        for lang in ("en", "fr"):
            assert (out / f"{split}.{lang}").read_text() == fix_multi30k(texts[f"{split}.{lang}"])
    assert (out / "train.en").read_text().splitlines()[2] == "A man & a dog ."
    record = json.loads((out / "prepare.json").read_text())
    assert record["source"] == "multi30k" and record["from"] == "local" and record["verified"] is True
    assert {k: v["pairs"] for k, v in record["splits"].items()} == {s: 6 for s in UPSTREAM}
    info = record["splits"]["train"]["files"]["en"]
    assert info["sha256"] == hashlib.sha256((out / "train.en").read_bytes()).hexdigest()
    assert info["matches_manifest"] is True
    assert "prepared multi30k" in capsys.readouterr().err


def test_multi30k_local_variant_is_kept_with_a_warning(tmp_path, capsys):
    texts = tiny_multi30k()
    manifest = manifest_for(texts)
    texts["val.fr"] = texts["val.fr"].replace("sentence", "phrase")
    del texts["mscoco2017.en"], texts["mscoco2017.fr"]  # optional split
    src = tmp_path / "raw"
    src.mkdir()
    for name, text in texts.items():
        (src / name).write_text(text)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    assert seqed("prepare", "multi30k", "--data-dir", src, "--out", tmp_path / "o", "--manifest",
                 tmp_path / "m.json") == 0
    assert "val.fr" in capsys.readouterr().err
    record = json.loads((tmp_path / "o" / "prepare.json").read_text())
    assert record["verified"] is False and "mscoco2017" not in record["splits"]
    assert record["splits"]["val"]["files"]["fr"]["matches_manifest"] is False
    assert (tmp_path / "o" / "val.fr").read_text() == texts["val.fr"]


def test_multi30k_local_directory_missing_a_split(tmp_path, capsys):
    texts = tiny_multi30k()
    src = tmp_path / "raw"
    src.mkdir()
    for name, text in texts.items():
        if name != "test2017.fr":
            (src / name).write_text(text)
    (tmp_path / "m.json").write_text(json.dumps(manifest_for(texts)))
    assert seqed("prepare", "multi30k", "--data-dir", src, "--out", tmp_path / "o", "--manifest",
                 tmp_path / "m.json") == 2
    err = capsys.readouterr().err
    assert err.startswith("seqed: error:") and "test2017.fr" in err and "Traceback" not in err


def test_multi30k_download_verifies_checksums(tmp_path):
    texts = tiny_multi30k()
    url = serve(texts, tmp_path / "server")
    (tmp_path / "m.json").write_text(json.dumps(manifest_for(texts, base_url=url)))
    out = tmp_path / "prepared"
    assert seqed("prepare", "multi30k", "--out", out, "--manifest", tmp_path / "m.json") == 0
    record = json.loads((out / "prepare.json").read_text())
    assert record["from"] == "download" and record["origin"] == url and record["verified"] is True
    assert (out / "train.en").read_text() == fix_multi30k(texts["train.en"])
    assert (out / "download" / "test_2017_mscoco.fr.gz").is_file()  # kept: a rerun does not download again
    (tmp_path / "server" / "train.en.gz").unlink()
    assert seqed("prepare", "multi30k", "--out", out, "--manifest", tmp_path / "m.json") == 0


def test_multi30k_download_checksum_mismatch_is_an_error(tmp_path, capsys):
    texts = tiny_multi30k()
    manifest = manifest_for(texts)
    texts["test2016.fr"] = texts["test2016.fr"].replace("2016", "2O16")  # the server holds another file
    url = serve(texts, tmp_path / "server")
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    out = tmp_path / "prepared"
    assert seqed("prepare", "multi30k", "--out", out, "--manifest", tmp_path / "m.json", "--base-url", url) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch for test2016.fr" in err and manifest["files"]["test2016.fr"]["sha256"] in err
    assert not (out / "download" / "test_2016_flickr.fr.gz").exists()  # a bad download is not kept
    assert not (out / "prepare.json").exists()


def test_multi30k_download_failure_says_what_to_do(tmp_path, capsys):
    texts = tiny_multi30k()
    (tmp_path / "m.json").write_text(json.dumps(manifest_for(texts, (tmp_path / "absent").as_uri())))
    assert seqed("prepare", "multi30k", "--out", tmp_path / "o", "--manifest", tmp_path / "m.json") == 2
    err = capsys.readouterr().err
    assert "cannot download" in err and "--data-dir" in err


def test_multi30k_fetcher_receives_the_manifest_urls(tmp_path):
    from seqed.data.corpora import prepare_multi30k

    texts = tiny_multi30k()
    urls = []

    def fetcher(url, dest):
        urls.append(url)
        name = url.rsplit("/", 1)[1][: -len(".gz")]
        upstream, lang = name.rsplit(".", 1)
        split = {v: k for k, v in UPSTREAM.items()}[upstream]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip.compress(texts[f"{split}.{lang}"].encode()))
        return dest

    prepare_multi30k(tmp_path / "o", manifest=manifest_for(texts, "https://example.org/raw/"), fetcher=fetcher)
    assert "https://example.org/raw/test_2017_flickr.fr.gz" in urls and len(urls) == 10


def test_the_multi30k_manifest():
    manifest = json.loads((MANIFEST_DIR / "multi30k.json").read_text())
    assert manifest["base_url"].startswith("https://") and "multi30k/dataset" in manifest["base_url"]
    assert set(manifest["files"]) == {f"{s}.{lang}" for s in UPSTREAM for lang in ("en", "fr")}
    for name, entry in manifest["files"].items():
        assert entry["upstream"] == UPSTREAM[name.split(".")[0]]
        assert len(entry["sha256"]) == 64
    assert manifest["files"]["train.en"]["lines"] == 29000


@pytest.mark.skipif(not SHARED_MULTI30K.is_dir(), reason="needs ../shared/data/multi30k")
def test_the_shared_multi30k_copy_matches_the_manifest(tmp_path):
    from seqed.data.corpora import prepare_multi30k

    record = prepare_multi30k(tmp_path / "m", data_dir=SHARED_MULTI30K)
    assert record["verified"] is True
    assert {k: v["pairs"] for k, v in record["splits"].items()} == {
        "train": 29000, "val": 1014, "test2016": 1000, "test2017": 1000, "mscoco2017": 461}


# ---------------------------------------------------------------------------------------------
# Tatoeba


def tatoeba_pairs(n_sources=300, seed=0):
    """Pairs with several translations for many English sentences, and whitespace variants of some."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n_sources):
        en = f"Sentence number {i} is here."
        for j in range(rng.randint(1, 3)):
            pairs.append((en if j < 2 else f" Sentence  number {i} is here. ", f"Phrase {i} version {j}."))
    rng.shuffle(pairs)
    return pairs


def norm(s):
    return " ".join(s.split())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tatoeba_split_never_leaks_an_english_sentence(seed):
    src = [s for s, _ in tatoeba_pairs()]
    parts = split_by_source(src, valid=40, test=30, seed=seed)
    seen = {name: {norm(src[i]) for i in idx} for name, idx in parts.items()}
    assert not (seen["train"] & seen["valid"]) and not (seen["train"] & seen["test"])
    assert not (seen["valid"] & seen["test"])
    assert len(seen["valid"]) == 40 and len(seen["test"]) == 30 and len(seen["train"]) == 300 - 70
    everything = np.sort(np.concatenate(list(parts.values())))
    assert everything.tolist() == list(range(len(src)))  # every pair exactly once


def test_tatoeba_split_is_deterministic_per_seed_and_ignores_file_order():
    pairs = tatoeba_pairs()
    src = [s for s, _ in pairs]
    a = split_by_source(src, valid=40, test=30, seed=7)
    b = split_by_source(src, valid=40, test=30, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = split_by_source(src, valid=40, test=30, seed=8)
    assert {norm(src[i]) for i in a["test"]} != {norm(src[i]) for i in other["test"]}
    perm = list(range(len(src)))
    random.Random(0).shuffle(perm)
    shuffled = [src[i] for i in perm]
    c = split_by_source(shuffled, valid=40, test=30, seed=7)
    for k in a:
        assert {norm(src[i]) for i in a[k]} == {norm(shuffled[i]) for i in c[k]}


def test_tatoeba_split_needs_sentences_left_for_training():
    with pytest.raises(PrepareError, match="distinct source sentences"):
        split_by_source(["a", "b", "b", "c"], valid=2, test=1, seed=1)


def test_prepare_tatoeba_command(tmp_path):
    pairs = tatoeba_pairs() + [("", "vide"), ("empty target", "")]
    tsv = tmp_path / "eng-fra.tsv"
    tsv.write_text("".join(f"{s}\t{t}\tCC-BY 2.0 (France) Attribution: tatoeba.org\n" for s, t in pairs))
    out = tmp_path / "tat"
    assert seqed("prepare", "tatoeba", "--tsv", tsv, "--out", out, "--seed", 3, "--valid", 25, "--test", 20) == 0
    sides = {}
    for split in ("train", "valid", "test"):
        en = (out / f"{split}.en").read_text().splitlines()
        fr = (out / f"{split}.fr").read_text().splitlines()
        assert len(en) == len(fr) and all(en) and all(fr)
        sides[split] = {norm(s) for s in en}
    assert not (sides["train"] & sides["valid"]) and not (sides["train"] & sides["test"])
    assert not (sides["valid"] & sides["test"])
    assert len(sides["valid"]) == 25 and len(sides["test"]) == 20
    record = json.loads((out / "prepare.json").read_text())
    assert record["source"] == "tatoeba" and record["seed"] == 3 and record["dropped_empty"] == 2
    assert sum(v["pairs"] for v in record["splits"].values()) == len(pairs) - 2
    first = (out / "test.en").read_bytes()
    assert seqed("prepare", "tatoeba", "--tsv", tsv, "--out", tmp_path / "again", "--seed", 3, "--valid", 25,
                 "--test", 20) == 0
    assert (tmp_path / "again" / "test.en").read_bytes() == first


def test_prepare_tatoeba_too_small(tmp_path, capsys):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("Hi.\tSalut.\nGo.\tVa !\n")
    assert seqed("prepare", "tatoeba", "--tsv", tsv, "--out", tmp_path / "o") == 2
    assert "lower --valid/--test" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# WMT14 (a tiny local `datasets` stand-in and a local sacreBLEU test set)


@pytest.fixture
def wmt14_standin(tmp_path, monkeypatch):
    """`datasets.load_dataset("wmt14", "fr-en", split=...)` served from local JSON lines files through the
    real `json` builder; sacreBLEU's newstest2014 served from local files."""
    import datasets
    import sacrebleu.utils

    rows = {"train": [{"translation": {"en": f"Train sentence {i}.", "fr": f"Phrase d'entraînement {i}."}}
                      for i in range(50)],
            "validation": [{"translation": {"en": f"Dev {i}.", "fr": f"Dév {i}."}} for i in range(7)],
            "test": [{"translation": {"en": f"Hub test {i}.", "fr": f"Test du hub {i}."}} for i in range(5)]}
    rows["train"][3]["translation"]["en"] = "A sentence\nbroken over two lines."
    rows["train"][4]["translation"]["fr"] = ""
    files = {}
    for split, items in rows.items():
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
    real = datasets.load_dataset
    calls = []

    def load_dataset(name, config=None, *, split, streaming=False, **kwargs):
        calls.append((name, config, split, streaming))
        if name != "wmt14":
            raise ConnectionError(f"Couldn't reach {name!r} on the Hub (offline)")
        return real("json", data_files=str(files[split]), split="train", streaming=streaming,
                    cache_dir=str(tmp_path / "hf_cache"))

    (tmp_path / "nt14.en").write_text("".join(f"News sentence {i}.\n" for i in range(4)))
    (tmp_path / "nt14.fr").write_text("".join(f"Phrase de presse {i}.\n" for i in range(4)))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(sacrebleu.utils, "get_source_file", lambda t, lp: str(tmp_path / "nt14.en"))
    monkeypatch.setattr(sacrebleu.utils, "get_reference_files", lambda t, lp: [str(tmp_path / "nt14.fr")])
    return calls


def test_prepare_wmt14_from_the_hub_and_sacrebleu(tmp_path, wmt14_standin):
    out = tmp_path / "wmt14"
    assert seqed("prepare", "wmt14", "--out", out, "--limit", 20) == 0
    assert ("wmt14", "fr-en", "train", True) in wmt14_standin  # streamed, never downloaded whole
    train_en = (out / "train.en").read_text().splitlines()
    train_fr = (out / "train.fr").read_text().splitlines()
    assert len(train_en) == len(train_fr) == 19  # 20 read, one with an empty side dropped
    assert "A sentence broken over two lines." in train_en
    assert (out / "valid.fr").read_text().splitlines() == [f"Dév {i}." for i in range(7)]
    assert (out / "test.en").read_text().splitlines() == [f"News sentence {i}." for i in range(4)]
    record = json.loads((out / "prepare.json").read_text())
    assert record["source"] == "wmt14" and record["limit"] == 20 and "sacreBLEU" in record["test"]
    assert record["splits"]["train"]["dropped_empty"] == 1
    assert record["splits"]["test"]["files"]["fr"]["sha256"] == hashlib.sha256(
        (out / "test.fr").read_bytes()).hexdigest()


def test_prepare_wmt14_test_from_hub_and_shuffled_stream(tmp_path, wmt14_standin):
    prepare_wmt14(tmp_path / "w", test="hub", shuffle_seed=1)
    assert (tmp_path / "w" / "test.en").read_text().splitlines() == [f"Hub test {i}." for i in range(5)]
    assert len((tmp_path / "w" / "train.en").read_text().splitlines()) == 49


def test_prepare_wmt14_offline_errors(tmp_path, wmt14_standin, monkeypatch, capsys):
    import sacrebleu.utils

    def offline(*args):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(sacrebleu.utils, "get_source_file", offline)
    assert seqed("prepare", "wmt14", "--out", tmp_path / "w") == 2
    err = capsys.readouterr().err
    assert "sacrebleu -t wmt14 -l en-fr" in err and "--test hub" in err
    assert seqed("prepare", "wmt14", "--out", tmp_path / "w", "--test", "none", "--name", "elsewhere") == 2
    err = capsys.readouterr().err
    assert "elsewhere/fr-en" in err and "network" in err
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.startswith(".")]  # no half-written files


def test_prepared_wmt14_reads_back_through_a_config(tmp_path, wmt14_standin):
    from seqed.config import load_config
    from seqed.data.corpus import load_corpus

    prepare_wmt14(tmp_path / "w", limit=10)
    cfg = load_config(None, [f"data.train.src={tmp_path}/w/train.en", f"data.train.tgt={tmp_path}/w/train.fr"])
    src, tgt = load_corpus(cfg.data.train)
    assert len(src) == len(tgt) == 9  # row 4 has an empty French side


def test_prepare_commands_are_registered_in_the_cli():
    """`python -m seqed prepare --help` lists the corpora."""
    proc = subprocess.run([sys.executable, "-m", "seqed", "prepare", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "multi30k" in proc.stdout and "tatoeba" in proc.stdout and "wmt14" in proc.stdout
