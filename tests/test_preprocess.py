"""`seqed.data.preprocess`: streamed, multiprocess encoding into a binarized directory that trains exactly like the
in-memory pipeline; filters and duplicates reported; stale, unaligned, interrupted and full-disk cases."""

import errno
import json
import os
import signal

import numpy as np
import pytest

import seqed.data.corpus as reader
import seqed.data.preprocess as pre
from seqed.config import load_config
from seqed.data.batching import TokenBatchSampler
from seqed.data.filtering import FilterReport
from seqed.data.store import BinarizedError, binarized_dir
from seqed.data.pipeline import prepare_data
from seqed.data.corpus import DataError
from seqed.data.preprocess import open_binarized, preprocess

DEMO = "data/demo"


@pytest.fixture
def corpus(tmp_path):
    """Two small parallel corpora from the demo data; the second repeats some pairs of the first."""
    en = open(f"{DEMO}/train.en", encoding="utf-8").read().splitlines()[:600]
    fr = open(f"{DEMO}/train.fr", encoding="utf-8").read().splitlines()[:600]
    (tmp_path / "a.en").write_text("\n".join(en[:400]) + "\n")
    (tmp_path / "a.fr").write_text("\n".join(fr[:400]) + "\n")
    b_en, b_fr = en[400:] + en[:30] + [""], fr[400:] + fr[:30] + ["Vide."]  # 30 duplicates, 1 empty
    (tmp_path / "b.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(b_en, b_fr)))
    return tmp_path


def config(corpus, *extra):
    return load_config(None, [
        f"data.train=[{{format: text, src: {corpus}/a.en, tgt: {corpus}/a.fr}}, "
        f"{{format: tsv, path: {corpus}/b.tsv, weight: 1.5}}]",
        f"data.binarized={corpus}/bin", "data.dedup=true", "tokenizer.vocab_size=300", "data.max_len=100",
        *extra])


def quiet(msg):
    pass


def test_preprocess_equals_in_memory_pipeline(corpus, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK", 64)  # many chunks in flight
    cfg = config(corpus)
    directory = preprocess(cfg, quiet, workers=2, progress=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["report"]["duplicates"] == 30 and manifest["report"]["empty"] == 1
    assert [c["pairs"] for c in manifest["corpora"]] == [400, 200]
    data = open_binarized(cfg, quiet)
    assert len(data) == 400 + 300  # weight 1.5 on the 200 pairs left in b.tsv
    mem = prepare_data(cfg.__class__(**{**cfg.__dict__, "data": cfg.data.__class__(
        **{**cfg.data.__dict__, "binarized": ""})}), data.tokenizer, quiet)
    assert "30 duplicates" in mem.report
    for a, b in zip(data.lengths(), mem.train.lengths()):
        assert np.array_equal(a, b)
    for idx in TokenBatchSampler(*data.lengths(), max_tokens=400, seed=1).batches(0):
        a, b = data.batch(idx), mem.train.batch(idx)
        assert a.src.equal(b.src) and a.tgt_in.equal(b.tgt_in) and a.tgt_out.equal(b.tgt_out)
    assert prepare_data(cfg, None, quiet).train.directory == directory  # the trainer's entry point maps it
    assert (directory / "tokenizer" / "tokenizer.json").is_file()


def test_mismatched_line_counts_name_files_and_counts(corpus):
    (corpus / "a.fr").write_text("un\ndeux\n")
    with pytest.raises(DataError, match=r"a\.en has 400 lines but .*a\.fr has 2"):
        preprocess(config(corpus), quiet, workers=1, progress=False)
    assert not (corpus / "bin").exists() and not (corpus / "bin.partial").exists()


def test_stale_directory_is_refused_then_rebuilt(corpus):
    cfg = config(corpus)
    preprocess(cfg, quiet, workers=1, progress=False)
    with open(corpus / "a.en", "a") as f:
        f.write("One more line.\n")
    with open(corpus / "a.fr", "a") as f:
        f.write("Une ligne de plus.\n")
    with pytest.raises(BinarizedError, match=r"stale: .*a\.en is now .* bytes.*seqed preprocess"):
        open_binarized(cfg, quiet)
    with pytest.raises(BinarizedError, match="filters differs"):
        open_binarized(config(corpus, "data.max_len=30"), quiet)
    preprocess(cfg, quiet, workers=1, progress=False)  # rebuilds
    assert [c["pairs"] for c in open_binarized(cfg, quiet).manifest["corpora"]] == [401, 200]


def test_reused_tokenizer_model_and_auto_directory(corpus, monkeypatch, tmp_path):
    monkeypatch.setenv("SEQED_CACHE", str(tmp_path / "cache"))
    first = preprocess(config(corpus), quiet, workers=1, progress=False)
    cfg = config(corpus, "data.binarized=auto", f"tokenizer.model={first / 'tokenizer'}")
    assert binarized_dir(cfg).parent == tmp_path / "cache" / "binarized"
    data = open_binarized(cfg, quiet)  # built on first use
    assert data.manifest["tokenizer_sha256"] == json.loads((first / "manifest.json").read_text())["tokenizer_sha256"]
    assert binarized_dir(config(corpus, "data.binarized=auto", "data.max_len=30")) != binarized_dir(cfg)


def test_full_disk_and_interruption_leave_nothing_half_written(corpus, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK", 64)
    cfg = config(corpus)
    calls = []

    def fail_after_two(*args):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    real = pre._write_chunk
    monkeypatch.setattr(pre, "_write_chunk", fail_after_two)
    with pytest.raises(DataError, match="No space left on device.*partial output was removed"):
        preprocess(cfg, quiet, workers=2, progress=False)
    assert not (corpus / "bin").exists() and not (corpus / "bin.partial").exists()

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pre, "_write_chunk", interrupt)
    with pytest.raises(KeyboardInterrupt):
        preprocess(cfg, quiet, workers=2, progress=False)
    assert not (corpus / "bin").exists() and not (corpus / "bin.partial").exists()
    monkeypatch.setattr(pre, "_write_chunk", real)
    assert len(open_binarized(cfg, quiet)) == 700


class _Recorded(pre.EncodePool):
    pools: list = []

    def __init__(self, *args):
        super().__init__(*args)
        self.pools.append(self)


def test_an_error_at_any_chunk_stops_every_worker(corpus, monkeypatch):
    """Stopping is kill and join: whichever chunk the parent fails at, no worker is left running."""
    monkeypatch.setattr(reader, "CHUNK", 64)  # 11 chunks, 4 in flight
    monkeypatch.setattr(pre, "EncodePool", _Recorded)
    real = pre._write_chunk
    for at in range(1, 12, 2):
        calls = []

        def fail_at(*args):
            calls.append(1)
            if len(calls) == at:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args)

        monkeypatch.setattr(pre, "_write_chunk", fail_at)
        with pytest.raises(DataError, match="No space left"):
            preprocess(config(corpus), quiet, workers=2, progress=False)
        assert not any(p.is_alive() for p in _Recorded.pools[-1].procs)
    assert len(_Recorded.pools) >= 6


def test_a_dead_worker_is_an_error_not_a_wait(corpus, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK", 64)

    class Killing(_Recorded):
        def map(self, jobs):
            for i, out in enumerate(super().map(jobs)):
                if i == 1:
                    os.kill(self.procs[1].pid, signal.SIGKILL)
                yield out

    monkeypatch.setattr(pre, "EncodePool", Killing)
    with pytest.raises(pre.WorkerDied, match=r"encoding worker \d+ died \(exit code -9.*fewer workers"):
        preprocess(config(corpus), quiet, workers=2, progress=False)
    assert not (corpus / "bin").exists() and not (corpus / "bin.partial").exists()
    assert not any(p.is_alive() for p in _Recorded.pools[-1].procs)


def test_bad_utf8_names_file_and_line(corpus):
    (corpus / "a.fr").write_bytes(open(corpus / "a.fr", "rb").read().replace(b"\xc3\xa9", b"\xe9", 1))
    with pytest.raises(ValueError, match=r"a\.fr:\d+: not valid UTF-8"):
        preprocess(config(corpus), quiet, workers=1, progress=False)


def test_trainer_trains_and_resumes_on_binarized_data(tmp_path):
    """One process: the unchanged Trainer maps the binarized directory through prepare_data."""
    import sys

    sys.path.insert(0, "tests")
    from tiny_runs import write_config, write_task

    from seqed.train import Trainer

    write_task(tmp_path)
    path = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "run", train="max_steps: 4, valid_every: 2")
    cfg = load_config(path, [f"data.binarized={tmp_path}/bin"])
    preprocess(cfg, quiet, workers=1, progress=False)
    state = Trainer(cfg, progress=False).run()
    assert state.step == 4
    cfg = load_config(path, [f"data.binarized={tmp_path}/bin", "train.max_steps=6"])
    assert Trainer(cfg, resume=True, progress=False).run().step == 6  # the checkpoint's tokenizer is the directory's


@pytest.mark.parametrize("monolingual", [False, True])
def test_in_memory_and_binarized_paths_hold_identical_pairs(corpus, monkeypatch, monolingual):
    """The two data paths are one: the same chunks, filters (length, ratio, duplicates) and report, written to
    a `MemoryStore` or to the binarized directory, give the same pairs, ids and counts."""
    monkeypatch.setattr(reader, "CHUNK", 50)  # duplicates and filtered pairs fall in several chunks
    extra = ["data.max_len=12", "data.max_ratio=1.5", "data.min_len=2"] + (["data.monolingual=true"] if monolingual
                                                                          else [])
    cfg = config(corpus, *extra)
    binarized = open_binarized(cfg, quiet, workers=2)
    tokenizer = binarized.tokenizer
    mem = prepare_data(config(corpus, *extra, "data.binarized="), tokenizer, quiet)
    report = binarized.manifest["report"]
    assert 0 < report["kept"] < report["total"] and report["duplicates"] > 0 and report["too_long"] > 0
    assert mem.report == f"train: {FilterReport(**report)}"
    n = len(binarized)
    assert n == len(mem.train) > report["kept"]  # weight 1.5 on the second corpus
    stored = binarized.stored_index(np.arange(n))
    for i in range(n):
        s_off, s_len = binarized.src_offsets[stored[i]], int(binarized._src_lens[stored[i]]) - 1
        t_off, t_len = binarized.tgt_offsets[stored[i]], int(binarized._tgt_lens[stored[i]]) - 1
        assert binarized.ids[s_off: s_off + s_len].tolist() == mem.train.src_ids[i]
        assert binarized.ids[t_off: t_off + t_len].tolist() == mem.train.tgt_ids[i]
