"""Padded batches and token-budget, length-bucketed batch sampling.

Sources end with EOS; the decoder reads BOS + target (`tgt_in`) and predicts target + EOS (`tgt_out`).
Bucketing by length and capping padded tokens instead of sentences follows fairseq (Ott et al., 2019,
https://arxiv.org/abs/1904.01038): batches of similar lengths waste little compute on padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Optional, Sequence

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


class TokenBatchSampler:
    """Length-bucketed batches of at most max_tokens padded tokens (B * max(S, T) <= max_tokens), seeded shuffle.

    Each epoch: sort examples by padded length (random tie-breaking), cut the sorted list greedily into
    batches under the token budget, then shuffle the batch order. Deterministic given (seed, epoch).
    With `num_shards` > 1 (data parallel), every shard gets the same number of batches: the last
    `len % num_shards` batches of the shuffled order are dropped for that epoch, and shard i takes
    batches[i::num_shards].
    """

    def __init__(self, src_lens, tgt_lens, *, max_tokens: int, max_sentences: Optional[int] = None,
                 shuffle: bool = True, seed: int = 1, num_shards: int = 1, shard_index: int = 0,
                 pad_to_multiple: int = 1):
        """
        Args:
            src_lens: (N,) source lengths as batched (EOS included).
            tgt_lens: (N,) target lengths as batched (BOS/EOS included: the length of tgt_in).
            max_tokens: budget of padded tokens per batch, B * max(S, T).
            max_sentences: at most this many examples per batch (None: no cap).
            shuffle: random tie-breaking and batch order; False gives batches in length order.
            seed: seed of the shuffle, combined with the epoch.
            num_shards, shard_index: this process's share of each epoch's batches.
            pad_to_multiple: the rounding `collate` applies to S and T, counted in the budget.
        """
        src = np.asarray(src_lens, dtype=np.int64).reshape(-1)
        tgt = np.asarray(tgt_lens, dtype=np.int64).reshape(-1)
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
        if pad_to_multiple < 1:
            raise ValueError(f"TokenBatchSampler: pad_to_multiple must be >= 1, got {pad_to_multiple}")
        m = pad_to_multiple
        self.src_lens = (src + m - 1) // m * m  # (N,) padded widths
        self.tgt_lens = (tgt + m - 1) // m * m  # (N,)
        self.sizes = np.maximum(self.src_lens, self.tgt_lens)  # (N,) tokens one example costs per row
        longest = int(self.sizes.argmax())
        if self.sizes[longest] > max_tokens:
            raise ValueError(f"TokenBatchSampler: example {longest} is {int(self.sizes[longest])} tokens long "
                             f"(padded), more than max_tokens={max_tokens}: filter long pairs first "
                             f"(data.max_len) or raise max_tokens")
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences or len(src)
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of the epoch (all shards), in the shuffled order."""
        rng = np.random.default_rng([self.seed, epoch])
        n = self.sizes.size
        ties = rng.permutation(n) if self.shuffle else np.arange(n)
        order = np.lexsort((ties, self.src_lens, self.sizes))  # (N,) by size, then source length, then random
        sizes = self.sizes[order]  # (N,) non-decreasing
        starts = []
        i = 0
        while i < n:  # one iteration per batch; the batch end is found with array ops
            # sizes are sorted, so a batch starting at i holds at most max_tokens // sizes[i] examples
            window = min(self.max_tokens // int(sizes[i]), self.max_sentences, n - i)
            fits = np.arange(1, window + 1) * sizes[i: i + window] <= self.max_tokens  # (W,) True then False
            starts.append(i)
            i += int(fits.sum())
        batches = np.split(order, starts[1:])
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        """This shard's batches of `epoch`, each a list of dataset indices."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        every = self._all_batches(epoch)
        usable = len(every) - len(every) % self.num_shards
        mine = [b.tolist() for b in every[:usable][self.shard_index:: self.num_shards]]
        self._cache = (epoch, mine)
        return mine

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


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
