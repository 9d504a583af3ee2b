"""The one corpus reader: a corpus (text files, TSV, a `datasets` source) streamed as chunks of raw lines.

Every path that turns text into ids reads through `corpus_chunks`: the preprocessing workers (which decode
and encode the chunks in other processes), the in-memory training data, the validation set and the
convenience readers below (`read_lines`, `read_parallel`, `read_tsv`, `load_hf`, `load_corpus`). So each
data error (unaligned files, an empty file, bad UTF-8, a missing TSV column, an unset `$SEQED_DATA`) has
one message, naming the file and line.

Empty lines are kept so that files stay line-aligned; `seqed.data.filtering` drops and counts them.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Iterator, NamedTuple, Optional

from seqed.config import ConfigError, CorpusConfig, expand_path
from seqed.errors import SeqedError
from seqed.files import decode_lines, open_lines

CHUNK = 8192            # pairs per chunk (one encoding job)
LOCAL_BUILDERS = ("json", "csv", "parquet", "text")


class DataError(SeqedError, ValueError):
    """A corpus that cannot be read or trained on; the message says what, where, and what to do."""


class Chunk(NamedTuple):
    """Consecutive pairs of one corpus, as read.

    kind: "text" or "tsv" (`src`/`tgt` are raw lines as bytes, decoded by `decode_chunk`, possibly in
        another process) or "str" (already text, from a `datasets` source).
    src: the source lines (a TSV's whole lines).
    tgt: the target lines; None for a TSV, a monolingual corpus, or when target = source.
    start: the 1-based line number (row number for "str") of the first pair.
    names: the file each side comes from (one name when both sides share it).
    """

    kind: str
    src: list
    tgt: Optional[list]
    start: int
    names: list


# ---------------------------------------------------------------------------------------------
# which files


def input_files(spec: CorpusConfig, monolingual: bool) -> list[str]:
    """The local files a corpus reads, expanded (hub datasets and globs have none to check or fingerprint)."""
    return [expand_path(path) for _, path in _named_files(spec, monolingual)]


def _named_files(spec: CorpusConfig, monolingual: bool) -> list[tuple[str, str]]:
    """(field, configured path) of each local file the corpus reads."""
    if spec.format == "text":
        fields = ["path" if spec.path else "src"] if (monolingual or (spec.path and not spec.tgt)) else ["src", "tgt"]
    elif spec.format == "tsv":
        fields = ["path"]
    else:
        fields = ["data_files"] if spec.data_files and "*" not in spec.data_files else []
    return [(f, getattr(spec, f)) for f in fields if getattr(spec, f)]


def check_variables(spec: CorpusConfig, name: str, monolingual: bool = False) -> None:
    """ConfigError when a path of the corpus uses an environment variable that is not set.

    Args:
        spec: the corpus.
        name: its config key, e.g. "data.train" or "data.train[1]".
    """
    for field, path in _named_files(spec, monolingual):
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", path):
            if var not in os.environ:
                after = path.split(var, 1)[1].lstrip("}/").split("/")[0]
                folder = f"the folder holding {after}/" if after else "its folder"
                raise ConfigError(f"{name}.{field} uses ${var}, which is not set: set {var} to {folder} "
                                  f"(e.g. `export {var}=/path/to/data`; see recipes/README.md)")


# ---------------------------------------------------------------------------------------------
# reading


def corpus_chunks(spec: CorpusConfig, *, src_lang: str = "en", tgt_lang: str = "fr", monolingual: bool = False,
                  name: str = "data.train", streaming: bool = True) -> Iterator[Chunk]:
    """The pairs of the corpus `spec`, chunk by chunk, in file order; `spec.limit` pairs at most.

    Args:
        spec: the corpus.
        src_lang, tgt_lang: the `datasets` columns (or `translation` keys) of each side.
        monolingual: target = source (autoencoders): one file, TSV column or `datasets` column.
        name: the corpus' config key, for messages.
        streaming: stream a `datasets` source (constant memory) instead of loading it first (faster).
    """
    check_variables(spec, name, monolingual)
    limit = spec.limit if spec.limit and spec.limit > 0 else None
    if spec.format == "text":
        if not spec.src and not spec.path:
            raise ConfigError("a text corpus needs `src` and `tgt` files (or `path` for monolingual data)")
        if not monolingual and not spec.path and not (spec.src and spec.tgt):
            raise ConfigError("a parallel text corpus needs both `src` and `tgt` paths")
        return _line_chunks(input_files(spec, monolingual), "text", limit)
    if spec.format == "tsv":
        if not spec.path:
            raise ConfigError("a tsv corpus needs `path`")
        if min(spec.src_column, spec.tgt_column) < 0:
            raise ConfigError(f"{name}: columns must be >= 0, got src_column={spec.src_column}, "
                              f"tgt_column={spec.tgt_column}")
        return _line_chunks(input_files(spec, monolingual), "tsv", limit)
    if spec.format == "hf":
        if not spec.name:
            raise ConfigError("an hf corpus needs `name` (a hub dataset or json/csv/parquet/text)")
        files = expand_path(spec.data_files) if spec.data_files else None
        return _hf_chunks(spec.name, config=spec.config, split=spec.split, src_lang=src_lang, tgt_lang=tgt_lang,
                          data_files=files, src_field=spec.src_field, tgt_field=spec.tgt_field, limit=limit,
                          monolingual=monolingual, streaming=streaming)
    raise ConfigError(f"unknown corpus format {spec.format!r}: use text, tsv or hf")


def _count_rest(f) -> int:
    """Lines left in a binary file (a last line without "\\n" counts)."""
    n, last = 0, b"\n"
    for block in iter(lambda: f.read(1 << 20), b""):
        n += block.count(b"\n")
        last = block[-1:]
    return n + (last != b"\n")


def _line_chunks(files: list[str], kind: str, limit: Optional[int]) -> Iterator[Chunk]:
    """Chunks of raw lines of one file, or of two line-aligned files read side by side."""
    handles = [open_lines(f) for f in files]
    try:
        lines = itertools.zip_longest(*handles)
        start = 1
        while True:
            want = CHUNK if limit is None else min(CHUNK, limit - start + 1)
            chunk = list(itertools.islice(lines, want)) if want > 0 else []
            if not chunk:
                break
            short = next((i for i, pair in enumerate(chunk) if None in pair), None)
            if short is not None:  # one file ended before the other
                ended = chunk[short].index(None)
                counts = [start + short - 1] * 2
                counts[1 - ended] += len(chunk) - short + _count_rest(handles[1 - ended])
                if counts[ended] == 0:
                    files = [files[ended]]
                    break
                raise DataError(f"parallel files are not aligned: {files[0]} has {counts[0]} lines but {files[1]} "
                                f"has {counts[1]}: check that they are the two sides of the same corpus")
            cols = list(zip(*chunk))
            yield Chunk(kind, list(cols[0]), list(cols[1]) if len(cols) > 1 else None, start, files)
            start += len(chunk)
        if start == 1:  # no line at all (in one of the files)
            raise DataError(f"{files[0]} is empty: expected one sentence per line")
    finally:
        for h in handles:
            h.close()


def _check_local_files(data_files) -> None:
    """FileNotFoundError for a local data file that does not exist (globs and URLs pass through)."""
    groups = list(data_files.values()) if isinstance(data_files, dict) else [data_files]
    for group in groups:
        for f in ([group] if isinstance(group, (str, os.PathLike)) else list(group)):
            f = os.fspath(f)
            if "://" not in f and not any(c in f for c in "*?[") and not os.path.exists(f):
                raise FileNotFoundError(f"load_hf: data file {f} does not exist")


def _as_text(values) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def _hf_chunks(name_or_format: str, *, config: Optional[str], split: str, src_lang: str, tgt_lang: str,
               data_files, src_field: Optional[str], tgt_field: Optional[str], limit: Optional[int],
               monolingual: bool, streaming: bool) -> Iterator[Chunk]:
    """Chunks of text pairs from a `datasets` source (see `load_hf`)."""
    import datasets  # lazy: not needed (nor installed) where only inference runs

    if name_or_format in LOCAL_BUILDERS:
        if data_files is None:
            raise ValueError(f"load_hf({name_or_format!r}) reads local files: pass data_files=<path(s)>")
        _check_local_files(data_files)
        ds = datasets.load_dataset(name_or_format, data_files=data_files, split=split, streaming=streaming)
        if name_or_format == "text":
            src_field, tgt_field = src_field or "text", tgt_field or "text"
    else:
        ds = datasets.load_dataset(name_or_format, config, split=split, streaming=streaming, data_files=data_files)
    where = f"{name_or_format}" + (f"/{config}" if config else "") + f" split {split!r}"
    columns = list(ds.column_names or [])
    use_translation = "translation" in columns and src_field is None and tgt_field is None
    src_key = src_field or src_lang
    tgt_key = src_key if monolingual else (tgt_field or tgt_lang)
    if not use_translation and columns:
        missing = [k for k in dict.fromkeys((src_key, tgt_key)) if k not in columns]
        if missing:
            raise DataError(f"load_hf {where}: no column {', '.join(map(repr, missing))}; columns are {columns}: "
                            f"set src_field/tgt_field (or src_lang/tgt_lang for a `translation` column)")
    if not streaming:  # columns at once through arrow, then cut into chunks
        if limit is not None and limit < len(ds):
            ds = ds.select(range(limit))
        if use_translation:
            cols = ds.select_columns(["translation"]).flatten().to_dict()  # {"translation.en": [...], ...}
            langs = [c.split(".", 1)[1] for c in cols]
            missing = [k for k in (src_key, tgt_key) if k not in langs]
            if missing:
                raise DataError(f"load_hf {where}: translation has languages {langs}, not "
                                f"{', '.join(map(repr, missing))}: set src_lang/tgt_lang")
            src, tgt = cols[f"translation.{src_key}"], cols[f"translation.{tgt_key}"]
        else:
            cols = ds.select_columns(list(dict.fromkeys([src_key, tgt_key]))).to_dict()
            src, tgt = cols[src_key], cols[tgt_key]
        for i in range(0, len(src), CHUNK):
            yield Chunk("str", _as_text(src[i: i + CHUNK]), _as_text(tgt[i: i + CHUNK]), i + 1, [where])
        return
    rows = iter(ds if limit is None else ds.take(limit))
    start = 1
    while chunk := list(itertools.islice(rows, CHUNK)):
        src, tgt = [], []
        for n, row in enumerate(chunk):
            nested = "translation" in row and src_field is None and tgt_field is None
            pair = row["translation"] if nested else row
            if src_key not in pair or tgt_key not in pair:
                raise DataError(f"load_hf {where}: row {start + n - 1} has {'languages' if nested else 'columns'} "
                                f"{sorted(pair)}, not {src_key!r} and {tgt_key!r}: set src_lang/tgt_lang or "
                                f"src_field/tgt_field")
            src.append(pair[src_key])
            tgt.append(pair[tgt_key])
        yield Chunk("str", _as_text(src), _as_text(tgt), start, [where])
        start += len(chunk)


def decode_chunk(chunk: Chunk, src_column: int = 0, tgt_column: int = 1,
                 monolingual: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(sources, targets, where) of one chunk, `where` naming the file each side's lines come from.

    Raises:
        ValueError: bad UTF-8 (file:line), or a TSV line with too few fields (DataError).
    """
    kind, a, b, start, names = chunk
    if kind == "str":
        return a, (a if b is None else b), [names[0], names[0]]
    src = decode_lines(a, names[0], start)
    if kind == "tsv":
        rows = [line.split("\t") for line in src]
        need = src_column + 1 if monolingual else max(src_column, tgt_column) + 1
        for i, row in enumerate(rows):
            if len(row) < need:
                raise DataError(f"{names[0]}:{start + i}: {len(row)} tab-separated field(s), need at least {need} "
                                f"(src_column={src_column}, tgt_column={tgt_column}): fix or remove the line, or "
                                f"check the columns")
        src = [r[src_column] for r in rows]
        return src, (src if monolingual else [r[tgt_column] for r in rows]), [names[0], names[0]]
    if b is None:
        return src, src, [names[0], names[0]]
    return src, decode_lines(b, names[1], start), names


def load_corpus(spec: CorpusConfig, *, src_lang: str = "en", tgt_lang: str = "fr", monolingual: bool = False,
                name: str = "data.train") -> tuple[list[str], list[str]]:
    """Every pair of the corpus `spec` in memory (validation sets, small corpora, tests).

    With `monolingual=True` (autoencoders) the target is the source: `text` reads `path` (or `src`),
    `tsv` reads column `src_column`, `hf` reads the `src_lang` side.

    Returns:
        (sources, targets), aligned lists of raw sentences.
    """
    src: list[str] = []
    tgt: list[str] = []
    for chunk in corpus_chunks(spec, src_lang=src_lang, tgt_lang=tgt_lang, monolingual=monolingual, name=name,
                               streaming=False):
        s, t, _ = decode_chunk(chunk, spec.src_column, spec.tgt_column, monolingual)
        src += s
        tgt += t
    return src, tgt


# ---------------------------------------------------------------------------------------------
# convenience readers (corpus preparation, benchmarks)


def read_lines(path) -> list[str]:
    """One string per line of a UTF-8 file, without the trailing "\\n" or "\\r\\n"; empty lines kept."""
    return load_corpus(CorpusConfig(format="text", path=os.fspath(path)), monolingual=True, name=os.fspath(path))[0]


def read_monolingual(path) -> list[str]:
    """One sentence per line (autoencoder data); empty lines are kept for the filter to count."""
    return read_lines(path)


def read_parallel(src_path, tgt_path) -> tuple[list[str], list[str]]:
    """Two line-aligned files; returns (sources, targets) of equal length."""
    return load_corpus(CorpusConfig(format="text", src=os.fspath(src_path), tgt=os.fspath(tgt_path)))


def read_tsv(path, *, src_column: int = 0, tgt_column: int = 1) -> tuple[list[str], list[str]]:
    """Tab-separated pairs, e.g. Tatoeba's `english<TAB>french` export (0-based columns)."""
    return load_corpus(CorpusConfig(format="tsv", path=os.fspath(path), src_column=src_column,
                                    tgt_column=tgt_column), name=os.fspath(path))


def load_hf(name_or_format: str, *, config: Optional[str] = None, split: str = "train", src_lang: str = "en",
            tgt_lang: str = "fr", data_files=None, src_field: Optional[str] = None, tgt_field: Optional[str] = None,
            streaming: bool = False, limit: Optional[int] = None) -> tuple[list[str], list[str]]:
    """Sentence pairs from a `datasets` source.

    Either a hub dataset (`"wmt14"`, config `"fr-en"`) or a local builder (`"json"`, `"csv"`, `"parquet"`,
    `"text"`) with `data_files`. Rows hold either a `translation` dict (`{"en": ..., "fr": ...}`) or flat
    columns `src_field` / `tgt_field` (default: columns named `src_lang` / `tgt_lang`). The `text` builder
    has one `text` column, which is used for both sides (monolingual data).

    Args:
        name_or_format: hub name or local builder name.
        config: hub configuration (language pair), e.g. "fr-en".
        split: which split to read.
        src_lang, tgt_lang: keys of the `translation` dict, and default column names.
        data_files: path(s) for a local builder (str, list, or dict split -> paths).
        src_field, tgt_field: flat column names.
        streaming: iterate without downloading the whole dataset first.
        limit: read at most this many rows.

    Returns:
        (sources, targets).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"load_hf: limit must be >= 0 or None, got {limit}")
    src: list[str] = []
    tgt: list[str] = []
    for chunk in _hf_chunks(name_or_format, config=config, split=split, src_lang=src_lang, tgt_lang=tgt_lang,
                            data_files=data_files, src_field=src_field, tgt_field=tgt_field, limit=limit,
                            monolingual=False, streaming=streaming):
        src += chunk.src
        tgt += chunk.tgt
    return src, tgt
