"""seqed against OpenNMT-py 3.5.1, side by side in one invocation: training tokens/s and beam-5 decoding.

Both tools see the same data and the same tokens: Multi30k train, filtered and cut into pieces by the
SentencePiece model seqed trains (`data.max_len=100`, `data.max_ratio=3`, 8k joint unigram pieces), fed
to OpenNMT-py as whitespace-separated piece text with a vocabulary file listing exactly those pieces.
Same model (3+3 pre-norm layers, d 256, 4 heads, FFN 1024, shared and tied embeddings, dropout 0.1),
same batch budget (4096 padded tokens), same thread count (2), same optimizer settings (Adam(W)
betas 0.9/0.98, 100 warm-up steps to lr 2e-3, label smoothing 0.1, clipping 1.0), fp32 on both sides.
The tools run one after the other, never at the same time.

Training: each tool trains `--warmup` + `--steps` updates; both are timed from the end of update
`warmup` to the end of the last one. Tokens are counted as OpenNMT-py counts them: source pieces (no
EOS) + target pieces + EOS, non-padding; seqed's own count adds the source EOS and is also recorded.
The ratio is seqed / OpenNMT-py tokens/s (sentences/s gives the same ratio up to batch composition).

Decoding (`--seqed-checkpoint` and `--onmt-checkpoint`, or `--train-minutes` to train both here
first): beam 5, 64 sentences per batch, length penalty GNMT alpha 1 on both sides (`-length_penalty wu
-alpha 1`), test2016; OpenNMT-py in fp32 (its CPU decoding has no bf16), seqed in fp32 and in bf16
autocast (`--decode-precisions`). Reported: sentences/s over the translation proper (seqed: the
`Translator` call as `seqed translate` runs it; OpenNMT-py: its `-report_time` total) and over the
whole command (process start to exit), BLEU of each output (sacreBLEU on detokenized text).

    bash benchmarks/opennmt/setup_opennmt.sh            # once
    python benchmarks/compare_opennmt.py                # training throughput only (~8 min)
    python benchmarks/compare_opennmt.py --seqed-checkpoint runs/m30k/checkpoint_best.pt \\
        --onmt-checkpoint benchmarks/work/compare/onmt_run/model_step_4000.pt --no-throughput
    python benchmarks/compare_opennmt.py --train-minutes 30          # train both 30 min, then decode
    python benchmarks/compare_opennmt.py --joeynmt      # also JoeyNMT 2.3.0's training target tokens/s

Writes benchmarks/results/compare_opennmt.json and the tables in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import benchlib
from benchlib import BenchError

SECTION = "compare_opennmt"
ONMT_VERSION = "3.5.1"
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO\] Step\s+(\d+)(?:/\s*\d+)?;.*?"
                      r"sents:\s*(\d+); bsz:\s*(\d+)/\s*(\d+)/\s*(\d+);")


def log(msg: str) -> None:
    print(f"[compare_opennmt] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# shared data: seqed's tokenizer and filtering, written as piece text for OpenNMT-py


def tokenizer_sha256(tokenizer) -> str:
    d = tokenizer.to_dict()
    return hashlib.sha256(d["src_model"] + (d["tgt_model"] or b"")).hexdigest()


def seqed_config(data: Path, threads: int, extra=()):
    from seqed.config import load_config

    return load_config(None, benchlib.train_overrides("transformer", data, extra=[f"train.threads={threads}",
                                                                                   *extra]))


def prepare_training_data(cfg):
    """seqed's own data preparation (SentencePiece training, encoding, filtering), as the Trainer does it."""
    from seqed.data.pipeline import prepare_data

    return prepare_data(cfg, None, lambda msg: log(msg))


def write_pieces(tokenizer, train, out: Path, data: Path) -> dict:
    """Piece text of the training pairs seqed keeps (same ids), plus val/test2016 sources and the vocabulary.

    Args:
        tokenizer: a joint seqed `Tokenizer`.
        train: seqed's filtered `ParallelData`, or None to skip the training files.
        out: directory for train.{en,fr}, val.{en,fr}, test2016.en and vocab.txt.
        data: the directory holding multi30k/.
    """
    import sentencepiece as spm

    from seqed.data.corpus import read_lines

    if not tokenizer.joint:
        raise BenchError("the comparison needs one joint SentencePiece model (tokenizer.joint: true)")
    out.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_proto=tokenizer.to_dict()["src_model"])
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    counts: Counter = Counter()

    def dump(name: str, rows) -> None:
        with open(out / name, "w", encoding="utf-8") as f:
            for ids in rows:
                f.write(" ".join(pieces[i] for i in ids) + "\n")

    if train is not None:
        for ids in (*train.src_ids, *train.tgt_ids):
            counts.update(ids)
        dump("train.en", train.src_ids)
        dump("train.fr", train.tgt_ids)
    m30k = data / "multi30k"
    for split in ("val", "test2016"):
        for lang in ("en", "fr"):
            dump(f"{split}.{lang}", tokenizer.encode_src(read_lines(m30k / f"{split}.{lang}")))
    # Every piece but seqed's 4 specials (pad, unk, bos, eos), most frequent first: OpenNMT-py adds its
    # own 4 (<unk>, <blank>, <s>, </s>), so both vocabularies have the same size.
    specials = 4
    order = sorted(range(specials, len(pieces)), key=lambda i: (-counts[i], i))
    with open(out / "vocab.txt", "w", encoding="utf-8") as f:
        for i in order:
            f.write(f"{pieces[i]}\t{counts[i]}\n")
    return {"vocab_size": len(pieces), "train_pairs": 0 if train is None else len(train),
            "tokenizer_sha256": tokenizer_sha256(tokenizer)}


# ---------------------------------------------------------------------------------------------
# OpenNMT-py


def onmt_bin(venv: Path, name: str) -> str:
    path = venv / "bin" / name
    if not path.exists():
        raise BenchError(f"{path} not found: run `bash benchmarks/opennmt/setup_opennmt.sh` first "
                         f"(or pass --onmt-venv)")
    return str(path)


def onmt_env(threads: int) -> dict:
    env = benchlib.thread_env(threads)
    # torch >= 2.6 loads with weights_only=True by default; OpenNMT-py 3.5 checkpoints hold other objects.
    env.update(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    return env


def onmt_versions(venv: Path, threads: int) -> dict:
    code = ("import json, torch, onmt, ctranslate2, pyonmttok; print(json.dumps({'onmt': onmt.__version__, "
            "'torch': torch.__version__, 'torch_threads': torch.get_num_threads(), "
            "'ctranslate2': ctranslate2.__version__, 'pyonmttok': pyonmttok.__version__}))")
    proc = subprocess.run([onmt_bin(venv, "python"), "-c", code], capture_output=True, text=True,
                          env=onmt_env(threads), timeout=300)
    if proc.returncode != 0:
        raise BenchError(f"the OpenNMT-py venv {venv} does not import: {proc.stderr.strip()[-500:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if found["onmt"] != ONMT_VERSION:
        raise BenchError(f"{venv} holds OpenNMT-py {found['onmt']}, the comparison is set up for {ONMT_VERSION}: "
                         f"rerun benchmarks/opennmt/setup_opennmt.sh in a fresh --onmt-venv")
    return found


def onmt_train_config(pieces: Path, run: Path, *, steps: int, max_tokens: int, lr: float, warmup: int,
                      save_every: int, seed: int = 1) -> dict:
    """OpenNMT-py options for the same model and optimisation as `benchlib.MODELS["transformer"]`."""
    d_model = 256
    return {
        "save_data": str(run), "overwrite": True,
        "src_vocab": str(pieces / "vocab.txt"), "share_vocab": True, "src_vocab_size": 8000,
        "tgt_vocab_size": 8000, "src_words_min_frequency": 0, "tgt_words_min_frequency": 0,
        "data": {"corpus_1": {"path_src": str(pieces / "train.en"), "path_tgt": str(pieces / "train.fr")}},
        "save_model": str(run / "model"), "save_checkpoint_steps": save_every, "keep_checkpoint": 2,
        "train_steps": steps, "valid_steps": 10 ** 9, "report_every": 1, "seed": seed,
        "world_size": 1, "gpu_ranks": [], "num_workers": 0, "model_dtype": "fp32",
        "encoder_type": "transformer", "decoder_type": "transformer", "position_encoding": True,
        "enc_layers": 3, "dec_layers": 3, "heads": 4, "hidden_size": d_model, "word_vec_size": d_model,
        "transformer_ff": 1024, "dropout": [0.1], "attention_dropout": [0.0],
        "share_embeddings": True, "share_decoder_embeddings": True,
        "batch_type": "tokens", "batch_size": max_tokens, "accum_count": [1], "normalization": "tokens",
        "optim": "adam", "adam_beta1": 0.9, "adam_beta2": 0.98, "max_grad_norm": 1.0, "label_smoothing": 0.1,
        # noam: lr * d^-0.5 * min(step^-0.5, step * warmup^-1.5) peaks at lr * (d * warmup)^-0.5
        "decay_method": "noam", "warmup_steps": warmup, "learning_rate": lr * (d_model * warmup) ** 0.5,
        "param_init": 0.0, "param_init_glorot": True,
    }


def parse_onmt_log(text: str) -> list[dict]:
    """Per-report records (needs report_every 1): end time of the step and its token/sentence counts."""
    import datetime as dt

    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
        out.append({"step": int(m.group(3)), "time": stamp, "sents": int(m.group(4)), "src": int(m.group(5)),
                    "tgt": int(m.group(6))})
    return out


def run_onmt_train(venv: Path, config: dict, run: Path, threads: int, *, timeout: float,
                   stop_after: float = 0.0) -> str:
    """Run onmt_train; with `stop_after` > 0 seconds, interrupt it then (time-budgeted training)."""
    import yaml

    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    cmd = [onmt_bin(venv, "onmt_train"), "-config", str(cfg_path)]
    with open(run / "stdout.log", "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=onmt_env(threads),
                                start_new_session=True)
        try:
            proc.wait(timeout=stop_after or timeout)
        except subprocess.TimeoutExpired:
            if not stop_after:
                _stop(proc)
                raise BenchError(f"onmt_train ran past {timeout:.0f} s; see {run / 'stdout.log'}") from None
            _stop(proc)
    text = (run / "stdout.log").read_text(encoding="utf-8")  # the step lines go to the console only
    stopped = stop_after and proc.returncode in (-signal.SIGTERM, -signal.SIGINT)
    if proc.returncode != 0 and not stopped:
        tail = text.strip().splitlines()[-15:]
        raise BenchError(f"onmt_train failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return text


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt a child we started (and its process group), then kill it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def summarize_onmt(records: list[dict], warmup: int) -> dict:
    if len(records) <= warmup:
        raise BenchError(f"OpenNMT-py logged {len(records)} steps, not more than the {warmup} warm-up steps: "
                         f"see its stdout.log")
    timed = records[warmup:]
    seconds = timed[-1]["time"] - records[warmup - 1]["time"]
    src, tgt, sents = (sum(r[k] for r in timed) for k in ("src", "tgt", "sents"))
    return {"timed_steps": len(timed), "seconds": round(seconds, 3), "tokens_per_s": (src + tgt) / seconds,
            "tgt_tokens_per_s": tgt / seconds, "sentences_per_s": sents / seconds,
            "src_tokens": src, "tgt_tokens": tgt, "sentences": sents, "tokens_per_step": (src + tgt) / len(timed)}


def onmt_translate(venv: Path, checkpoint: Path, src: Path, output: Path, *, beam: int, batch_size: int,
                   threads: int, timeout: float) -> dict:
    cmd = [onmt_bin(venv, "onmt_translate"), "-model", str(checkpoint), "-src", str(src), "-output", str(output),
           "-beam_size", str(beam), "-batch_size", str(batch_size), "-batch_type", "sents",
           "-length_penalty", "wu", "-alpha", "1.0", "-report_time", "-seed", "1"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=onmt_env(threads), timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"onmt_translate failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
    logs = proc.stdout + proc.stderr
    m = re.search(r"Average translation time \(ms\): ([\d.]+)", logs)
    if not m:
        raise BenchError(f"onmt_translate printed no 'Average translation time': {logs.strip()[-500:]}")
    n = sum(1 for _ in open(src, encoding="utf-8"))
    return {"seconds": float(m.group(1)) * n / 1000, "wall_seconds": wall, "command": cmd}


def onmt_vocab_overlap(venv: Path, checkpoint: Path, tokenizer, threads: int) -> float:
    """Share of the OpenNMT-py checkpoint's target vocabulary that are pieces of `tokenizer` (1.0 = same pieces)."""
    import sentencepiece as spm

    code = ("import sys, json, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
            "v = c['vocab']['tgt']; print(json.dumps(v if isinstance(v, list) else list(v.ids_to_tokens)))")
    proc = subprocess.run([onmt_bin(venv, "python"), "-c", code, str(checkpoint)], capture_output=True, text=True,
                          env=onmt_env(threads), timeout=600)
    if proc.returncode != 0:
        raise BenchError(f"cannot read the vocabulary of {checkpoint}: {proc.stderr.strip()[-500:]}")
    tokens = [t for t in json.loads(proc.stdout.strip().splitlines()[-1]) if not t.startswith("<")]
    sp = spm.SentencePieceProcessor(model_proto=tokenizer.to_dict()["src_model"])
    known = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    return sum(t in known for t in tokens) / max(len(tokens), 1)


# ---------------------------------------------------------------------------------------------
# JoeyNMT 2.3.0 (optional): target tokens/s only, the one rate its log gives

JOEY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - INFO - joeynmt\.training - Epoch\s+\d+, "
                       r"Step:\s+(\d+),.*Tokens per Sec:\s+(\d+)")


def joey_train_config(pieces: Path, run: Path, *, steps: int, max_tokens: int, lr: float, warmup: int,
                      seed: int = 1) -> dict:
    """JoeyNMT options for the same model and optimisation (pre-norm, tied embeddings, AdamW, inverse sqrt)."""
    run.parent.mkdir(parents=True, exist_ok=True)
    vocab = run.parent / "joey_vocab.txt"  # one piece per line; JoeyNMT adds <unk> <pad> <s> </s>
    vocab.write_text("".join(line.split("\t")[0] + "\n" for line in
                             (pieces / "vocab.txt").read_text(encoding="utf-8").splitlines()), encoding="utf-8")
    side = {"level": "word", "lowercase": False, "normalize": False, "max_length": 102, "min_length": 1,
            "voc_file": str(vocab), "voc_limit": 8000, "voc_min_freq": 1}
    stack = {"type": "transformer", "num_layers": 3, "num_heads": 4, "hidden_size": 256, "ff_size": 1024,
             "dropout": 0.1, "layer_norm": "pre", "embeddings": {"embedding_dim": 256, "scale": True}}
    return {
        "name": "seqed-bench", "joeynmt_version": "2.3.0", "model_dir": str(run), "use_cuda": False, "fp16": False,
        "random_seed": seed,
        "data": {"train": str(pieces / "train"), "dev": str(pieces / "val"), "dataset_type": "plain",
                 "sample_dev_subset": 20, "src": dict(side, lang="en"), "trg": dict(side, lang="fr"),
                 "special_symbols": {"unk_token": "<unk>", "unk_id": 0, "pad_token": "<pad>", "pad_id": 1,
                                     "bos_token": "<s>", "bos_id": 2, "eos_token": "</s>", "eos_id": 3}},
        "testing": {"beam_size": 5, "beam_alpha": 1.0, "eval_metrics": ["bleu"], "batch_size": 64,
                    "batch_type": "sentence"},
        "training": {"optimizer": "adamw", "adam_betas": [0.9, 0.98], "learning_rate": lr,
                     "learning_rate_min": 1e-8, "scheduling": "warmupinversesquareroot",
                     "learning_rate_warmup": warmup, "label_smoothing": 0.1, "clip_grad_norm": 1.0,
                     "batch_size": max_tokens, "batch_type": "token", "normalization": "tokens", "epochs": 1000,
                     "updates": steps, "validation_freq": 10 ** 9, "logging_freq": 1, "overwrite": True,
                     "shuffle": True, "num_workers": 0, "keep_best_ckpts": 1, "early_stopping_metric": "ppl",
                     "print_valid_sents": []},
        "model": {"initializer": "xavier_uniform", "bias_initializer": "zeros", "embed_initializer": "xavier_uniform",
                  "tied_embeddings": True, "tied_softmax": True, "encoder": stack, "decoder": dict(stack)},
    }


def joey_train_throughput(venv: Path, pieces: Path, run: Path, args, lr: float, warmup: int) -> dict:
    import yaml

    python = venv / "bin" / "python"
    if not python.exists():
        raise BenchError(f"{python} not found: run `bash benchmarks/opennmt/setup_opennmt.sh --joeynmt` first")
    run.mkdir(parents=True, exist_ok=True)
    config = joey_train_config(pieces, run, steps=args.warmup + args.steps, max_tokens=args.max_tokens, lr=lr,
                               warmup=warmup)
    cfg_path = run.parent / "joey_config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([str(python), "-m", "joeynmt", "train", str(cfg_path), "--skip-test"], capture_output=True,
                          text=True, env=onmt_env(args.threads), timeout=args.timeout)
    text = proc.stdout + proc.stderr
    (run.parent / "joey_stdout.log").write_text(text, encoding="utf-8")
    if proc.returncode != 0:
        raise BenchError(f"joeynmt train failed (exit {proc.returncode}):\n{text.strip()[-2000:]}")
    result = summarize_joey(parse_joey_log(text), args.warmup)
    code = ("import json, torch, joeynmt; print(json.dumps({'joeynmt': joeynmt.__version__, "
            "'torch': torch.__version__, 'torch_threads': torch.get_num_threads()}))")
    ver = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=onmt_env(args.threads),
                         timeout=300)
    versions = json.loads(ver.stdout.strip().splitlines()[-1]) if ver.returncode == 0 else {}
    return dict(result, versions=versions, config=config)


def parse_joey_log(text: str) -> list[tuple[int, float, int]]:
    """(step, time the step was logged, target tokens/s JoeyNMT reports for it) per logged step."""
    import datetime as dt

    steps = []
    for line in text.splitlines():
        m = JOEY_LINE.match(line)
        if m:
            stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
            steps.append((int(m.group(3)), stamp, int(m.group(4))))
    return steps


def summarize_joey(steps: list[tuple[int, float, int]], warmup: int) -> dict:
    if len(steps) <= warmup:
        raise BenchError(f"JoeyNMT logged {len(steps)} steps, not more than the {warmup} warm-up steps")
    # JoeyNMT logs a rate per step (logging_freq 1), not counts: weight each rate by the time its step took.
    timed = [(steps[i][1] - steps[i - 1][1], steps[i][2]) for i in range(warmup, len(steps))]
    seconds = sum(t for t, _ in timed)
    return {"timed_steps": len(timed), "seconds": round(seconds, 3),
            "tgt_tokens_per_s": sum(t * r for t, r in timed) / seconds}


# ---------------------------------------------------------------------------------------------
# seqed side


def seqed_train_throughput(data: Path, args) -> dict:
    import train_throughput

    spec = dict(data=str(data), warmup=args.warmup, steps=args.steps, max_tokens=args.max_tokens,
                threads=args.threads, device="cpu", bare_shape=[176, 16, 19], vocab_size=8000,
                model="transformer", precision=args.precision, mode="trainer")
    r = train_throughput.run_child(spec, args.timeout)
    # OpenNMT-py's count: sources without EOS.
    r["tokens_per_s"] = (r["src_tokens"] - r["sentences"] + r["tgt_tokens"]) / r["seconds"]
    r["seqed_count_tokens_per_s"] = r["src_tgt_tokens_per_s"]
    return r


def seqed_translate(checkpoint: str, src: Path, ref: Path, out: Path, *, beam: int, batch_size: int,
                    threads: int, precision: str, timeout: float) -> dict:
    """Translation-only rate (decode_throughput.py, in a child) and the whole `seqed translate` command."""
    if beam not in (1, 5):
        raise BenchError(f"--beam {beam}: the comparison runs beam 5 (or 1)")
    here = Path(__file__).resolve().parent
    cmd = [sys.executable, str(here / "decode_throughput.py"), "-c", checkpoint, "--src", str(src), "--ref", str(ref),
           "--searches", "beam5" if beam == 5 else "greedy", "--batch-sizes", str(batch_size),
           "--precisions", precision, "--threads", str(threads), "--out", "-",
           "--warmup", "0"]  # no untimed warm-up: onmt_translate has none either
    proc = subprocess.run(cmd, capture_output=True, text=True, env=benchlib.thread_env(threads), timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"decode_throughput.py failed:\n{proc.stderr.strip()[-2000:]}")
    inner = json.loads(proc.stdout.strip().splitlines()[-1])["runs"][0]
    cli = [sys.executable, "-m", "seqed", "translate", "-c", checkpoint, "-i", str(src), "-o", str(out),
           "--beam", str(beam), "--batch-size", str(batch_size), "--device", "cpu", "--precision", precision]
    start = time.perf_counter()
    proc = subprocess.run(cli, capture_output=True, text=True, env=benchlib.thread_env(threads), timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"seqed translate failed:\n{proc.stderr.strip()[-2000:]}")
    return {"seconds": inner["seconds"], "wall_seconds": wall, "bleu_translator": inner["bleu"],
            "precision": precision, "command": cli}


def seqed_train_minutes(args, data: Path, run: Path, minutes: float) -> str:
    """`seqed train` of the recipe for `minutes`; returns the run directory (best checkpoint, else last)."""
    if (run / "checkpoint_last.pt").exists():
        raise BenchError(f"{run} already holds a run: remove it or pass --work elsewhere")
    cli = [sys.executable, "-m", "seqed", "train", args.seqed_config, f"out_dir={run}", f"train.max_minutes={minutes}",
           f"train.threads={args.train_threads}", "train.keep_last=2", *args.seqed_set, "--no-progress"]
    log(f"seqed: {' '.join(cli[2:])}")
    proc = subprocess.run(cli, env=benchlib.thread_env(args.train_threads), timeout=minutes * 60 + 3600)
    if proc.returncode != 0:
        raise BenchError(f"seqed train failed (exit {proc.returncode})")
    return str(run)


# ---------------------------------------------------------------------------------------------


def score_file(hyp: Path, ref: Path, detok=None) -> dict:
    from seqed.data.corpus import read_lines
    from seqed.scoring import score

    hyps = read_lines(hyp) if hyp.stat().st_size else []
    if detok is not None:
        hyps = detok(hyps)
    refs = read_lines(ref)
    if len(hyps) != len(refs):
        raise BenchError(f"{hyp} has {len(hyps)} lines but {ref} has {len(refs)}")
    sc = score(hyps, refs)
    return {"bleu": sc.bleu, "chrf": sc.chrf, "bleu_signature": sc.bleu_signature}


def decode_comparison(args, data: Path, seqed_ckpt: str, onmt_ckpt: Path, work: Path) -> dict:
    import sentencepiece as spm

    from seqed.loading import load_model

    tokenizer = load_model(seqed_ckpt, device="cpu").tokenizer
    pieces_dir = work / "pieces_decode"
    write_pieces(tokenizer, None, pieces_dir, data)
    overlap = onmt_vocab_overlap(args.onmt_venv, onmt_ckpt, tokenizer, args.threads)
    if overlap < 0.99:
        raise BenchError(f"only {100 * overlap:.1f}% of {onmt_ckpt}'s vocabulary are pieces of the tokenizer in "
                         f"{seqed_ckpt}: train OpenNMT-py on piece files written with that tokenizer "
                         f"(--train-minutes does)")
    m30k = data / "multi30k"
    src, ref, src_pieces = m30k / "test2016.en", m30k / "test2016.fr", pieces_dir / "test2016.en"
    sp = spm.SentencePieceProcessor(model_proto=tokenizer.to_dict()["src_model"])
    out = work / "decode"
    out.mkdir(parents=True, exist_ok=True)
    if args.limit:  # the first N sentences only (smoke tests); BLEU is then partial
        for path in (src, ref, src_pieces):
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[: args.limit]
            (out / f"first{args.limit}.{path.parent.name}.{path.name}").write_text("".join(lines), encoding="utf-8")
        src, ref, src_pieces = (out / f"first{args.limit}.{p.parent.name}.{p.name}" for p in (src, ref, src_pieces))
    seqed = {}
    for precision in args.decode_precisions:
        log(f"seqed translate, beam {args.beam}, batch {args.batch_size}, {precision} ...")
        hyp = out / f"seqed.{precision}.fr"
        seqed[precision] = s = seqed_translate(seqed_ckpt, src, ref, hyp, beam=args.beam, batch_size=args.batch_size,
                                               threads=args.threads, precision=precision, timeout=args.timeout)
        s.update(score_file(hyp, ref), checkpoint=seqed_ckpt)
    log(f"onmt_translate, beam {args.beam}, batch {args.batch_size} ...")
    o = onmt_translate(args.onmt_venv, onmt_ckpt, src_pieces, out / "onmt.sp.fr", beam=args.beam,
                       batch_size=args.batch_size, threads=args.threads, timeout=args.timeout)
    o.update(score_file(out / "onmt.sp.fr", ref,
                        detok=lambda lines: [sp.decode_pieces(line.split()) for line in lines]),
             checkpoint=str(onmt_ckpt))
    n = len(open(src, encoding="utf-8").read().splitlines())
    for r in (*seqed.values(), o):
        r["sentences"] = n
        r["sentences_per_s"] = n / r["seconds"]
        r["wall_sentences_per_s"] = n / r["wall_seconds"]
    return {"seqed": seqed, "onmt": o, "vocab_overlap": overlap, "beam": args.beam, "limit": args.limit,
            "batch_size": args.batch_size,
            "ratio_sentences_per_s": {k: r["sentences_per_s"] / o["sentences_per_s"] for k, r in seqed.items()},
            "ratio_wall": {k: r["wall_sentences_per_s"] / o["wall_sentences_per_s"] for k, r in seqed.items()},
            "bleu_difference": {k: round(r["bleu"] - o["bleu"], 2) for k, r in seqed.items()}}


def newest_onmt_checkpoint(run: Path) -> Path:
    found = sorted(run.glob("model_step_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    if not found:
        raise BenchError(f"OpenNMT-py saved no checkpoint in {run}: train longer or lower --onmt-save-every")
    return found[-1]


def _env(section: dict) -> str:
    v = section["onmt_versions"]
    return (f"{benchlib.env_line(section['environment'])}; OpenNMT-py {v.get('onmt')} with torch {v.get('torch')} "
            f"({v.get('torch_threads')} threads).")


def table(payload: dict) -> str:
    parts = []
    t = payload.get("train")
    if t:
        c, se, on = t["config"], t["seqed"], t["onmt"]
        rows = [["seqed", se["tokens_per_s"], se["tgt_tokens_per_s"], se["sentences_per_s"],
                 se["tokens_per_step"] - se["sentences_per_step"]],
                ["OpenNMT-py", on["tokens_per_s"], on["tgt_tokens_per_s"], on["sentences_per_s"],
                 on["tokens_per_step"]]]
        text = (f"**Training.** {_env(t)}\n\n{c['steps']} timed updates after {c['warmup']} warm-up updates, "
                f"{c['max_tokens']}-token batches, {c['threads']} threads, seqed {c['precision']} vs OpenNMT-py fp32; "
                f"tokens = non-padding source + target pieces as OpenNMT-py counts them (target EOS, no source "
                f"EOS):\n\n" + benchlib.md_table(["tool", "tokens/s", "tgt tokens/s", "sentences/s", "tokens/update"],
                                                  rows)
                + f"\n\nseqed / OpenNMT-py: **{t['ratio_tokens_per_s']:.2f}x** tokens/s "
                  f"({t['ratio_sentences_per_s']:.2f}x sentences/s).")
        if "joey" in t:
            text += (f" JoeyNMT 2.3.0 (same model, data, batch budget and threads; its log gives target tokens/s "
                     f"only): {t['joey']['tgt_tokens_per_s']:,.0f} target tokens/s; seqed / JoeyNMT: "
                     f"**{t['ratio_tgt_tokens_per_s_joey']:.2f}x** target tokens/s.")
        parts.append(text)
    d = payload.get("decode")
    if d:
        rows = [[f"seqed {k}", r["sentences_per_s"], r["wall_sentences_per_s"], r["bleu"], r["chrf"], r["checkpoint"]]
                for k, r in d["seqed"].items()]
        o = d["onmt"]
        rows.append(["OpenNMT-py fp32", o["sentences_per_s"], o["wall_sentences_per_s"], o["bleu"], o["chrf"],
                     o["checkpoint"]])
        subset = f" (first {d['limit']} sentences)" if d.get("limit") else ""
        ratios = "; ".join(f"seqed {k}: **{d['ratio_sentences_per_s'][k]:.2f}x** sentences/s in translation, "
                           f"{d['ratio_wall'][k]:.2f}x for the whole command, BLEU {d['bleu_difference'][k]:+.2f}"
                           for k in d["seqed"])
        parts.append(
            f"**Decoding.** {_env(d)}\n\nTest2016{subset}, beam {d['beam']}, {d['batch_size']} sentences per batch "
            f"(OpenNMT-py runs fp32 on CPU):\n\n" + benchlib.md_table(
                ["tool", "sent/s (translation)", "sent/s (whole command)", "BLEU", "chrF", "checkpoint"], rows)
            + f"\n\nseqed / OpenNMT-py: {ratios}.")
    return "\n\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=5, help="untimed training updates first (default 5)")
    p.add_argument("--steps", type=int, default=40, help="timed training updates (default 40)")
    p.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch (default 4096)")
    p.add_argument("--threads", type=int, default=2, help="threads for both tools (default 2)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="seqed's precision (OpenNMT-py runs fp32 on CPU); fp32 is the equal-config ratio")
    p.add_argument("--no-throughput", action="store_true", help="skip the training-throughput comparison")
    p.add_argument("--seqed-checkpoint", help="trained seqed checkpoint for the decoding comparison")
    p.add_argument("--onmt-checkpoint", help="trained OpenNMT-py checkpoint (trained on pieces of the seqed "
                                             "checkpoint's tokenizer)")
    p.add_argument("--train-minutes", type=float, default=0.0,
                   help="train both tools this long here, then compare their decoding")
    p.add_argument("--onmt-minutes", type=float, default=0.0,
                   help="OpenNMT-py's budget (default: --train-minutes); with --seqed-checkpoint and no "
                        "--onmt-checkpoint, train only OpenNMT-py (on that checkpoint's pieces), then compare")
    p.add_argument("--train-threads", type=int, default=0,
                   help="threads for the trainings of --train-minutes/--onmt-minutes (default: --threads); "
                        "decoding always uses --threads")
    p.add_argument("--seqed-config", default=str(benchlib.REPO / "recipes" / "multi30k_en_fr" / "transformer.yaml"),
                   help="seqed recipe for --train-minutes")
    p.add_argument("--seqed-set", nargs="*", default=[], metavar="key.path=value",
                   help="extra `seqed train` overrides for --train-minutes, e.g. train.precision=fp32")
    p.add_argument("--onmt-lr", type=float, default=2e-3, help="OpenNMT-py peak learning rate (default 2e-3)")
    p.add_argument("--onmt-warmup", type=int, default=100, help="OpenNMT-py warm-up steps (default 100)")
    p.add_argument("--onmt-save-every", type=int, default=250,
                   help="OpenNMT-py checkpoint interval for --train-minutes (default 250)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch (default 64)")
    p.add_argument("--decode-precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="seqed's decoding precisions (default: fp32 bf16; OpenNMT-py decodes fp32 on CPU)")
    p.add_argument("--limit", type=int, default=0, help="decode the first N test sentences only (0 = all)")
    p.add_argument("--onmt-venv", type=Path, default=benchlib.WORK / "onmt-venv")
    p.add_argument("--joeynmt", action="store_true", help="also measure JoeyNMT 2.3.0's training throughput")
    p.add_argument("--joey-venv", type=Path, default=benchlib.WORK / "joey-venv")
    p.add_argument("--work", type=Path, default=benchlib.WORK / "compare", help="scratch directory")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per child command")
    benchlib.add_output_args(p, SECTION)
    args = p.parse_args(argv)
    try:
        args.train_threads = args.train_threads or args.threads
        if args.onmt_checkpoint and not args.seqed_checkpoint:
            raise BenchError("--onmt-checkpoint needs --seqed-checkpoint (the tokenizer it was trained on)")
        if args.seqed_checkpoint and not (args.onmt_checkpoint or args.onmt_minutes):
            raise BenchError("give --onmt-checkpoint, or --onmt-minutes to train OpenNMT-py here "
                             "(or --train-minutes to train both)")
        if args.train_minutes and args.seqed_checkpoint:
            raise BenchError("--train-minutes trains the checkpoints itself: drop --seqed/--onmt-checkpoint")
        if args.no_throughput and not (args.seqed_checkpoint or args.train_minutes):
            raise BenchError("nothing to do: --no-throughput without checkpoints or --train-minutes")
        benchlib.set_threads(args.threads)
        data = benchlib.data_dir()
        os.environ.setdefault("SEQED_DATA", str(data))  # the recipes name $SEQED_DATA/multi30k/...
        args.work.mkdir(parents=True, exist_ok=True)
        # Each section carries the environment and settings of the invocation that measured it; a section
        # this invocation does not measure is kept from the previous results file.
        common = {"environment": benchlib.environment(args.threads),
                  "onmt_versions": onmt_versions(args.onmt_venv, args.threads)}
        config = {"threads": args.threads, "precision": args.precision}
        previous = benchlib.read_json(Path(args.out)) or {}
        payload = {"benchmark": SECTION, **common}
        for name in ("train", "decode"):
            if isinstance(previous.get(name), dict) and "environment" in previous[name]:
                payload[name] = previous[name]
        if not args.no_throughput:
            payload["train"] = t = dict(train_comparison(args, data), **common, config=dict(
                config, warmup=args.warmup, steps=args.steps, max_tokens=args.max_tokens,
                seqed_overrides=benchlib.train_overrides("transformer", data)))
            log(f"training: seqed {t['seqed']['tokens_per_s']:.0f} tok/s, OpenNMT-py {t['onmt']['tokens_per_s']:.0f} "
                f"tok/s, ratio {t['ratio_tokens_per_s']:.2f}")
        seqed_ckpt, onmt_ckpt = args.seqed_checkpoint, args.onmt_checkpoint and Path(args.onmt_checkpoint)
        if args.seqed_checkpoint and not args.onmt_checkpoint:
            onmt_ckpt = train_onmt(args, data, seqed_ckpt)
            config.update(onmt_minutes=args.onmt_minutes, onmt_lr=args.onmt_lr, onmt_warmup=args.onmt_warmup,
                          train_threads=args.train_threads)
        if args.train_minutes:
            seqed_ckpt, onmt_ckpt = train_both(args, data)
            config.update(train_threads=args.train_threads, train_minutes=args.train_minutes,
                          onmt_minutes=args.onmt_minutes or args.train_minutes,
                          onmt_lr=args.onmt_lr, onmt_warmup=args.onmt_warmup, seqed_config=args.seqed_config,
                          seqed_set=args.seqed_set)
        if seqed_ckpt:
            payload["decode"] = d = dict(decode_comparison(args, data, seqed_ckpt, onmt_ckpt, args.work), **common,
                                         config=config)
            for k, r in d["seqed"].items():
                log(f"decoding: seqed {k} {r['sentences_per_s']:.1f} sent/s (BLEU {r['bleu']}), OpenNMT-py "
                    f"{d['onmt']['sentences_per_s']:.1f} sent/s (BLEU {d['onmt']['bleu']}), ratio "
                    f"{d['ratio_sentences_per_s'][k]:.2f}")
        return benchlib.publish("compare_opennmt", SECTION, args.out, payload, table(payload),
                                readme=not args.no_readme)
    except (BenchError, subprocess.TimeoutExpired, FileNotFoundError) as err:
        return benchlib.fail("compare_opennmt", err)


def train_comparison(args, data: Path) -> dict:
    cfg = seqed_config(data, args.threads, extra=[f"train.max_tokens={args.max_tokens}"])
    log("preparing the data with seqed's pipeline (SentencePiece, filtering) ...")
    prep = prepare_training_data(cfg)
    pieces = args.work / "pieces"
    info = write_pieces(prep.tokenizer, prep.train, pieces, data)
    log(f"seqed Trainer: {args.warmup} + {args.steps} updates ...")
    s = seqed_train_throughput(data, args)
    log(f"OpenNMT-py onmt_train: {args.warmup} + {args.steps} updates ...")
    run = args.work / "onmt_throughput"
    config = onmt_train_config(pieces, run, steps=args.warmup + args.steps, max_tokens=args.max_tokens,
                               lr=cfg.train.lr, warmup=cfg.train.warmup, save_every=10 ** 9)
    text = run_onmt_train(args.onmt_venv, config, run, args.threads, timeout=args.timeout)
    o = summarize_onmt(parse_onmt_log(text), args.warmup)
    result = {"seqed": s, "onmt": o, "onmt_config": config, "data": info,
              "same_tokenizer": s.get("tokenizer_sha256") == info["tokenizer_sha256"],
              "ratio_tokens_per_s": s["tokens_per_s"] / o["tokens_per_s"],
              "ratio_sentences_per_s": s["sentences_per_s"] / o["sentences_per_s"]}
    if args.joeynmt:
        log(f"JoeyNMT train: {args.warmup} + {args.steps} updates ...")
        j = joey_train_throughput(args.joey_venv, pieces, args.work / "joey_throughput" / "run", args,
                                  lr=cfg.train.lr, warmup=cfg.train.warmup)
        result["joey"] = j
        result["ratio_tgt_tokens_per_s_joey"] = s["tgt_tokens_per_s"] / j["tgt_tokens_per_s"]
    return result


def train_both(args, data: Path) -> tuple[str, Path]:
    """Train seqed (its recipe) and then OpenNMT-py (same pieces, same model) for the given minutes."""
    seqed_ckpt = seqed_train_minutes(args, data, args.work / "seqed_run", args.train_minutes)
    return seqed_ckpt, train_onmt(args, data, seqed_ckpt)


def train_onmt(args, data: Path, seqed_ckpt: str) -> Path:
    """Train OpenNMT-py for `--onmt-minutes` on the pieces of `seqed_ckpt`'s tokenizer and training data."""
    from seqed.loading import load_model
    from seqed.data.pipeline import prepare_data

    run = args.work / "onmt_run"
    if run.exists() and any(run.glob("model_step_*.pt")):
        raise BenchError(f"{run} already holds OpenNMT-py checkpoints: remove it or pass --work elsewhere")
    loaded = load_model(seqed_ckpt, device="cpu")
    prep = prepare_data(loaded.config, loaded.tokenizer, lambda msg: log(msg))  # the run's own data and filters
    pieces = args.work / "pieces_trained"
    write_pieces(loaded.tokenizer, prep.train, pieces, data)
    minutes = args.onmt_minutes or args.train_minutes
    config = onmt_train_config(pieces, run, steps=10 ** 7, max_tokens=args.max_tokens, lr=args.onmt_lr,
                               warmup=args.onmt_warmup, save_every=args.onmt_save_every)
    config["report_every"] = 50
    log(f"OpenNMT-py: training for {minutes} minutes on {args.train_threads} thread(s) ...")
    run_onmt_train(args.onmt_venv, config, run, args.train_threads, timeout=minutes * 60 + 600,
                   stop_after=minutes * 60)
    return newest_onmt_checkpoint(run)


if __name__ == "__main__":
    sys.exit(main())
