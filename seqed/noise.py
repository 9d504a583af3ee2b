"""Source-side noise for denoising and masked autoencoders: `NoiseConfig`, `Noiser`, `parse_noise`.

An autoencoder rebuilds the clean sentence (target = source) from a corrupted copy of it. The
corruptions are those of Lample et al. 2018 (https://arxiv.org/abs/1711.00043: word dropout and local
shuffling), BERT-style masking and random substitution (Devlin et al. 2019), and BART's span infilling
(Lewis et al. 2020, https://arxiv.org/abs/1910.13461). All of them work on a whole padded batch with
tensor ops and draw every random number from the caller's `torch.Generator`, so a seed replays them.

Source rows look like ``[BOS] w_1 ... w_n EOS PAD ... PAD`` (BOS optional). Only the words ``w_i`` are
corrupted; BOS stays first, EOS stays last and rows are re-padded on the right.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from seqed.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

FIRST_WORD_ID = EOS_ID + 1  # ids below are the specials of seqed/vocab.py; substitutions draw from >= this


@dataclass
class NoiseConfig:
    """Which corruptions to apply to the source, and how much. All zero (the default) is no noise.

    Each rate is a per-token probability over the words still eligible when that step runs; the steps
    run in the order drop, infill, mask, substitute, shuffle.

    Attributes:
        drop: probability of deleting each word.
        mask: probability of replacing each word by the mask token.
        substitute: probability of replacing each (unmasked) word by a different word drawn uniformly from
            ids >= 4, the mask id excluded.
        shuffle_k: local shuffle: word i is sorted by i + U(0, k + 1) (Lample et al. 2018), so no word moves
            more than ceil(k) positions; 0 disables.
        infill: BART span infilling: this fraction of each row's words is hidden in spans with
            Poisson(infill_lambda) lengths, each span replaced by ONE mask token (a 0-length span inserts
            a mask).
        infill_lambda: mean span length for `infill` (BART uses 3).
    """

    drop: float = 0.0
    mask: float = 0.0
    substitute: float = 0.0
    shuffle_k: float = 0.0
    infill: float = 0.0
    infill_lambda: float = 3.0

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is impossible."""
        for name in ("drop", "mask", "substitute", "infill"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(f"{name} is a probability and must be in [0, 1], got {value}")
        if not self.shuffle_k >= 0.0:
            raise ValueError(f"shuffle_k is a distance and must be >= 0 (0 disables), got {self.shuffle_k}")
        if not self.infill_lambda > 0.0:
            raise ValueError(f"infill_lambda is a mean span length and must be > 0, got {self.infill_lambda}")

    @property
    def active(self) -> bool:
        """True when any corruption is switched on."""
        return any(v > 0 for v in (self.drop, self.mask, self.substitute, self.shuffle_k, self.infill))


def parse_noise(spec: str) -> NoiseConfig:
    """Read a command-line noise spec such as ``"drop=0.1,mask=0.15,shuffle_k=3"`` into a validated config.

    Args:
        spec: comma-separated ``key=value`` pairs; keys are `NoiseConfig` fields; "" means no noise.

    Returns:
        The `NoiseConfig`, validated.
    """
    valid = [f.name for f in dataclasses.fields(NoiseConfig)]
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, raw = (s.strip() for s in item.partition("="))
        if not sep:
            raise ValueError(f"noise spec {spec!r}: {item!r} is not key=value, e.g. 'drop=0.1,shuffle_k=3'")
        if key not in valid:
            raise ValueError(f"noise spec {spec!r}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        if key in values:
            raise ValueError(f"noise spec {spec!r}: {key!r} is given twice")
        try:
            values[key] = float(raw)
        except ValueError:
            raise ValueError(f"noise spec {spec!r}: {key}={raw!r} is not a number") from None
    config = NoiseConfig(**values)
    try:
        config.validate()
    except ValueError as err:
        raise ValueError(f"noise spec {spec!r}: {err}") from None
    return config


class Noiser:
    """Corrupts padded source batches as a `NoiseConfig` says.

    Args:
        config: the corruptions to apply (validated here; a ValueError names a bad field).
        vocab_size: size of the source vocabulary; substitutions draw from [4, vocab_size).
        mask_id: the mask token: the tokenizer's reserved mask piece, or UNK_ID (1) when it has none (the
            model then cannot tell a masked word from an unknown one, which denoising tolerates).
        pad_id, eos_id, bos_id: the specials, never corrupted.
    """

    def __init__(self, config: NoiseConfig, *, vocab_size: int, mask_id: int, pad_id: int = PAD_ID,
                 eos_id: int = EOS_ID, bos_id: int = BOS_ID) -> None:
        config.validate()
        if not 0 <= mask_id < vocab_size or mask_id in (pad_id, eos_id, bos_id):
            raise ValueError(f"Noiser: mask_id={mask_id} must be a vocabulary id in [0, {vocab_size}) other than "
                             f"PAD/EOS/BOS ({pad_id}/{eos_id}/{bos_id}); pass the tokenizer's mask piece or UNK_ID")
        # A substitution needs a word id that is neither the original nor the mask token.
        n_words = vocab_size - FIRST_WORD_ID - int(mask_id >= FIRST_WORD_ID)
        if config.substitute > 0 and n_words < 2:
            raise ValueError(f"Noiser: substitute={config.substitute} needs at least 2 word ids >= "
                             f"{FIRST_WORD_ID} besides the mask token, but vocab_size={vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id, self.eos_id, self.bos_id = pad_id, eos_id, bos_id

    def __call__(self, src: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Corrupt a batch; `src` itself is never modified (it stays the clean target).

        Args:
            src: (B, S) long, rows ``[BOS] words EOS PAD...``.
            generator: the source of every random draw (on src's device).

        Returns:
            noisy: (B, S') long, same layout; S' differs from S only after drop or infill.
            masked: (B, S') bool, True where `noisy` carries a mask token or a substitution (the positions
                a masked-autoencoder loss looks at).
        """
        self._check_rows(src)
        c = self.config
        noisy, masked = src.clone(), torch.zeros_like(src, dtype=torch.bool)
        if c.drop > 0:
            noisy = self._drop(noisy, generator)
            masked = torch.zeros_like(noisy, dtype=torch.bool)
        if c.infill > 0:
            noisy, masked = self._infill(noisy, generator)
        if c.mask > 0:
            noisy, masked = self._mask(noisy, masked, generator)
        if c.substitute > 0:
            noisy, masked = self._substitute(noisy, masked, generator)
        if c.shuffle_k > 0:
            noisy, masked = self._shuffle(noisy, masked, generator)
        return noisy, masked

    # -- the corruptions, in the order they run ---------------------------------------------------

    def _drop(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Delete each word with probability `drop` and shift the rest left. (B, S) -> (B, S')."""
        drop = self._words(x) & (torch.rand(x.shape, generator=g, device=x.device) < self.config.drop)
        keep = (x != self.pad_id) & ~drop
        dest = torch.where(keep, keep.cumsum(1) - 1, -1)  # (B, S) new position, -1 = gone
        return _scatter_rows(x, dest, int(keep.sum(1).max()), self.pad_id)

    def _infill(self, x: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """BART span infilling: hide a fraction `infill` of each row's words in Poisson-length spans.

        Each row hides m = infill * n words (stochastically rounded, so the rate holds in expectation
        for short rows too), split into spans by Poisson(lambda) draws until they cover m; the last
        span is cut to fit. Each span goes into a uniformly random gap among the n - m words left.
        """
        B, S = x.shape
        dev = x.device
        n = self._words(x).sum(1)  # (B,) words per row
        m = torch.floor(n * self.config.infill + torch.rand(B, generator=g, device=dev)).long().clamp(max=n)
        K = int(m.max())  # span slots per row: enough unless 0-length draws pile up (see below)
        if K == 0:
            return x, torch.zeros_like(x, dtype=torch.bool)
        rates = torch.full((B, K), float(self.config.infill_lambda), device=dev)
        lengths = torch.poisson(rates, generator=g).long()  # (B, K)
        before = lengths.cumsum(1) - lengths  # (B, K) words hidden by earlier spans
        used = before < m[:, None]  # a prefix of each row
        lengths = torch.where(used, torch.minimum(lengths, m[:, None] - before), 0)
        # A row whose K draws fall short of m (many 0-length draws) gives the rest to its last span,
        # which is then necessarily used.
        lengths[:, -1] += m - lengths.sum(1)
        gaps = torch.floor(torch.rand((B, K), generator=g, device=dev) * (n - m + 1)[:, None]).long()
        gaps = torch.where(used, gaps, S).sort(dim=1).values  # (B, K) words left before each span
        offset = (x[:, 0] == self.bos_id).long()[:, None]  # (B, 1) position of the first word
        starts = offset + gaps + lengths.cumsum(1) - lengths  # (B, K) position in x of each span
        return fill_spans(x, starts, lengths, used, mask_id=self.mask_id, pad_id=self.pad_id)

    def _mask(self, x: Tensor, masked: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Replace each not-yet-masked word by the mask token with probability `mask`."""
        hit = self._words(x) & ~masked & (torch.rand(x.shape, generator=g, device=x.device) < self.config.mask)
        return x.masked_fill(hit, self.mask_id), masked | hit

    def _substitute(self, x: Tensor, masked: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Replace each not-yet-masked word, with probability `substitute`, by a uniformly drawn other word.

        The draw is uniform over ids in [4, V) minus {original, mask_id}: draw r among the allowed count,
        then step r past the excluded ids in increasing order.
        """
        V, dev = self.vocab_size, x.device
        hit = self._words(x) & ~masked & (torch.rand(x.shape, generator=g, device=dev) < self.config.substitute)
        none = torch.full_like(x, V)  # sentinel: nothing to exclude
        mask_ex = none if not FIRST_WORD_ID <= self.mask_id < V else torch.full_like(x, self.mask_id)
        orig_ex = torch.where((x >= FIRST_WORD_ID) & (x < V) & (x != self.mask_id), x, none)
        lo, hi = torch.minimum(mask_ex, orig_ex), torch.maximum(mask_ex, orig_ex)
        allowed = V - FIRST_WORD_ID - (lo < V).long() - (hi < V).long()  # (B, S)
        r = FIRST_WORD_ID + (torch.rand(x.shape, generator=g, device=dev) * allowed).long()
        r = r + (r >= lo).long()
        r = r + (r >= hi).long()
        return torch.where(hit, r, x), masked | hit

    def _shuffle(self, x: Tensor, masked: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Local shuffle (Lample et al. 2018): sort the words by i + U(0, k + 1); |move| <= ceil(k).

        Word j passes word i < j only if j - i < u_i - u_j < k + 1. BOS (at 0) keeps key 0 below every
        word; EOS and PAD are pushed k + 1 up, above every word, so both stay in place.
        """
        alpha = self.config.shuffle_k + 1.0
        pos = torch.arange(x.size(1), device=x.device, dtype=torch.float64).expand(x.shape)  # (B, S)
        u = torch.rand(x.shape, generator=g, device=x.device, dtype=torch.float64) * alpha
        keys = pos + torch.where(self._words(x), u, alpha * (pos > 0))
        order = keys.argsort(dim=1, stable=True)  # (B, S)
        return x.gather(1, order), masked.gather(1, order)

    # -- helpers ----------------------------------------------------------------------------------

    def _words(self, x: Tensor) -> Tensor:
        """(B, S) bool: True at the corruptible tokens (everything but PAD, EOS, BOS)."""
        return (x != self.pad_id) & (x != self.eos_id) & (x != self.bos_id)

    def _check_rows(self, src: Tensor) -> None:
        """Raise ValueError unless every row is ``[BOS] words EOS PAD...`` (the layout the noise keeps)."""
        if src.dim() != 2 or src.dtype.is_floating_point or src.dtype == torch.bool:
            raise ValueError(f"Noiser: src must be a (B, S) tensor of token ids, got {tuple(src.shape)} {src.dtype}")
        if src.numel() == 0:
            raise ValueError(f"Noiser: src is empty, shape {tuple(src.shape)}; every row needs at least EOS")
        pos = torch.arange(src.size(1), device=src.device)
        length = (src != self.pad_id).sum(1, keepdim=True)  # (B, 1)
        offset = (src[:, :1] == self.bos_id).long()  # (B, 1)
        ok = ((src != self.pad_id) == (pos < length)).all(1)  # right-padded
        ok &= src.gather(1, (length - 1).clamp(min=0))[:, 0] == self.eos_id
        ok &= (self._words(src) == ((pos >= offset) & (pos < length - 1))).all(1)
        if not bool(ok.all()):
            row = int((~ok).nonzero()[0])
            raise ValueError(
                f"Noiser: source row {row} is not laid out as [BOS] words EOS PAD... (EOS closing the row, "
                f"PAD only at the end, no specials among the words): {src[row].tolist()[:40]}; build "
                f"source batches with EOS appended to every sentence")


def fill_spans(x: Tensor, starts: Tensor, lengths: Tensor, used: Tensor, *, mask_id: int,
               pad_id: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Replace each span of tokens by ONE mask token, shifting the rest and re-padding the rows.

    A span of length 0 inserts a mask token before position `starts`. Spans must be sorted by start,
    not overlap, and cover only words (never EOS or PAD).

    Args:
        x: (B, S) token ids, right-padded with `pad_id`.
        starts: (B, K) long, position in `x` of each span's first token.
        lengths: (B, K) long, tokens covered by each span (>= 0).
        used: (B, K) bool, True for the spans that exist: a prefix of each row.
        mask_id: the token that replaces each span.
        pad_id: padding id.

    Returns:
        noisy: (B, S') ids, S' = the longest new row.
        is_mask: (B, S') bool, True at the inserted mask tokens.
    """
    B, S = x.shape
    K = starts.size(1)
    at = torch.where(used, starts, S)  # (B, K); unused spans point at a spare column S
    span_len = torch.where(used, lengths, 0)
    ones = used.long()
    edges = torch.zeros(B, S + 1, dtype=torch.long, device=x.device)
    edges = edges.scatter_add(1, at, ones).scatter_add(1, at + span_len, -ones)  # +1 at starts, -1 at ends
    hidden = edges.cumsum(1)[:, :S] > 0  # (B, S) tokens inside a span
    span_starts = torch.zeros(B, S + 1, dtype=torch.long, device=x.device).scatter_add(1, at, ones)
    masks_up_to = span_starts.cumsum(1)  # (B, S + 1) mask tokens placed at or before each position
    hidden_before = torch.cat([hidden.new_zeros(B, 1), hidden], 1).long().cumsum(1)  # (B, S + 1)
    keep = (x != pad_id) & ~hidden
    pos = torch.arange(S, device=x.device)
    dest_tok = torch.where(keep, pos - hidden_before[:, :S] + masks_up_to[:, :S], -1)  # (B, S)
    # The j-th mask follows j earlier masks and the unhidden tokens before its start.
    rank = torch.arange(K, device=x.device)
    dest_mask = torch.where(used, at - hidden_before.gather(1, at) + rank, -1)  # (B, K)
    width = int((keep.sum(1) + ones.sum(1)).max())
    dest = torch.cat([dest_tok, dest_mask], 1)  # (B, S + K)
    noisy = _scatter_rows(torch.cat([x, torch.full_like(starts, mask_id)], 1), dest, width, pad_id)
    is_mask = _scatter_rows(torch.cat([torch.zeros_like(keep), used], 1), dest, width, False)
    return noisy, is_mask


def _scatter_rows(values: Tensor, dest: Tensor, width: int, fill: int | bool) -> Tensor:
    """Place values[b, i] at column dest[b, i] of a (B, width) tensor filled with `fill`; dest -1 = discard.

    Args:
        values: (B, N).
        dest: (B, N) long, distinct per row among the kept entries.
        width: columns of the result.
        fill: value of the columns nothing lands in.

    Returns:
        (B, width), values' dtype.
    """
    out = torch.full((values.size(0), width + 1), fill, dtype=values.dtype, device=values.device)
    out.scatter_(1, torch.where(dest < 0, width, dest), values)  # discarded entries land in the spare column
    return out[:, :width]


def word_dropout(tgt_in: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Replace decoder input tokens (not BOS, not padding) by UNK with probability p (Bowman et al. 2016).

    tgt_in (B, T) -> (B, T), a new tensor.
    """
    drop = torch.rand(tgt_in.shape, generator=gen) < p  # (B, T)
    drop[:, 0] = False
    drop &= tgt_in != PAD_ID
    return tgt_in.masked_fill(drop, UNK_ID)
