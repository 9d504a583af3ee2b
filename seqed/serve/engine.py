"""One served model behind one interface, whichever engine runs it: seqed's own search or its
CTranslate2 export.

This is the only module of `seqed.serve` that knows how translators are built and how decoding
options reach them; the batcher and the routes see `Engine` alone.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from seqed.search import Hypothesis

ENGINES = ("seqed", "ctranslate2")


@dataclass(frozen=True)
class DecodeOptions:
    """What a request may choose about decoding; requests with equal options share one model call.

    Attributes:
        beam: beam size (1: greedy search).
        nbest: hypotheses per sentence (<= beam).
        length_penalty: GNMT alpha (see `seqed.search.LengthPenalty`).
        alignment: fill each hypothesis's `alignment` (seqed's engine only).
    """

    beam: int
    nbest: int = 1
    length_penalty: float = 1.0
    alignment: bool = False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_results(checkpoint: Path) -> Optional[dict]:
    """Test BLEU and sacreBLEU signatures from the `results.json` a recipe wrote beside `checkpoint`.

    Returns:
        None without a results file; else ``{"checkpoint": the file the results were decoded with,
        "same_checkpoint": whether that is `checkpoint`, "tests": {name: {"bleu", "bleu_signature",
        "beam", "sentences"}}}``.
    """
    path = checkpoint.parent / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or not isinstance(results.get("tests"), dict):
        return None
    tests = {name: {k: t.get(k) for k in ("bleu", "bleu_signature", "beam", "sentences")}
             for name, t in results["tests"].items() if isinstance(t, dict)}
    return {"checkpoint": results.get("checkpoint"), "same_checkpoint": results.get("checkpoint") == checkpoint.name,
            "tests": tests}


class Engine:
    """A loaded model with its tokenizer, decoding defaults and limits; `translate_ids` per call options.

    Not thread-safe: one worker thread (`seqed.serve.batcher.Batcher`) owns it.

    Args:
        name: the name requests use.
        kind: "seqed" or "ctranslate2".
        translator: a `seqed.translator.Translator` or `seqed.translator_ct2.CTranslate2Translator`.
        languages: (source, target) language codes.
        checkpoint: the file that holds the weights (hashed for /v1/models).
        results: see `run_results`.
    """

    def __init__(self, name: str, kind: str, translator, *, languages: tuple[str, str], checkpoint: Path,
                 results: Optional[dict] = None):
        self.name, self.kind, self.translator = name, kind, translator
        self.tokenizer = translator.tokenizer
        self.languages = languages
        self.checkpoint = checkpoint
        self.sha256 = file_sha256(checkpoint)
        self.results = results
        s = translator.settings
        self.defaults = DecodeOptions(beam=s.beam, nbest=s.nbest, length_penalty=s.length_penalty)
        self.max_pieces = s.max_src_len - 1  # the model's positions also hold EOS

    @property
    def supports_alignment(self) -> bool:
        return self.kind == "seqed"

    @property
    def length_limits(self) -> dict:
        """Output length limit ``a * |src| + b`` and the least output length."""
        s = self.translator.settings
        return {"max_len_a": s.max_len_a, "max_len_b": s.max_len_b, "min_len": s.min_len}

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """Source piece ids of each sentence ([] for a blank one, which the model never sees)."""
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        ids = self.tokenizer.encode_src([sentences[i] for i in todo]) if todo else []
        out: list[list[int]] = [[] for _ in sentences]
        for i, x in zip(todo, ids):
            out[i] = x
        return out

    def translate_ids(self, ids: Sequence[Sequence[int]], options: DecodeOptions) -> list[list[Hypothesis]]:
        """One translate call: per sentence its `options.nbest` hypotheses, best first (an empty one for [])."""
        settings = self.translator.settings.replace(beam=options.beam, nbest=options.nbest,
                                                    length_penalty=options.length_penalty, alignment=options.alignment)
        return self.translator.translate_ids(ids, settings)

    def detokenize(self, hyps: Sequence[Sequence[Hypothesis]]) -> list[list[str]]:
        return self.translator.detokenize(hyps)

    def source_pieces(self, ids: Sequence[int]) -> list[str]:
        return self.tokenizer.src_id_to_piece(ids)

    def target_pieces(self, ids: Sequence[int]) -> list[str]:
        return self.tokenizer.tgt_id_to_piece(ids)

    def close(self) -> None:
        self.translator = None  # an on-the-fly CTranslate2 export goes with its translator


def load_engine(name: str, path: str, kind: str, settings: argparse.Namespace) -> Engine:
    """Load `path` (checkpoint or run directory, run by engine `kind`; or a `seqed export` directory,
    always run by CTranslate2) with the search options of `settings` (`seqed.cli.options.add_search_args`'
    names, plus `quantization` and `threads`); unset ones default to the checkpoint's `search` section.

    Raises:
        ValueError, OSError, CheckpointError, ExportError: as `seqed translate` would for the same options.
    """
    from seqed.checkpoint import checkpoint_file, load_checkpoint
    from seqed.cli.options import load_translator
    from seqed.export import EXPORT_META, read_export_meta

    if kind not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {kind!r}")
    exported = (Path(path) / EXPORT_META).is_file()
    args = copy.copy(settings)
    args.checkpoint, args.engine = path, "ctranslate2" if exported else kind  # an export always runs on CTranslate2
    args.sampling = args.temperature = args.seed = None
    args.print_alignment = False
    translator = load_translator(args, progress=False)
    if exported:
        meta = read_export_meta(path)
        weights, languages = Path(path) / "model.bin", tuple(meta.get("languages") or ("en", "fr"))
        try:  # the checkpoint it was exported from, if still there, may have a recipe's results
            results = run_results(checkpoint_file(meta.get("checkpoint", "")))
        except OSError:
            results = None
    else:
        weights = checkpoint_file(path)
        languages, results = _languages(load_checkpoint(weights)["config"]), run_results(weights)
    return Engine(name, args.engine, translator, languages=languages, checkpoint=weights, results=results)


def _languages(config: dict) -> tuple[str, str]:
    data = config.get("data", {})
    return data.get("src_lang", "en"), data.get("tgt_lang", "fr")
