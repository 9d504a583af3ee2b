"""Config-driven corpus loading: a `CorpusConfig` to aligned source/target sentence lists."""

from __future__ import annotations

from seqed.config import ConfigError, CorpusConfig, expand_path
from seqed.data.corpus import load_hf, read_lines, read_parallel, read_tsv


def load_corpus(spec: CorpusConfig, *, src_lang: str = "en", tgt_lang: str = "fr", strict: bool = False,
                monolingual: bool = False) -> tuple[list[str], list[str]]:
    """Read the corpus a `CorpusConfig` names.

    With `monolingual=True` (autoencoders) the target is the source: `text` reads `path` (or `src`),
    `tsv` reads column `src_column`, `hf` reads the `src_lang` side.

    Returns:
        (sources, targets), aligned lists of raw sentences.
    """
    fmt = spec.format
    if fmt == "text":
        if monolingual or (spec.path and not spec.tgt):
            path = spec.path or spec.src
            if not path:
                raise ConfigError("a text corpus needs `src` and `tgt` files (or `path` for monolingual data)")
            lines = read_lines(expand_path(path), strict=strict)
            src, tgt = lines, list(lines)
        else:
            if not spec.src or not spec.tgt:
                raise ConfigError("a parallel text corpus needs both `src` and `tgt` paths")
            src, tgt = read_parallel(expand_path(spec.src), expand_path(spec.tgt))
    elif fmt == "tsv":
        if not spec.path:
            raise ConfigError("a tsv corpus needs `path`")
        src, tgt = read_tsv(expand_path(spec.path), src_column=spec.src_column, tgt_column=spec.tgt_column)
        if monolingual:
            tgt = list(src)
    elif fmt == "hf":
        if not spec.name:
            raise ConfigError("an hf corpus needs `name` (a hub dataset or json/csv/parquet/text)")
        files = expand_path(spec.data_files) if spec.data_files else None
        src, tgt = load_hf(spec.name, config=spec.config, split=spec.split, src_lang=src_lang,
                           tgt_lang=tgt_lang, data_files=files, src_field=spec.src_field,
                           tgt_field=spec.tgt_field, limit=spec.limit)
        if monolingual:
            tgt = list(src)
    else:
        raise ConfigError(f"unknown corpus format {fmt!r}: use text, tsv or hf")
    if spec.limit is not None and spec.limit > 0:
        src, tgt = src[: spec.limit], tgt[: spec.limit]
    return src, tgt
