"""Corpus sources: Multi30k, Tatoeba and WMT14 English-French prepared into a data directory.

Each `prepare_*` function writes aligned plain-text files ``{split}.{en,fr}`` (one sentence per line,
UTF-8, "\\n" line ends) plus ``prepare.json`` (the source, pair counts, sha256 of every file, seed and
options), so a recipe's YAML can point at ``$SEQED_DATA/<corpus>/{split}.{en,fr}``.

* Multi30k Task 1 (Elliott et al. 2016, https://arxiv.org/abs/1605.00459; French and the 2017 test sets:
  Elliott et al. 2017): the raw files of the `multi30k/dataset` repository, downloaded and checked
  against `data/manifests/multi30k.json`, or copied from a local directory.
* Tatoeba (the manythings.org ``english<TAB>french`` export): no official split, so `split_by_source`
  makes a seeded one in which no English sentence is in two splits.
* WMT14 (Bojar et al. 2014): training and newstest2013 from `datasets` (hub ``wmt14``, config
  ``fr-en``), streamed; newstest2014 from sacreBLEU, whose copy is the reference for reported scores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from seqed.data.corpus import read_lines, read_tsv
from seqed.errors import SeqedError
from seqed.files import write_atomic

MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data" / "manifests"
MULTI30K_SPLITS = ("train", "val", "test2016", "test2017", "mscoco2017")
MULTI30K_REQUIRED = ("train", "val", "test2016", "test2017")
LANGS = ("en", "fr")
_CHUNK = 1 << 20


class PrepareError(SeqedError, ValueError):
    """A corpus that cannot be prepared (missing file, bad checksum, no network); says what to do."""


# ---------------------------------------------------------------------------------------------
# files


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(_CHUNK), b""))


def _file_info(path: Path) -> dict:
    return {"path": path.name, "lines": _count_lines(path), "sha256": sha256_file(path)}


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    write_atomic(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def one_line(text: str) -> str:
    """A sentence as one line: "\\r" and "\\n" inside it become spaces, outer whitespace goes."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()


def write_record(out: Path, record: dict) -> Path:
    """Write `record` (plus the seqed version and time) to ``out/prepare.json``."""
    from seqed import __version__

    record = {**record, "seqed_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = out / "prepare.json"
    write_atomic(path, (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def fetch(url: str, dest: str | os.PathLike, *, timeout: float = 60.0) -> Path:
    """Download `url` (https://, http:// or file://) to `dest`, atomically, with a progress bar.

    Raises:
        PrepareError: the URL cannot be read (no network, 404, ...); the message says what to do.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=dest.name,
                      disable=None, file=sys.stderr) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise PrepareError(f"cannot download {url}: {reason}. Without network, copy the files by hand and "
                           f"pass --data-dir DIR (recipes: set SEQED_DATA; see recipes/README.md)") from None
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Multi30k


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    """The Multi30k manifest (`data/manifests/multi30k.json` unless `path` is given)."""
    path = Path(path) if path is not None else MANIFEST_DIR / "multi30k.json"
    if not path.is_file():
        raise PrepareError(f"Multi30k manifest not found at {path}: pass --manifest PATH (the file is "
                           f"data/manifests/multi30k.json in the seqed repository)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    if "files" not in manifest or "base_url" not in manifest:
        raise PrepareError(f"{path}: not a corpus manifest (needs 'base_url' and 'files')")
    return manifest


def fix_multi30k(text: str) -> str:
    """The one change made to the upstream raw text: the HTML entity ``&amp;`` becomes ``&``.

    Upstream `train.en` has 16 such lines (the shared copy has them fixed); no other raw file has any.
    """
    return text.replace("&amp;", "&")


def _find_local(directory: Path, split: str, lang: str, upstream: str) -> Optional[Path]:
    """``split.lang`` or ``upstream.lang`` in `directory`, plain or gzipped; None when absent."""
    for name in (f"{split}.{lang}", f"{upstream}.{lang}", f"{split}.{lang}.gz", f"{upstream}.{lang}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise PrepareError(f"{path}: not a valid gzip file ({err})") from None


def _download_text(url: str, gz: Path, fetcher: Callable[[str, Path], Path]) -> bytes:
    """The gunzipped bytes of `url`, downloaded to `gz` unless already there."""
    if not gz.is_file():
        fetcher(url, gz)
    try:
        return gzip.decompress(gz.read_bytes())
    except (OSError, EOFError) as err:
        gz.unlink(missing_ok=True)
        raise PrepareError(f"{url}: the download is not gzipped ({err}); it was deleted: run again to retry") from None


def prepare_multi30k(out: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                     base_url: Optional[str] = None, manifest: dict | str | os.PathLike | None = None,
                     fetcher: Callable[[str, Path], Path] = fetch) -> dict:
    """Multi30k Task 1 English-French into `out`: train, val, test2016, test2017 (+ mscoco2017).

    With `data_dir`, files are read from there under our names (``test2016.en``) or upstream names
    (``test_2016_flickr.en``), optionally gzipped; their checksums are compared with the manifest and a
    mismatch is reported but allowed (a local corpus may be a deliberate variant). Without it, every file
    is downloaded (from `base_url`, else the manifest's) into ``out/download/`` and gunzipped, and must
    match the manifest's sha256. Both paths apply `fix_multi30k`; checksums are of the fixed text.

    Args:
        out: output directory.
        data_dir: a local directory with the files, or None to download.
        base_url: where ``<upstream>.<lang>.gz`` files live (https:// or file://), overriding the manifest.
        manifest: the manifest dict, or a path to it (default: data/manifests/multi30k.json).
        fetcher: ``fetcher(url, dest)`` downloads one file (tests pass a stand-in).

    Returns:
        the `prepare.json` record.

    Raises:
        PrepareError: a required file is missing, a download fails, or a downloaded file's checksum
            differs from the manifest.
    """
    out = Path(out)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise PrepareError(f"--data-dir {data_dir} is not a directory (it should hold train.en, train.fr, ...)")
    man = manifest if isinstance(manifest, dict) else load_manifest(manifest)
    base = (base_url or man["base_url"]).rstrip("/")
    origin = str(data_dir) if data_dir is not None else base
    out.mkdir(parents=True, exist_ok=True)
    splits, mismatches = {}, []
    for split in MULTI30K_SPLITS:
        entries = {lang: man["files"].get(f"{split}.{lang}") for lang in LANGS}
        if None in entries.values():
            continue
        texts = {}
        for lang, entry in entries.items():
            if data_dir is None:
                gz = out / "download" / f"{entry['upstream']}.{lang}.gz"
                data = _download_text(f"{base}/{entry['upstream']}.{lang}.gz", gz, fetcher)
            else:
                found = _find_local(Path(data_dir), split, lang, entry["upstream"])
                if found is None:
                    break
                data = _read_maybe_gz(found)
            texts[lang] = fix_multi30k(data.decode("utf-8")).encode("utf-8")
        if len(texts) < len(LANGS):
            if split in MULTI30K_REQUIRED:
                names = " or ".join(dict.fromkeys([f"{split}.{lang}", f"{entry['upstream']}.{lang}"]))
                raise PrepareError(f"{data_dir}: no {names} (plain or .gz): the directory must hold the Multi30k "
                                   f"files {', '.join(MULTI30K_REQUIRED)} in .en and .fr")
            continue
        infos = {}
        for lang, data in texts.items():
            digest, expected = hashlib.sha256(data).hexdigest(), entries[lang].get("sha256")
            if expected and digest != expected:
                if data_dir is None:
                    (out / "download" / f"{entries[lang]['upstream']}.{lang}.gz").unlink(missing_ok=True)
                    raise PrepareError(
                        f"checksum mismatch for {split}.{lang} from {base}: sha256 {digest}, the manifest says "
                        f"{expected}. The upstream file changed or the download is corrupt; the download was "
                        f"deleted: run again, or use --data-dir with a verified copy")
                mismatches.append(f"{split}.{lang}")
            write_atomic(out / f"{split}.{lang}", data)
            match = digest == expected if expected else None  # None: the manifest has no checksum for it
            infos[lang] = {**_file_info(out / f"{split}.{lang}"), "matches_manifest": match}
        if infos["en"]["lines"] != infos["fr"]["lines"]:
            raise PrepareError(f"{origin}: {split}.en has {infos['en']['lines']} lines but {split}.fr has "
                               f"{infos['fr']['lines']}: the files are not aligned")
        splits[split] = {"pairs": infos["en"]["lines"], "files": infos}
    if mismatches:
        print(f"seqed prepare: warning: {', '.join(mismatches)} in {data_dir} differ from the manifest's "
              f"checksums (not the published Multi30k text?); used as they are", file=sys.stderr)
    record = {"source": "multi30k", "origin": origin, "from": "download" if data_dir is None else "local",
              "fix": "&amp; -> &", "verified": not mismatches, "splits": splits}
    write_record(out, record)
    return record


# ---------------------------------------------------------------------------------------------
# Tatoeba


def split_by_source(sources: Sequence[str], *, valid: int, test: int, seed: int) -> dict[str, np.ndarray]:
    """Assign every pair to train/valid/test so that no source sentence is in two splits.

    Pairs are grouped by their source sentence (whitespace-normalised, case kept); the distinct
    sentences are sorted, shuffled with `seed`, and the first `test` go to test, the next `valid` to
    valid, the rest to train, each with all its pairs. The result depends on the set of sentences and
    the seed only, not on the file order.

    Args:
        sources: N source sentences.
        valid: distinct source sentences in the validation split.
        test: distinct source sentences in the test split.
        seed: shuffle seed.

    Returns:
        {"train", "valid", "test"} -> (n_split,) int64 pair indices, grouped by source sentence in
        shuffled order (pairs of one sentence stay in file order).
    """
    if valid < 0 or test < 0:
        raise PrepareError(f"valid and test sizes must be >= 0, got valid={valid}, test={test}")
    keys = [" ".join(s.split()) for s in sources]
    if not keys:
        raise PrepareError("no sentence pairs to split")
    uniq = sorted(set(keys))  # (U,) code point order: independent of the file order
    group = {key: i for i, key in enumerate(uniq)}
    inverse = np.fromiter((group[key] for key in keys), dtype=np.int64, count=len(keys))  # (N,) pair -> sentence
    if valid + test >= len(uniq):
        raise PrepareError(f"only {len(uniq)} distinct source sentences: cannot hold out valid={valid} + "
                           f"test={test} and keep any for training; lower --valid/--test")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(uniq))] = np.arange(len(uniq))  # (U,) shuffled position
    pair_rank = rank[inverse]  # (N,)
    order = np.lexsort((np.arange(len(keys)), pair_rank))  # (N,) by sentence rank, then file order
    ranks = pair_rank[order]
    return {"test": order[ranks < test],
            "valid": order[(ranks >= test) & (ranks < test + valid)],
            "train": order[ranks >= test + valid]}


def prepare_tatoeba(out: str | os.PathLike, *, tsv: str | os.PathLike, valid: int = 2000, test: int = 2000,
                    seed: int = 1, src_column: int = 0, tgt_column: int = 1) -> dict:
    """Tatoeba pairs (``english<TAB>french[<TAB>attribution]``) split by `split_by_source` into `out`.

    Pairs with an empty side are dropped and counted. `valid` and `test` count distinct English
    sentences (a sentence with several translations brings all of them).

    Returns:
        the `prepare.json` record.
    """
    out, tsv = Path(out), Path(tsv)
    src, tgt = read_tsv(tsv, src_column=src_column, tgt_column=tgt_column)
    total = len(src)
    keep = [i for i, (s, t) in enumerate(zip(src, tgt)) if s.strip() and t.strip()]
    src, tgt = [one_line(src[i]) for i in keep], [one_line(tgt[i]) for i in keep]
    parts = split_by_source(src, valid=valid, test=test, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in ("train", "valid", "test"):
        idx = parts[name].tolist()
        _write_lines(out / f"{name}.en", [src[i] for i in idx])
        _write_lines(out / f"{name}.fr", [tgt[i] for i in idx])
        splits[name] = {"pairs": len(idx), "sources": len({src[i] for i in idx}),
                        "files": {lang: _file_info(out / f"{name}.{lang}") for lang in LANGS}}
    record = {"source": "tatoeba", "origin": str(tsv), "origin_sha256": sha256_file(tsv), "seed": seed,
              "split": "by English sentence; valid/test count distinct English sentences",
              "dropped_empty": total - len(keep), "splits": splits}
    write_record(out, record)
    return record


# ---------------------------------------------------------------------------------------------
# WMT14


def _write_stream(out: Path, name: str, pairs: Iterable[tuple[str, str]], desc: str,
                  total: Optional[int]) -> dict:
    """Write (source, target) pairs to ``name.en`` / ``name.fr`` as they come; empty pairs are dropped."""
    paths = [out / f"{name}.{lang}" for lang in LANGS]
    tmps = [p.with_name(f".{p.name}.tmp") for p in paths]
    n = dropped = 0
    try:
        with open(tmps[0], "w", encoding="utf-8") as fs, open(tmps[1], "w", encoding="utf-8") as ft:
            for s, t in tqdm(pairs, desc=desc, total=total, unit=" pairs", disable=None, file=sys.stderr):
                s, t = one_line(s or ""), one_line(t or "")
                if not s or not t:
                    dropped += 1
                    continue
                fs.write(s + "\n")
                ft.write(t + "\n")
                n += 1
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in zip(tmps, paths):
        os.replace(tmp, path)
    return {"pairs": n, "dropped_empty": dropped, "files": {lang: _file_info(p) for lang, p in zip(LANGS, paths)}}


def _hub_pairs(name: str, config: Optional[str], split: str, *, limit: Optional[int], shuffle_seed: Optional[int],
               src_lang: str, tgt_lang: str):
    """Stream (source, target) pairs of a `datasets` split (rows with a `translation` dict)."""
    import datasets

    where = f"{name}/{config} split {split!r}"
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        if shuffle_seed is not None:
            ds = ds.shuffle(seed=shuffle_seed, buffer_size=10_000)  # shard order + a 10k-row buffer
        if limit is not None:
            ds = ds.take(limit)
        for n, row in enumerate(ds):  # streaming: rows are fetched while iterating
            pair = row.get("translation", row)
            if src_lang not in pair or tgt_lang not in pair:
                raise PrepareError(f"{where} row {n}: languages {sorted(pair)}, not {src_lang!r} and {tgt_lang!r}")
            yield pair[src_lang], pair[tgt_lang]
    except (ConnectionError, OSError) as err:
        raise PrepareError(f"cannot read {where} from the Hugging Face hub: {err}. This needs the network "
                           f"(or a filled HF_HOME cache); see recipes/README.md") from None


def sacrebleu_test_set(test_set: str = "wmt14", langpair: str = "en-fr") -> tuple[list[str], list[str]]:
    """Source and reference lines of a sacreBLEU test set (downloaded once into ~/.sacrebleu).

    Raises:
        PrepareError: sacreBLEU cannot fetch it (no network) or does not know it.
    """
    from sacrebleu import utils

    try:
        src = utils.get_source_file(test_set, langpair)
        ref = utils.get_reference_files(test_set, langpair)[0]
    except (Exception, SystemExit) as err:  # URLError offline; Exception for unknown sets; exit on bad md5
        raise PrepareError(f"sacreBLEU cannot provide {test_set} {langpair} (`sacrebleu -t {test_set} -l "
                           f"{langpair} --echo src` needs the network once; files are cached in ~/.sacrebleu or "
                           f"$SACREBLEU): {type(err).__name__}: {err}. Run it where there is network and copy "
                           f"the cache, or use --test hub / --test none") from None
    return read_lines(src), read_lines(ref)


def prepare_wmt14(out: str | os.PathLike, *, limit: Optional[int] = None, name: str = "wmt14",
                  config: str = "fr-en", test: str = "sacrebleu", shuffle_seed: Optional[int] = None,
                  src_lang: str = "en", tgt_lang: str = "fr") -> dict:
    """WMT14 English-French into `out`: train (hub, streamed), valid = newstest2013, test = newstest2014.

    Args:
        out: output directory.
        limit: at most this many training pairs (the hub's train split holds about 40.8M, and the trainer
            keeps the encoded corpus in memory).
        name, config: the hub dataset (``wmt14``, ``fr-en``); rows hold ``translation: {en, fr}``.
        test: ``sacrebleu`` (newstest2014 as sacreBLEU's ``-t wmt14 -l en-fr``), ``hub`` (the hub's test
            split) or ``none``.
        shuffle_seed: stream the training split in shuffled shard order through a 10k-pair buffer (the
            split is a concatenation of corpora: without shuffling, `limit` takes the first ones only).

    Returns:
        the `prepare.json` record.
    """
    if test not in ("sacrebleu", "hub", "none"):
        raise PrepareError(f"--test must be sacrebleu, hub or none, got {test!r}")
    if limit is not None and limit <= 0:
        raise PrepareError(f"--limit must be positive, got {limit}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    langs = dict(src_lang=src_lang, tgt_lang=tgt_lang)
    test_lines = sacrebleu_test_set("wmt14", f"{src_lang}-{tgt_lang}") if test == "sacrebleu" else None
    splits = {
        "train": _write_stream(out, "train", _hub_pairs(name, config, "train", limit=limit, shuffle_seed=shuffle_seed,
                                                        **langs), "wmt14 train", limit),
        "valid": _write_stream(out, "valid", _hub_pairs(name, config, "validation", limit=None, shuffle_seed=None,
                                                        **langs), "newstest2013", None),
    }
    if test == "sacrebleu":
        splits["test"] = _write_stream(out, "test", zip(*test_lines), "newstest2014", len(test_lines[0]))
    elif test == "hub":
        splits["test"] = _write_stream(out, "test", _hub_pairs(name, config, "test", limit=None, shuffle_seed=None,
                                                               **langs), "newstest2014", None)
    record = {"source": "wmt14", "origin": f"datasets:{name}/{config}", "limit": limit, "shuffle_seed": shuffle_seed,
              "valid": "newstest2013 (hub split 'validation')",
              "test": {"sacrebleu": "newstest2014 from sacreBLEU (-t wmt14 -l en-fr)",
                       "hub": "newstest2014 (hub split 'test')", "none": None}[test],
              "splits": splits}
    write_record(out, record)
    return record
