"""Shared pieces of the benchmark scripts: paths, model configs, environment records, results and tables.

Every script writes one JSON file under `benchmarks/results/` (the numbers, the configuration, the
versions, thread counts and the machine's load while it ran) and rewrites its own table in
`benchmarks/README.md` from that file, between `<!-- BEGIN name -->` and `<!-- END name -->`.
Tables are only ever built from results files, never typed in.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
WORK = BENCH / "work"          # gitignored: venvs, piece files, scratch runs
README = BENCH / "README.md"

# The two model sizes of issue 5, as `seqed train` overrides (the YAML recipe may change; these do not).
MODELS = {
    # 3+3 pre-norm layers, d 256, 4 heads, FFN 1024, shared embeddings tied to the output layer.
    "transformer": [
        "model.encoder.type=transformer", "model.decoder.type=transformer",
        "model.encoder.layers=3", "model.decoder.layers=3", "model.encoder.hidden=256", "model.decoder.hidden=256",
        "model.encoder.heads=4", "model.decoder.heads=4", "model.encoder.ffn=1024", "model.decoder.ffn=1024",
        "model.encoder.dropout=0.1", "model.decoder.dropout=0.1",
        "model.encoder.attention_dropout=0.0", "model.decoder.attention_dropout=0.0",
        "model.share_embeddings=true", "model.tie_output=true",
    ],
    # 2-layer bidirectional LSTM encoder (256 per direction), 2-layer LSTM decoder with Bahdanau attention
    # and input feeding (Bahdanau et al. 2015; Luong et al. 2015).
    "rnn": [
        "model.encoder.type=rnn", "model.decoder.type=rnn", "model.encoder.cell=lstm", "model.decoder.cell=lstm",
        "model.encoder.layers=2", "model.decoder.layers=2", "model.encoder.hidden=256", "model.decoder.hidden=256",
        "model.encoder.bidirectional=true", "model.decoder.attention=bahdanau", "model.decoder.input_feeding=true",
        "model.encoder.dropout=0.1", "model.decoder.dropout=0.1",
        "model.share_embeddings=true", "model.tie_output=true",
    ],
}

# Data, tokenizer and optimisation shared by every training benchmark (issue 5: joint SentencePiece 8k,
# batches of 4096 tokens; fairseq's reference recipe: 100 warm-up steps to lr 2e-3).
COMMON = [
    "data.max_len=100", "data.max_ratio=3.0",
    "tokenizer.type=unigram", "tokenizer.vocab_size=8000", "tokenizer.joint=true",
    "train.optimizer=adamw", "train.lr=2e-3", "train.warmup=100", "train.label_smoothing=0.1", "train.clip=1.0",
    "train.max_tokens=4096", "train.seed=1",
]


class BenchError(Exception):
    """A predictable mistake (missing data, missing venv, bad argument); printed without a traceback."""


def fail(prog: str, err: Exception) -> int:
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2


def data_dir() -> Path:
    """The directory holding `multi30k/`: $SEQED_DATA when set, else ../shared/data beside the repository."""
    if os.environ.get("SEQED_DATA"):
        candidates = [os.environ["SEQED_DATA"]]  # set on purpose: no silent fallback to other data
    else:
        candidates = [str(REPO.parent / "shared" / "data"), "/work/shared/data"]
    for c in candidates:
        if (Path(c) / "multi30k" / "train.en").is_file():
            return Path(os.path.abspath(c))  # so `portable_paths` names it $SEQED_DATA even when set relative
    raise BenchError(f"no multi30k/train.en under {' or '.join(candidates)}: set SEQED_DATA to the directory "
                     f"that holds multi30k/ (see data/ manifests)")


def train_overrides(model: str, data: Path, *, extra: Sequence[str] = ()) -> list[str]:
    """`seqed train` overrides for `model` ("transformer" | "rnn") on Multi30k train (no validation set)."""
    if model not in MODELS:
        raise BenchError(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
    m30k = data / "multi30k"
    corpus = f"data.train={{format: text, src: {m30k / 'train.en'}, tgt: {m30k / 'train.fr'}}}"
    return [corpus, *COMMON, *MODELS[model], *extra]


def add_test_set_args(p) -> None:
    """--src/--ref of a decoding benchmark (read by `test_set`; --limit stays each script's own)."""
    p.add_argument("--src", default=None, help="source file (default $SEQED_DATA/multi30k/test2016.en)")
    p.add_argument("--ref", default=None, help="reference file (default $SEQED_DATA/multi30k/test2016.fr)")


def add_output_args(p, section: str) -> None:
    """--out (default benchmarks/results/SECTION.json) and --no-readme (read by `publish`'s callers)."""
    p.add_argument("--out", default=str(RESULTS / f"{section}.json"), help="results JSON")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the tables in benchmarks/README.md")


def test_set(args) -> tuple[list[str], list[str]]:
    """Source and reference lines of `args.src` / `args.ref` (default: Multi30k test2016 under the data
    directory, filled into `args`), the first `args.limit` when set."""
    from seqed.data.corpus import read_lines

    if args.src is None or args.ref is None:
        m30k = data_dir() / "multi30k"
        args.src = args.src or str(m30k / "test2016.en")
        args.ref = args.ref or str(m30k / "test2016.fr")
    sentences, refs = read_lines(args.src), read_lines(args.ref)
    if len(sentences) != len(refs):
        raise BenchError(f"{args.src} has {len(sentences)} lines but {args.ref} has {len(refs)}")
    if args.limit:
        sentences, refs = sentences[: args.limit], refs[: args.limit]
    return sentences, refs


def git_revision() -> dict:
    """The commit the numbers belong to and whether the tree had uncommitted changes (read-only git calls)."""
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def environment(threads: Optional[int] = None) -> dict:
    """Versions, threads and machine facts for a results file; `loadavg` tells whether the machine was quiet."""
    import torch

    from seqed.precision import resolve
    from seqed.runtime import cpu_model, versions

    env = {"versions": versions(), "torch_threads": torch.get_num_threads(),
           "torch_interop_threads": torch.get_num_interop_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": cpu_model(),
           "cpu_count": os.cpu_count(),
           "loadavg": [round(x, 2) for x in os.getloadavg()], "git": git_revision(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv}
    if threads is not None:
        env["threads_requested"] = threads
    env["precision_auto"] = {"cpu": resolve("auto", "cpu")}  # what precision: auto resolves to here
    if torch.cuda.is_available():
        env["cuda"] = {"device": torch.cuda.get_device_name(), "version": torch.version.cuda}
        env["precision_auto"]["cuda"] = resolve("auto", "cuda")
    return env


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (0 keeps torch's default)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def peak_memory_mb(device) -> float:
    """Peak memory of this process: CUDA `max_memory_allocated`, else the max resident set size (Linux: KiB)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_env(threads: int) -> dict:
    """The environment for a child process limited to `threads` threads."""
    env = dict(os.environ)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def portable_paths(obj: Any, *, repo: Optional[Path] = None, data: Optional[Path] = None,
                   home: Optional[Path] = None, python: Optional[str] = None) -> Any:
    """A copy of a JSON-able `obj` with this machine's absolute paths rewritten, so a committed results
    file says the same thing on every machine (issue 10).

    In every string (dict keys too), also where a path sits inside a longer string such as
    `data.train={format: text, src: /x/data/m/train.en}`, the longest matching prefix is rewritten:
    the interpreter (`sys.executable`) becomes `python`; a path under the repository becomes
    repository-relative (the repository itself `.`); a path under the data directory ($SEQED_DATA,
    else ../shared/data beside the repository) becomes `$SEQED_DATA/...`; any other path under the home
    directory becomes `~/...`. A prefix only matches whole path components (`/a/repo2` is not under `/a/repo`).

    Args:
        obj: dicts, lists, tuples (returned as lists), strings and scalars.
        repo, data, home, python: override the machine's values (tests).

    Returns:
        The rewritten copy; non-string scalars are returned unchanged.
    """
    repo = Path(repo) if repo is not None else REPO
    if data is None:
        data = Path(os.environ.get("SEQED_DATA") or REPO.parent / "shared" / "data")
    home = Path(home) if home is not None else Path.home()
    python = python if python is not None else sys.executable
    names: dict[str, str] = {}
    for path, name in ((home, "~"), (data, "$SEQED_DATA"), (repo, ""), (python, "python")):
        # both spellings: as given (made absolute) and with symlinks resolved
        for spelled in {os.path.abspath(path), os.path.realpath(path)} if path else ():
            if spelled != os.sep:  # a home of "/" would swallow every path
                names[spelled] = name
    if not names:
        return obj
    # Longest prefix first, not preceded by a path character, ending at a component boundary.
    alternatives = "|".join(re.escape(p) for p in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.~$/-])({alternatives})(?![\w.-])(/(?=[\w.~$-]))?")

    def replace(m: re.Match) -> str:
        name, slash = names[m.group(1)], m.group(2) or ""
        if name == "":  # the repository: `repo/x` -> `x`, `repo` -> `.`
            return "" if slash else "."
        return name + slash

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return pattern.sub(replace, x)
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(obj)


def write_json(path: Path, payload: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[Any]:
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):  # rates >= 100 as integers; scores such as BLEU keep 2 decimals
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def env_line(env: dict) -> str:
    """One line naming the machine, versions, threads and load of a results file."""
    v = env.get("versions", {})
    git = env.get("git", {})
    rev = (git.get("commit") or "?")[:10] + ("+dirty" if git.get("dirty") else "")
    return (f"{env.get('date', '?')}, seqed {v.get('seqed', '?')} @ {rev}, torch {v.get('torch', '?')}, "
            f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} CPUs), torch threads {env.get('torch_threads', '?')}, "
            f"load average at start {env.get('loadavg', '?')}")


def publish(script: str, section: str, out: str, payload: dict, table: str, *, readme: bool = True) -> int:
    """Write a script's results JSON to `out`, rewrite its README section (unless `readme` is False) and
    print the table; returns the exit status 0. Both have this machine's paths made portable."""
    write_json(Path(out), portable_paths(payload))
    table = portable_paths(table)
    print(f"[{script}] wrote {out}", file=sys.stderr)
    if readme:
        update_readme(section, table)
    print(table)
    return 0


def update_readme(section: str, body: str, readme: Path = README) -> None:
    """Replace the text between `<!-- BEGIN section -->` and `<!-- END section -->` in the README."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if begin not in text or end not in text:
        raise BenchError(f"{readme} has no '{begin}' ... '{end}' markers: add them where the table belongs")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{body.strip()}\n{end}{tail}", encoding="utf-8")
