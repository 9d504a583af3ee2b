"""The binarized on-disk format: round trip against the in-memory pipeline, uint32 ids, corpus weights,
a half-written directory never read, the pooled sampler."""

import numpy as np
import pytest

from seqed.data.batching import ParallelData, TokenBatchSampler
from seqed.data.store import (BinarizedData, BinarizedError, BinarizedWriter, epoch_sizes, id_dtype,
                                  stored_positions)
from seqed.tokenizer import Tokenizer

WORDS = "the a cat dog sees runs big small red house tree bird eats sleeps on under".split()


@pytest.fixture(scope="module")
def tokenizer():
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(300)]
    return Tokenizer.train(lines, None, vocab_size=40, model_type="bpe")


def random_pairs(n, seed=0, vocab=40):
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, vocab, rng.integers(1, 12)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, vocab, rng.integers(1, 12)).tolist() for _ in range(n)]
    return src, tgt


def write(directory, tokenizer, chunks, corpora=None, monolingual=False):
    """Write (src, tgt) id-list chunks; returns the directory."""
    with BinarizedWriter(directory, tokenizer, monolingual=monolingual) as w:
        for src, tgt in chunks:
            flat = lambda seqs: np.array([i for s in seqs for i in s], dtype=np.int64)  # noqa: E731
            lens = lambda seqs: np.array([len(s) for s in seqs])  # noqa: E731
            if monolingual:
                w.append(flat(src), lens(src))
            else:
                w.append(flat(src), lens(src), flat(tgt), lens(tgt))
        n = w.n
        w.finish({"corpora": corpora or [{"pairs": n}]})
    return directory


def test_round_trip_equals_in_memory_batches(tmp_path, tokenizer):
    src, tgt = random_pairs(500)
    chunks = [(src[i: i + 64], tgt[i: i + 64]) for i in range(0, 500, 64)]
    data = BinarizedData(write(tmp_path / "bin", tokenizer, chunks), tokenizer=tokenizer)
    mem = ParallelData(src, tgt)
    assert len(data) == 500 and data.ids.dtype == np.uint16
    for a, b in zip(data.lengths(), mem.lengths()):
        assert np.array_equal(a, b)
    sampler = TokenBatchSampler(*data.lengths(), max_tokens=120, seed=3, pad_to_multiple=8)
    for idx in sampler.batches(0):
        a, b = data.batch(idx, pad_to_multiple=8), mem.batch(idx, pad_to_multiple=8)
        for k in ("src", "tgt_in", "tgt_out", "indices"):
            assert getattr(a, k).dtype == getattr(b, k).dtype
            assert getattr(a, k).equal(getattr(b, k)), k


def test_monolingual_stores_ids_once(tmp_path, tokenizer):
    src, _ = random_pairs(50)
    data = BinarizedData(write(tmp_path / "bin", tokenizer, [(src, None)], monolingual=True))
    assert data.ids.size == sum(map(len, src))
    a, b = data.batch(range(50)), ParallelData(src, src).batch(range(50))
    assert a.src.equal(b.src) and a.tgt_out.equal(b.tgt_out) and a.tgt_in.equal(b.tgt_in)


def test_vocab_over_uint16_switches_to_uint32(tmp_path, tokenizer, monkeypatch):
    assert id_dtype(65536) == np.uint16 and id_dtype(65537) == np.uint32
    monkeypatch.setattr(tokenizer, "src_vocab_size", 100_000)
    monkeypatch.setattr(tokenizer, "tgt_vocab_size", 100_000)
    src, tgt = random_pairs(40, vocab=100_000)
    assert max(max(s) for s in src) > 65535
    data = BinarizedData(write(tmp_path / "bin", tokenizer, [(src, tgt)]))
    assert data.ids.dtype == np.uint32 and data.manifest["dtype"] == "uint32"
    assert data.batch(range(40)).src.equal(ParallelData(src, tgt).batch(range(40)).src)


def test_interrupted_write_is_never_used(tmp_path, tokenizer):
    src, tgt = random_pairs(20)
    with pytest.raises(KeyboardInterrupt):
        with BinarizedWriter(tmp_path / "bin", tokenizer) as w:
            w.append(np.array(sum(src, [])), [len(s) for s in src], np.array(sum(tgt, [])), [len(t) for t in tgt])
            raise KeyboardInterrupt
    assert not (tmp_path / "bin").exists() and not (tmp_path / "bin.partial").exists()
    # a killed process leaves bin.partial behind: it is not a corpus, and the next writer replaces it
    (tmp_path / "bin.partial").mkdir()
    (tmp_path / "bin.partial" / "ids.bin").write_bytes(b"\0\0")
    with pytest.raises(BinarizedError, match="interrupted preprocessing"):
        BinarizedData(tmp_path / "bin")
    (tmp_path / "bin").mkdir()  # a directory without a manifest
    with pytest.raises(BinarizedError, match="no manifest.json"):
        BinarizedData(tmp_path / "bin")
    (tmp_path / "bin").rmdir()
    data = BinarizedData(write(tmp_path / "bin", tokenizer, [(src, tgt)]))
    assert len(data) == 20 and not (tmp_path / "bin.partial").exists()


def test_other_tokenizer_is_refused(tmp_path, tokenizer):
    src, tgt = random_pairs(10)
    directory = write(tmp_path / "bin", tokenizer, [(src, tgt)])
    other = Tokenizer.train([" ".join(WORDS)] * 50, None, vocab_size=30, model_type="bpe")
    with pytest.raises(BinarizedError, match="another tokenizer"):
        BinarizedData(directory, tokenizer=other)


def test_weights_repeat_and_sample_corpora(tmp_path, tokenizer):
    assert epoch_sizes([4, 3], [2, 0.5]).tolist() == [8, 2]
    assert stored_positions(np.arange(10), [4, 3], [8, 2]).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
    assert stored_positions(np.arange(6), [4, 3], [4, 2]).tolist() == [0, 1, 2, 3, 4, 5]
    assert stored_positions(np.arange(9), [2, 3], [2, 7]).tolist() == [0, 1, 2, 3, 4, 2, 3, 4, 2]
    src, tgt = random_pairs(7)
    directory = write(tmp_path / "bin", tokenizer, [(src, tgt)], corpora=[{"pairs": 4}, {"pairs": 3}])
    data = BinarizedData(directory, weights=[2, 0.5])
    assert len(data) == 10
    order = [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
    assert data.lengths()[0].tolist() == [len(src[i]) + 1 for i in order]
    ref = ParallelData([src[i] for i in order], [tgt[i] for i in order])
    assert data.batch(range(10)).src.equal(ref.batch(range(10)).src)
    with pytest.raises(BinarizedError, match="one weight per data.train entry"):
        BinarizedData(directory, weights=[1])


def test_pooled_sampler_covers_each_index_once_and_shards(tmp_path):
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(2, 30, 1000).astype(np.uint16), rng.integers(2, 30, 1000).astype(np.uint16)
    s = TokenBatchSampler(src, tgt, max_tokens=200, seed=4, pool_size=128)
    assert s.num_pools == 8
    batches = s.batches(2)
    flat = np.concatenate([np.asarray(b) for b in batches])
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) * max(src[b].max(), tgt[b].max()) <= 200 for b in batches)
    assert batches == TokenBatchSampler(src, tgt, max_tokens=200, seed=4, pool_size=128).batches(2)
    assert batches != s.batches(3)
    pool0 = set(np.concatenate(s._pool_batches(2, 0)).tolist())
    assert max(pool0) - min(pool0) > 500  # a pool is spread over the corpus, not a contiguous range
    shards = [TokenBatchSampler(src, tgt, max_tokens=200, seed=4, pool_size=128, num_shards=3,
                                shard_index=i).batches(2) for i in range(3)]
    assert len({len(x) for x in shards}) == 1 and shards[2] == batches[2: 3 * len(shards[0]): 3]


def test_pool_batch_count_from_histogram_equals_the_cut():
    rng = np.random.default_rng(5)
    for trial in range(20):
        n = int(rng.integers(200, 2000))
        src, tgt = rng.integers(1, 60, n), rng.integers(1, 60, n)
        s = TokenBatchSampler(src, tgt, max_tokens=int(rng.integers(60, 400)), seed=trial,
                              max_sentences=[None, 3, 7][trial % 3], pad_to_multiple=[1, 4][trial % 2],
                              pool_size=int(rng.integers(50, 500)))
        assert [s._pool_count(1, p) for p in range(s.num_pools)] == \
            [len(s._pool_batches(1, p)) for p in range(s.num_pools)]


def test_shards_resumed_from_a_global_batch_continue_the_order_exactly():
    """W processes took p batches each; W' processes start at global batch p * W: nothing repeated or lost."""
    rng = np.random.default_rng(2)
    src, tgt = rng.integers(2, 30, 700), rng.integers(2, 30, 700)

    def shard(world, i, start=0):
        return TokenBatchSampler(src, tgt, max_tokens=150, seed=3, pool_size=100, num_shards=world,
                                 shard_index=i).batches(1, start)

    order = list(shard(1, 0))
    for before, after, p in ((2, 1, 3), (1, 2, 5), (2, 3, 4), (3, 2, 1)):
        taken = [b for i in range(before) for b in shard(before, i)[:p]]
        rest = [shard(after, i, p * before) for i in range(after)]
        assert len({len(r) for r in rest}) == 1
        rest = [b for r in rest for b in r]
        # together: the global order's first p * before + len(rest) batches, each once
        assert sorted(map(tuple, taken + rest)) == sorted(map(tuple, order[: len(taken) + len(rest)]))
        assert len(order) - len(taken) - len(rest) < after  # only the epoch's last uneven batches are dropped
    assert len(shard(2, 0, len(order))) == 0
