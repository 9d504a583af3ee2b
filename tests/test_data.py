"""Corpus reading, filtering, collation and token-budget batch sampling."""

import json

import numpy as np
import pytest
import torch

from seqed.data import Batch, ParallelData, TokenBatchSampler, collate, filter_pairs
from seqed.data.corpus import load_hf, read_lines, read_monolingual, read_parallel, read_tsv
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID

# ---------------------------------------------------------------------------------------------
# corpus


def test_read_lines_strips_crlf_and_keeps_empty_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"one\r\ntwo\r\n\r\nthree\r\n")
    assert read_lines(p) == ["one", "two", "", "three"]
    q = tmp_path / "b.txt"
    q.write_bytes("\ufeffun\ndeux\u2028suite\ntrois".encode())  # BOM dropped; U+2028 is not a line break here
    assert read_lines(q) == ["un", "deux\u2028suite", "trois"]
    assert read_monolingual(q) == read_lines(q)


def test_strict_names_the_first_empty_sentence_and_counts_them(tmp_path):
    from seqed.config import load_config
    from seqed.data.corpus import DataError
    from seqed.data.pipeline import prepare_data

    (tmp_path / "a.en").write_text("one\n\nthree\nfour\n")
    (tmp_path / "a.fr").write_text("un\ndeux\n \nquatre\n")
    cfg = load_config(None, [f"data.train.src={tmp_path}/a.en", f"data.train.tgt={tmp_path}/a.fr",
                             "data.strict=true", "tokenizer.vocab_size=20"])
    with pytest.raises(DataError, match=r"a\.en:2: empty sentence \(2 pairs with an empty side in data\.train\)"):
        prepare_data(cfg, None, lambda m: None)


def test_an_unset_variable_in_a_corpus_path_is_named(tmp_path, monkeypatch):
    from seqed.config import ConfigError, load_config
    from seqed.data.pipeline import prepare_data

    monkeypatch.delenv("SEQED_DATA", raising=False)
    cfg = load_config(None, ["data.train.src=$SEQED_DATA/multi30k/train.en",
                             "data.train.tgt=$SEQED_DATA/multi30k/train.fr"])
    with pytest.raises(ConfigError, match=r"data\.train\.src uses \$SEQED_DATA, which is not set: set SEQED_DATA to "
                                          r"the folder holding multi30k/ .*recipes/README\.md"):
        prepare_data(cfg, None, lambda m: None)
    monkeypatch.setenv("SEQED_DATA", str(tmp_path))  # set: the usual message for a missing file
    with pytest.raises(FileNotFoundError, match=f"no such file: {tmp_path}/multi30k/train.en"):
        prepare_data(cfg, None, lambda m: None)


def test_read_lines_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_lines(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        read_lines(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("ok\nstill ok\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt:3: not valid UTF-8.*iconv"):
        read_lines(latin)


def test_read_parallel_mismatch_names_files_and_counts(tmp_path):
    (tmp_path / "x.en").write_text("a\nb\nc\n")
    (tmp_path / "x.fr").write_text("a\nb\n")
    with pytest.raises(ValueError) as err:
        read_parallel(tmp_path / "x.en", tmp_path / "x.fr")
    msg = str(err.value)
    assert "x.en has 3 lines" in msg and "x.fr has 2" in msg
    (tmp_path / "x.fr").write_text("A\nB\nC")  # no final newline
    assert read_parallel(tmp_path / "x.en", tmp_path / "x.fr") == (["a", "b", "c"], ["A", "B", "C"])


def test_read_tsv(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("Hi.\tSalut.\tCC-BY\r\nRun!\tCours\u202f!\tCC-BY\n")
    assert read_tsv(p) == (["Hi.", "Run!"], ["Salut.", "Cours\u202f!"])
    assert read_tsv(p, src_column=1, tgt_column=0) == (["Salut.", "Cours\u202f!"], ["Hi.", "Run!"])
    p.write_text("Hi.\tSalut.\nno tab here\nOK\tD'accord\n")
    with pytest.raises(ValueError, match=r"pairs\.tsv:2: 1 tab-separated field"):
        read_tsv(p)


@pytest.fixture
def hf_tmp_cache(tmp_path, monkeypatch):
    """`datasets`, with the arrow caches it writes for local files kept out of the home directory."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    return datasets


@pytest.fixture
def translation_jsonl(tmp_path, hf_tmp_cache):
    p = tmp_path / "tr.jsonl"
    rows = [{"translation": {"en": f"sentence {i}", "fr": f"phrase {i}"}} for i in range(5)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_load_hf_local_json_translation(translation_jsonl):
    src, tgt = load_hf("json", data_files=str(translation_jsonl))
    assert src == [f"sentence {i}" for i in range(5)] and tgt == [f"phrase {i}" for i in range(5)]
    assert load_hf("json", data_files=str(translation_jsonl), limit=2) == (src[:2], tgt[:2])
    assert load_hf("json", data_files=str(translation_jsonl), src_lang="fr", tgt_lang="en") == (tgt, src)
    assert load_hf("json", data_files=str(translation_jsonl), streaming=True, limit=3) == (src[:3], tgt[:3])
    with pytest.raises(ValueError, match="languages"):
        load_hf("json", data_files=str(translation_jsonl), tgt_lang="de")


def test_load_hf_flat_columns_json_and_parquet(tmp_path, hf_tmp_cache):
    datasets = hf_tmp_cache
    p = tmp_path / "flat.jsonl"
    p.write_text("".join(json.dumps({"en": f"e{i}", "fr": f"f{i}", "id": i}) + "\n" for i in range(4)))
    assert load_hf("json", data_files=str(p)) == (["e0", "e1", "e2", "e3"], ["f0", "f1", "f2", "f3"])
    pq = tmp_path / "flat.parquet"
    datasets.Dataset.from_dict({"source": ["a", "b", "c"], "target": ["A", "B", None]}).to_parquet(str(pq))
    assert load_hf("parquet", data_files=str(pq), src_field="source", tgt_field="target") == \
        (["a", "b", "c"], ["A", "B", ""])
    with pytest.raises(ValueError, match=r"no column 'en'.*source"):
        load_hf("parquet", data_files=str(pq))


def test_load_hf_local_errors(tmp_path, hf_tmp_cache):
    with pytest.raises(ValueError, match="data_files"):
        load_hf("json")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_hf("json", data_files=str(tmp_path / "nope.jsonl"))


# ---------------------------------------------------------------------------------------------
# filtering


def test_filter_pairs_counts_each_rule_once():
    src = [0, 5, 3, 300, 10, 1, 4, 2, 9]
    tgt = [4, 0, 3, 10, 300, 5, 4, 1, 3]
    keep, report = filter_pairs(src, tgt, max_len=256, max_ratio=3.0)
    # pair 5 (1 vs 5) and 7 (2 vs 1 is fine, ratio 2) ; 5 has ratio 5 > 3
    assert keep == [2, 6, 7, 8]
    assert (report.total, report.kept, report.empty, report.too_long, report.bad_ratio) == (9, 4, 2, 2, 1)
    assert report.total == report.kept + report.empty + report.too_long + report.bad_ratio + report.too_short
    assert "kept 4 of 9" in str(report)
    keep, report = filter_pairs(src, tgt, max_len=256, max_ratio=None, min_len=3)
    assert keep == [2, 6, 8] and report.too_short == 2 and report.bad_ratio == 0


def test_filter_pairs_bad_arguments():
    with pytest.raises(ValueError, match="3 source lengths but 2"):
        filter_pairs([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="max_ratio"):
        filter_pairs([1], [1], max_ratio=0.5)


# ---------------------------------------------------------------------------------------------
# collation


def test_collate_places_bos_eos_and_pads():
    src = [[5, 6, 7, EOS_ID], [8, EOS_ID]]
    tgt = [[10], [11, 12, 13]]
    b = collate(src, tgt, [4, 9])
    assert b.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert b.tgt_in.tolist() == [[BOS_ID, 10, PAD_ID, PAD_ID], [BOS_ID, 11, 12, 13]]
    assert b.tgt_out.tolist() == [[10, EOS_ID, PAD_ID, PAD_ID], [11, 12, 13, EOS_ID]]
    assert b.indices.tolist() == [4, 9] and b.indices.dtype == torch.long
    assert b.src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert (b.n_src_tokens, b.n_tgt_tokens) == (6, 6)
    assert b.src.dtype == b.tgt_in.dtype == b.tgt_out.dtype == torch.long


def test_collate_pad_to_multiple_and_src_eos():
    b = collate([[5, 6], [7]], [[10, 11, 12], []], [0, 1], pad_to_multiple=8, append_src_eos=True)
    assert b.src.shape == (2, 8) and b.tgt_in.shape == (2, 8)
    assert b.src[:, :3].tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert b.tgt_in[1, :2].tolist() == [BOS_ID, PAD_ID] and b.tgt_out[1, :2].tolist() == [EOS_ID, PAD_ID]
    assert b.n_src_tokens == 5 and b.n_tgt_tokens == 5
    moved = b.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.tgt_out, b.tgt_out)


def test_parallel_data_lengths_and_batch():
    data = ParallelData([[5, 6], [7], [8, 9, 10]], [[11], [12, 13], []])
    src_lens, tgt_lens = data.lengths()
    assert len(data) == 3 and src_lens.tolist() == [3, 2, 4] and tgt_lens.tolist() == [2, 3, 1]
    b = data.batch([2, 0])
    assert b.src.tolist() == [[8, 9, 10, EOS_ID], [5, 6, EOS_ID, PAD_ID]]
    assert b.tgt_in.tolist() == [[BOS_ID, PAD_ID], [BOS_ID, 11]]
    assert b.tgt_out.tolist() == [[EOS_ID, PAD_ID], [11, EOS_ID]]
    # the lengths the sampler budgets are exactly the batch widths
    assert b.src.size(1) == src_lens[[2, 0]].max() and b.tgt_in.size(1) == tgt_lens[[2, 0]].max()


# ---------------------------------------------------------------------------------------------
# sampling


@pytest.fixture
def lengths():
    rng = np.random.default_rng(0)
    return rng.integers(2, 40, 1000), rng.integers(2, 40, 1000)


def test_sampler_covers_every_index_once_within_budget(lengths):
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, max_tokens=200, max_sentences=30, pad_to_multiple=4)
    batches = sampler.batches(0)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    width = lambda x: -(-x // 4) * 4  # noqa: E731
    for b in batches:
        assert len(b) <= 30
        assert len(b) * max(width(src[b]).max(), width(tgt[b]).max()) <= 200
    # batches are length-bucketed: far less padding than random batches would give
    waste = sum(len(b) * max(src[b].max(), tgt[b].max()) for b in batches) / np.maximum(src, tgt).sum()
    assert waste < 1.3


def test_sampler_deterministic_per_seed_and_epoch(lengths):
    src, tgt = lengths
    a = TokenBatchSampler(src, tgt, max_tokens=300, seed=7)
    b = TokenBatchSampler(src, tgt, max_tokens=300, seed=7)
    assert a.batches(3) == b.batches(3)
    assert a.batches(0) != a.batches(1)
    assert TokenBatchSampler(src, tgt, max_tokens=300, seed=8).batches(3) != a.batches(3)
    a.set_epoch(1)
    assert list(a) == a.batches(1) and len(a) == len(a.batches(1))


def test_sampler_without_shuffle_is_in_length_order(lengths):
    src, tgt = lengths
    batches = TokenBatchSampler(src, tgt, max_tokens=300, shuffle=False).batches(5)
    widest = [np.maximum(src[b], tgt[b]).max() for b in batches]
    assert widest == sorted(widest)


def test_shards_are_disjoint_and_equal(lengths):
    src, tgt = lengths
    shards = [TokenBatchSampler(src, tgt, max_tokens=250, num_shards=3, shard_index=i, seed=2).batches(4)
              for i in range(3)]
    full = TokenBatchSampler(src, tgt, max_tokens=250, seed=2).batches(4)
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(full) // 3
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))
    assert shards[1] == full[1: 3 * (len(full) // 3): 3]


def test_sampler_rejects_too_long_example():
    with pytest.raises(ValueError, match=r"example 1 is 50 tokens.*max_tokens=40"):
        TokenBatchSampler([3, 50, 4], [3, 5, 4], max_tokens=40)
    with pytest.raises(ValueError, match="shard_index"):
        TokenBatchSampler([3], [3], max_tokens=40, num_shards=2, shard_index=2)


# -- the `format: hf` branch of load_corpus on a local dataset saved with `datasets` ---------------------


@pytest.fixture
def saved_dataset(tmp_path, hf_tmp_cache, monkeypatch):
    """A 4-row en/fr Dataset saved twice: `save_to_disk` (arrow shard + state.json) and `to_parquet`."""
    datasets = hf_tmp_cache
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # local files only: never the hub
    ds = datasets.Dataset.from_dict({"en": [f"a man {i}" for i in range(4)], "fr": [f"un homme {i}" for i in range(4)],
                                     "id": list(range(4))})
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "flat.parquet"))
    return tmp_path


def test_hf_corpus_reads_a_local_parquet_dataset(saved_dataset):
    from seqed.config import CorpusConfig
    from seqed.data.corpus import load_corpus

    spec = CorpusConfig(format="hf", name="parquet", data_files=str(saved_dataset / "flat.parquet"))
    en, fr = [f"a man {i}" for i in range(4)], [f"un homme {i}" for i in range(4)]
    assert load_corpus(spec) == (en, fr)
    assert load_corpus(spec, src_lang="fr", tgt_lang="en") == (fr, en)  # columns named by the languages
    assert load_corpus(spec, monolingual=True) == (en, en)  # autoencoders: the src side twice
    assert load_corpus(CorpusConfig(format="hf", name="parquet", data_files=str(saved_dataset / "flat.parquet"),
                                    src_field="fr", tgt_field="en", limit=2)) == (fr[:2], en[:2])


def test_hf_corpus_on_a_save_to_disk_directory(saved_dataset):
    """What `format: hf` supports for `Dataset.save_to_disk` output: its arrow shard through the `arrow`
    builder reads; the directory itself as `name` is rejected by `datasets` (it wants `load_from_disk`,
    which seqed does not call), with a message that says so."""
    from seqed.config import ConfigError, CorpusConfig
    from seqed.data.corpus import load_corpus

    shard = str(saved_dataset / "saved" / "data-00000-of-00001.arrow")
    en = [f"a man {i}" for i in range(4)]
    assert load_corpus(CorpusConfig(format="hf", name="arrow", data_files=shard), monolingual=True) == (en, en)
    with pytest.raises(ValueError, match="load_from_disk"):
        load_corpus(CorpusConfig(format="hf", name=str(saved_dataset / "saved")))
    with pytest.raises(ConfigError, match="needs `name`"):
        load_corpus(CorpusConfig(format="hf", data_files=shard))
