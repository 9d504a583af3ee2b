"""Reading corpora into aligned lists of raw sentences: text files, TSV, and `datasets` sources.

Empty lines are kept so that files stay line-aligned; `seqed.data.filtering` drops and counts them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

LOCAL_BUILDERS = ("json", "csv", "parquet", "text")


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 (an optional BOM is dropped); a bad byte becomes a ValueError naming file and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); convert the file "
            f"first, e.g. `iconv -f latin1 -t utf-8 {path} > {path.name}.utf8`") from None


def read_lines(path, *, strict: bool = False) -> list[str]:
    """One string per line, without the trailing "\\n" or "\\r\\n".

    Only "\\n" separates lines (not the other Unicode line breaks, which would break alignment).

    Args:
        path: a UTF-8 text file.
        strict: raise on an empty line instead of keeping it for the filtering step to count.

    Returns:
        the lines, in order.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    text = _decode(path, path.read_bytes())
    if not text:
        raise ValueError(f"{path} is empty: expected one sentence per line")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    if lines and lines[-1].endswith("\r"):
        lines[-1] = lines[-1][:-1]
    if strict:
        empty = [i for i, line in enumerate(lines) if not line.strip()]
        if empty:
            raise ValueError(f"{path}:{empty[0] + 1}: empty line ({len(empty)} in the file) while strict is on: "
                             f"remove them, or turn strict off to drop the pairs and count them")
    return lines


def read_monolingual(path) -> list[str]:
    """One sentence per line (autoencoder data); empty lines are kept for the filter to count."""
    return read_lines(path)


def read_parallel(src_path, tgt_path, *, strict: bool = False) -> tuple[list[str], list[str]]:
    """Two line-aligned files.

    Returns:
        (sources, targets) of equal length.
    """
    src = read_lines(src_path, strict=strict)
    tgt = read_lines(tgt_path, strict=strict)
    if len(src) != len(tgt):
        raise ValueError(f"parallel files are not aligned: {src_path} has {len(src)} lines but {tgt_path} has "
                         f"{len(tgt)}; check that they are the two sides of the same corpus")
    return src, tgt


def read_tsv(path, *, src_column: int = 0, tgt_column: int = 1) -> tuple[list[str], list[str]]:
    """Tab-separated pairs, e.g. Tatoeba's `english<TAB>french` export.

    Args:
        path: a UTF-8 file, one pair per line.
        src_column: 0-based column of the source sentence.
        tgt_column: 0-based column of the target sentence.

    Returns:
        (sources, targets).
    """
    if min(src_column, tgt_column) < 0:
        raise ValueError(f"read_tsv: columns must be >= 0, got src_column={src_column}, tgt_column={tgt_column}")
    lines = read_lines(path)
    rows = [line.split("\t") for line in lines]
    need = max(src_column, tgt_column) + 1
    bad = [i for i, row in enumerate(rows) if len(row) < need]
    if bad:
        i = bad[0]
        raise ValueError(f"{path}:{i + 1}: {len(rows[i])} tab-separated field(s), need at least {need} "
                         f"(src_column={src_column}, tgt_column={tgt_column}); {len(bad)} such line(s) in the file: "
                         f"fix or remove them, or check the columns")
    return [row[src_column] for row in rows], [row[tgt_column] for row in rows]


def _check_local_files(data_files) -> None:
    """FileNotFoundError for a local data file that does not exist (globs and URLs pass through)."""
    if isinstance(data_files, dict):
        groups = list(data_files.values())
    else:
        groups = [data_files]
    for group in groups:
        for f in ([group] if isinstance(group, (str, os.PathLike)) else list(group)):
            f = os.fspath(f)
            if "://" in f or any(c in f for c in "*?["):
                continue
            if not os.path.exists(f):
                raise FileNotFoundError(f"load_hf: data file {f} does not exist")


def _as_text(values) -> list[str]:
    return ["" if v is None else str(v) for v in values]


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
    import datasets  # lazy: not needed (nor installed) where only inference runs

    if limit is not None and limit < 0:
        raise ValueError(f"load_hf: limit must be >= 0 or None, got {limit}")
    if name_or_format in LOCAL_BUILDERS:
        if data_files is None:
            raise ValueError(f"load_hf({name_or_format!r}) reads local files: pass data_files=<path(s)>")
        _check_local_files(data_files)
        ds = datasets.load_dataset(name_or_format, data_files=data_files, split=split, streaming=streaming)
        if name_or_format == "text":
            src_field, tgt_field = src_field or "text", tgt_field or "text"
    else:
        ds = datasets.load_dataset(name_or_format, config, split=split, streaming=streaming,
                                   data_files=data_files)
    where = f"{name_or_format}" + (f"/{config}" if config else "") + f" split {split!r}"

    columns = list(ds.column_names or [])
    use_translation = "translation" in columns and src_field is None and tgt_field is None
    src_key = src_field or src_lang
    tgt_key = tgt_field or tgt_lang
    if not use_translation and columns:
        missing = [k for k in (src_key, tgt_key) if k not in columns]
        if missing:
            raise ValueError(f"load_hf {where}: no column {', '.join(map(repr, missing))}; columns are {columns}: "
                             f"set src_field/tgt_field (or src_lang/tgt_lang for a `translation` column)")

    if streaming:
        rows = ds if limit is None else ds.take(limit)
        src, tgt = [], []
        for n, row in enumerate(rows):
            nested = "translation" in row and src_field is None and tgt_field is None
            pair = row["translation"] if nested else row
            if src_key not in pair or tgt_key not in pair:
                raise ValueError(f"load_hf {where}: row {n} has {'languages' if nested else 'columns'} "
                                 f"{sorted(pair)}, not {src_key!r} and {tgt_key!r}: set src_lang/tgt_lang "
                                 f"or src_field/tgt_field")
            src.append(pair[src_key])
            tgt.append(pair[tgt_key])
        return _as_text(src), _as_text(tgt)

    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    if use_translation:
        flat = ds.select_columns(["translation"]).flatten().to_dict()  # {"translation.en": [...], ...}
        langs = [c.split(".", 1)[1] for c in flat]
        missing = [k for k in (src_key, tgt_key) if k not in langs]
        if missing:
            raise ValueError(f"load_hf {where}: translation has languages {langs}, not "
                             f"{', '.join(map(repr, missing))}: set src_lang/tgt_lang")
        return _as_text(flat[f"translation.{src_key}"]), _as_text(flat[f"translation.{tgt_key}"])
    cols = ds.select_columns(list(dict.fromkeys([src_key, tgt_key]))).to_dict()
    return _as_text(cols[src_key]), _as_text(cols[tgt_key])
