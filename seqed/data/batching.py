"""Padded batches and token-budget, length-bucketed batch sampling.

Sources end with EOS; the decoder reads BOS + target (`tgt_in`) and predicts target + EOS (`tgt_out`).
Bucketing by length and capping padded tokens instead of sentences follows fairseq (Ott et al., 2019,
https://arxiv.org/abs/1904.01038): batches of similar lengths waste little compute on padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from seqed.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    """One padded batch.

    Attributes:
        src: (B, S) long source ids, PAD_ID padded, EOS-terminated when built by `ParallelData` (no BOS).
        tgt_in: (B, T) long, BOS + target, PAD_ID padded.
        tgt_out: (B, T) long, target + EOS, PAD_ID padded.
        indices: (B,) long positions of these examples in the dataset.
    """

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    indices: Tensor

    @property
    def src_mask(self) -> Tensor:
        """(B, S) bool, True at real source tokens."""
        return self.src != PAD_ID

    @property
    def n_src_tokens(self) -> int:
        return int((self.src != PAD_ID).sum())

    @property
    def n_tgt_tokens(self) -> int:
        """Non-pad tokens of `tgt_out`: the tokens the loss is taken over."""
        return int((self.tgt_out != PAD_ID).sum())

    def __len__(self) -> int:
        return self.src.size(0)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.src, self.tgt_in, self.tgt_out,
                                                                         self.indices)))

    def pin_memory(self) -> "Batch":
        return Batch(*(t.pin_memory() for t in (self.src, self.tgt_in, self.tgt_out, self.indices)))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad(seqs: Sequence[Sequence[int]], width: int, offset: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad with PAD_ID into (B, width), each row starting at column `offset`.

    Returns:
        (padded (B, width) long, lengths (B,) long).
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    out = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)  # (B, width)
    cols = torch.arange(width - offset)  # (W,)
    mask = cols.unsqueeze(0) < lengths.unsqueeze(1)  # (B, W)
    flat = torch.tensor(list(chain.from_iterable(seqs)), dtype=torch.long)  # (sum of lengths,)
    out[:, offset:][mask] = flat
    return out, lengths


def collate(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], indices, *,
            pad_to_multiple: int = 1, append_src_eos: bool = False) -> Batch:
    """Pad a list of examples into a `Batch`.

    Args:
        src_ids: B source id lists, used as given (the caller appends EOS) unless `append_src_eos`.
        tgt_ids: B target id lists without BOS/EOS (may be empty, e.g. when only `src` is wanted).
        indices: B dataset positions.
        pad_to_multiple: round S and T up to a multiple of this (8 suits tensor cores).
        append_src_eos: append EOS_ID to every source.

    Returns:
        a `Batch` with src (B, S), tgt_in / tgt_out (B, T).
    """
    if len(src_ids) != len(tgt_ids) or len(src_ids) != len(indices):
        raise ValueError(f"collate: {len(src_ids)} sources, {len(tgt_ids)} targets and {len(indices)} indices; "
                         f"they must match")
    if pad_to_multiple < 1:
        raise ValueError(f"collate: pad_to_multiple must be >= 1, got {pad_to_multiple}")
    extra = int(append_src_eos)
    rows = torch.arange(len(src_ids))  # (B,)
    s_width = _round_up(max((len(s) for s in src_ids), default=0) + extra, pad_to_multiple)
    src, src_len = _pad(src_ids, s_width)  # (B, S)
    if append_src_eos:
        src[rows, src_len] = EOS_ID
    t_width = _round_up(max((len(t) for t in tgt_ids), default=0) + 1, pad_to_multiple)
    tgt_out, tgt_len = _pad(tgt_ids, t_width)  # (B, T): target, then EOS below
    tgt_out[rows, tgt_len] = EOS_ID
    tgt_in, _ = _pad(tgt_ids, t_width, offset=1)  # (B, T): BOS, then target
    tgt_in[:, 0] = BOS_ID
    return Batch(src=src, tgt_in=tgt_in, tgt_out=tgt_out,
                 indices=torch.as_tensor(np.asarray(indices, dtype=np.int64)))


def length_sorted(lengths: Sequence[int], batch_size: int, *, longest_first: bool = False) -> list[list[int]]:
    """Positions grouped into batches of up to `batch_size` sentences of similar length (inference:
    least padding); shortest first unless `longest_first` (then a too-large batch fails at once)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=longest_first)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


POOL_SIZE = 1 << 20  # examples sorted together; bounds the sampler's memory whatever the corpus size


class TokenBatchSampler:
    """Length-bucketed batches of at most max_tokens padded tokens (B * max(S, T) <= max_tokens), seeded shuffle.

    Each epoch: sort examples by padded length (random tie-breaking), cut the sorted list greedily into
    batches under the token budget, then shuffle the batch order. Deterministic given (seed, epoch).
    With `num_shards` > 1 (data parallel), every shard gets the same number of batches: the last
    `len % num_shards` batches of the shuffled order are dropped for that epoch, and shard i takes
    batches[i::num_shards].

    Corpora of more than `pool_size` examples are handled a pool at a time, so memory does not grow
    with the corpus (the lengths themselves may be memory-mapped arrays): each epoch the examples are
    dealt into pools of `pool_size` by a seeded affine permutation `k -> (a * k + b) mod N` (every pool
    is an evenly spread sample of the whole corpus, so several concatenated corpora mix), each pool is
    sorted, cut and shuffled as above with its own seed, and the epoch is pool 0's batches, then pool 1's,
    and so on. A pool's batches are built when first needed. Without shuffle, pools are consecutive
    ranges, each in length order.
    """

    def __init__(self, src_lens, tgt_lens, *, max_tokens: int, max_sentences: Optional[int] = None,
                 shuffle: bool = True, seed: int = 1, num_shards: int = 1, shard_index: int = 0,
                 pad_to_multiple: int = 1, pool_size: int = POOL_SIZE):
        """
        Args:
            src_lens: (N,) source lengths as batched (EOS included); any integer array, memmaps included.
            tgt_lens: (N,) target lengths as batched (BOS/EOS included: the length of tgt_in).
            max_tokens: budget of padded tokens per batch, B * max(S, T).
            max_sentences: at most this many examples per batch (None: no cap).
            shuffle: random tie-breaking and batch order; False gives batches in length order.
            seed: seed of the shuffle, combined with the epoch.
            num_shards, shard_index: this process's share of each epoch's batches.
            pad_to_multiple: the rounding `collate` applies to S and T, counted in the budget.
            pool_size: examples sorted together (see the class docstring).
        """
        src = np.asarray(src_lens).reshape(-1)  # no copy: a memmap stays on disk
        tgt = np.asarray(tgt_lens).reshape(-1)
        if src.shape != tgt.shape:
            raise ValueError(f"TokenBatchSampler: {src.size} source lengths but {tgt.size} target lengths")
        if src.size == 0:
            raise ValueError("TokenBatchSampler: the dataset is empty (did filtering drop every pair?)")
        if max_tokens < 1:
            raise ValueError(f"TokenBatchSampler: max_tokens must be >= 1, got {max_tokens}")
        if max_sentences is not None and max_sentences < 1:
            raise ValueError(f"TokenBatchSampler: max_sentences must be >= 1 or None, got {max_sentences}")
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(f"TokenBatchSampler: need 0 <= shard_index < num_shards, got shard_index={shard_index}, "
                             f"num_shards={num_shards}")
        if pad_to_multiple < 1 or pool_size < 1:
            raise ValueError(f"TokenBatchSampler: pad_to_multiple and pool_size must be >= 1, got "
                             f"{pad_to_multiple} and {pool_size}")
        if src.size >= 2 ** 32:
            raise ValueError(f"TokenBatchSampler: {src.size} examples; at most 2**32 - 1 are supported")
        self._src, self._tgt = src, tgt
        self.multiple = pad_to_multiple
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences or len(src)
        self.n = int(src.size)
        self.pool_size = pool_size
        self.num_pools = -(-self.n // pool_size)
        # Padding is monotone, so the widest padded row pads the longest length: one vectorized max.
        self.top = self._pad(max(int(src.max()), int(tgt.max())))
        if self.top > max_tokens:
            for start in range(0, self.n, pool_size):  # only now: find the example, chunked
                sizes = self._sizes(slice(start, min(start + pool_size, self.n)))[1]
                longest = int(sizes.argmax())
                if sizes[longest] > max_tokens:
                    raise ValueError(f"TokenBatchSampler: example {start + longest} is {int(sizes[longest])} tokens "
                                     f"long (padded), more than max_tokens={max_tokens}: filter long pairs first "
                                     f"(data.max_len) or raise max_tokens")
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.epoch = 0
        self._counts: Optional[tuple[int, np.ndarray]] = None
        self._hist: Optional[tuple[int, np.ndarray]] = None
        self._pool: Optional[tuple[int, int, list[np.ndarray]]] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pad(self, length):
        """`length` (an int or an int64 array) rounded up to the multiple `collate` pads to."""
        m = self.multiple
        return (length + m - 1) // m * m

    def _sizes(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """(padded source widths (k,), tokens per row max(S, T) (k,)) of the examples `idx` (indices or a
        slice), int64."""
        src = self._pad(self._src[idx].astype(np.int64))  # (k,)
        tgt = self._pad(self._tgt[idx].astype(np.int64))  # (k,)
        return src, np.maximum(src, tgt)

    def _affine(self, epoch: int) -> tuple[int, int]:
        """(a, b) of the epoch's pool permutation k -> (a k + b) mod N."""
        rng = np.random.default_rng([self.seed, epoch, 1 << 30])
        while True:  # a multiplier coprime with N makes k -> (a k + b) mod N a permutation
            a = int(rng.integers(1, self.n))
            if math.gcd(a, self.n) == 1:
                break
        return a, int(rng.integers(0, self.n))

    def _members(self, epoch: int, pool: int) -> np.ndarray:
        """(k,) the example indices of one pool of the epoch."""
        lo, hi = pool * self.pool_size, min((pool + 1) * self.pool_size, self.n)
        if self.num_pools == 1 or not self.shuffle:
            return np.arange(lo, hi)
        a, b = self._affine(epoch)
        k = np.arange(lo, hi, dtype=np.uint64)
        return ((k * np.uint64(a) + np.uint64(b)) % np.uint64(self.n)).astype(np.int64)  # (k,) < 2**64: N < 2**32

    def _pool_batches(self, epoch: int, pool: int) -> list[np.ndarray]:
        """The batches of one pool, in their shuffled order."""
        if self._pool is not None and self._pool[:2] == (epoch, pool):
            return self._pool[2]
        members = self._members(epoch, pool)
        # One pool: the generator of the original, whole-corpus sampler, so small corpora batch as before.
        rng = np.random.default_rng([self.seed, epoch] if self.num_pools == 1 else [self.seed, epoch, pool])
        src_w, sizes = self._sizes(members)
        n = members.size
        ties = rng.permutation(n) if self.shuffle else np.arange(n)
        order = np.lexsort((ties, src_w, sizes))  # (k,) by size, then source length, then random
        sizes = sizes[order]  # (k,) non-decreasing
        starts = []
        i = 0
        while i < n:  # one iteration per batch; the batch end is found with array ops
            # sizes are sorted, so a batch starting at i holds at most max_tokens // sizes[i] examples
            window = min(self.max_tokens // int(sizes[i]), self.max_sentences, n - i)
            fits = np.arange(1, window + 1) * sizes[i: i + window] <= self.max_tokens  # (W,) True then False
            starts.append(i)
            i += int(fits.sum())
        batches = np.split(members[order], starts[1:])
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        self._pool = (epoch, pool, batches)
        return batches

    def _histograms(self, epoch: int) -> np.ndarray:
        """(pools, top + 1) int64: how many examples of each padded size every pool of `epoch` holds.

        One sequential pass over the lengths (no gather of each pool's members): example i belongs to pool
        k // pool_size where k = a^-1 (i - b) mod N inverts the epoch's permutation.
        """
        if self._hist is not None and self._hist[0] == epoch:
            return self._hist[1]
        width = self.top + 1
        hist = np.zeros(self.num_pools * width, dtype=np.int64)
        shuffled = self.shuffle and self.num_pools > 1
        if shuffled:
            a, b = self._affine(epoch)
            a_inv, n = np.uint64(pow(a, -1, self.n)), np.uint64(self.n)
        for start in range(0, self.n, self.pool_size):
            stop = min(start + self.pool_size, self.n)
            sizes = self._sizes(slice(start, stop))[1]  # (k,)
            i = np.arange(start, stop, dtype=np.uint64)
            # (i + N - b) mod N and a^-1 are both < N < 2**32, so their product fits in uint64.
            k = (i + n - np.uint64(b)) % n * a_inv % n if shuffled else i
            pools = (k // np.uint64(self.pool_size)).astype(np.int64)
            hist += np.bincount(pools * width + sizes, minlength=hist.size)
        self._hist = (epoch, hist.reshape(self.num_pools, width))
        return self._hist[1]

    def _pool_count(self, epoch: int, pool: int) -> int:
        """How many batches `_pool_batches` cuts from a pool, from its histogram of sizes (no sort).

        The greedy cut depends only on the sorted sizes, i.e. on the histogram: a batch starting at size a
        takes k examples while k <= min(max_tokens // a, max_sentences) and k * (size of the k-th) <= max_tokens.
        Whole batches inside one run of equal sizes are counted at once.
        """
        if self.num_pools == 1:
            return len(self._pool_batches(epoch, pool))
        hist = self._histograms(epoch)[pool]
        values = np.flatnonzero(hist).tolist()
        counts = hist[values].tolist()
        m, cap_s = self.max_tokens, self.max_sentences
        batches, j, used = 0, 0, 0  # run j, examples of it already in earlier batches
        while j < len(values):
            cap = min(m // values[j], cap_s)
            full = (counts[j] - used) // cap
            batches += full
            used += full * cap
            if used == counts[j]:
                j, used = j + 1, 0
                continue
            batches += 1  # a batch starting inside run j, possibly reaching into the next runs
            k = 0
            while j < len(values):
                take = min(counts[j] - used, min(m // values[j], cap) - k)
                if take <= 0:
                    break
                k += take
                used += take
                if used == counts[j]:
                    j, used = j + 1, 0
                else:
                    break
        return batches

    def _pool_starts(self, epoch: int) -> np.ndarray:
        """(pools + 1,) cumulative batch counts: pool p holds global batches starts[p]:starts[p + 1]."""
        if self._counts is None or self._counts[0] != epoch:
            counts = [self._pool_count(epoch, p) for p in range(self.num_pools)]
            self._counts = (epoch, np.concatenate([[0], np.cumsum(counts)]))
        return self._counts[1]

    def global_batch(self, epoch: int, g: int) -> np.ndarray:
        """Batch `g` of the epoch over all shards, as an index array."""
        starts = self._pool_starts(epoch)
        pool = int(np.searchsorted(starts, g, side="right")) - 1
        return self._pool_batches(epoch, pool)[g - int(starts[pool])]

    def batches(self, epoch: int, start: int = 0) -> "EpochBatches":
        """This shard's batches of `epoch` after its first `start` global batches (consumed by a run with
        another number of shards): a sequence of index lists, built a pool at a time."""
        return EpochBatches(self, epoch, start)

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


class EpochBatches(Sequence):
    """One shard's batches of one epoch (lists of dataset indices); compares equal to the same list.

    Shard i takes global batches start + i, start + i + num_shards, ...: the global order does not depend
    on the number of shards, so a run resumed with another number of processes continues it exactly.
    """

    def __init__(self, sampler: TokenBatchSampler, epoch: int, start: int = 0):
        self.sampler, self.epoch, self.start = sampler, epoch, start
        total = int(sampler._pool_starts(epoch)[-1])
        self._len = max(total - start, 0) // sampler.num_shards

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(self._len))]
        if j < 0:
            j += self._len
        if not 0 <= j < self._len:
            raise IndexError(f"batch {j} of an epoch with {self._len}")
        s = self.sampler
        return s.global_batch(self.epoch, self.start + j * s.num_shards + s.shard_index).tolist()

    def __eq__(self, other) -> bool:
        if isinstance(other, (EpochBatches, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented


class ParallelData:
    """Token ids of a corpus plus the sampler: the thing the trainer iterates."""

    def __init__(self, src_ids: list[list[int]], tgt_ids: list[list[int]]):
        """
        Args:
            src_ids: N source id lists without BOS/EOS.
            tgt_ids: N target id lists without BOS/EOS.
        """
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"ParallelData: {len(src_ids)} sources but {len(tgt_ids)} targets")
        self.src_ids = src_ids
        self.tgt_ids = tgt_ids
        self._src_lens = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids)) + 1  # + EOS
        self._tgt_lens = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids)) + 1  # + BOS / EOS

    def __len__(self) -> int:
        return len(self.src_ids)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) source lengths with EOS and (N,) target lengths with BOS (= with EOS), as batched."""
        return self._src_lens, self._tgt_lens

    def batch(self, indices: Sequence[int], pad_to_multiple: int = 1) -> Batch:
        """The examples at `indices`, padded; sources get EOS appended."""
        return collate([self.src_ids[i] for i in indices], [self.tgt_ids[i] for i in indices], indices,
                       pad_to_multiple=pad_to_multiple, append_src_eos=True)
