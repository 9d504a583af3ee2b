"""Decoding: `greedy_search`, `sample_search` and batched `beam_search` over any decoder, `Hypothesis`,
`LengthPenalty`, `Sampler`.

Search only uses ``model.encode(src) -> Memory``, ``model.decoder.init_state(memory)``,
``model.decoder.step(tokens, memory, state) -> (logits, state)``, ``state.index_select(idx)`` and
``state.attn``; it never asks which architecture it runs. Both searches keep every live hypothesis
of every sentence in one batch (B sentences x K beams = B*K rows), call ``step`` once per time step,
and drop the rows of finished sentences from memory and state so later steps are cheaper. Greedy and
sampling share one left-to-right loop (`_left_to_right`) and differ only in how a row's next token is
chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqed.memory import Memory, select_beams
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    """One finished output sequence.

    Attributes:
        tokens: output ids without BOS and EOS.
        score: the ranking score, ``log_prob / lp(len(tokens) + 1)`` (see `LengthPenalty`; greedy
            search uses no penalty, so there score == log_prob).
        log_prob: sum of the token log-probabilities, EOS included.
        attn: (len(tokens) + 1, S_real) attention over the real source positions at each output step
            (the last row is the EOS step), on the CPU; None when the decoder gives no attention.
        alignment: (source piece, output piece) index pairs, one per output piece, or None when not
            asked for (see `seqed.alignment.hard_alignment`; `Translator(alignment=True)` fills it).
    """

    tokens: list[int]
    score: float
    log_prob: float
    attn: Optional[Tensor] = None
    alignment: Optional[list[tuple[int, int]]] = None


@dataclass
class LengthPenalty:
    """GNMT length penalty (Wu et al. 2016, https://arxiv.org/abs/1609.08144, eq. 14):
    lp(Y) = ((5 + |Y|) / 6) ** alpha; alpha = 0 disables it.

    A hypothesis ranks by ``log_prob / lp(|Y|)``, where |Y| counts the output tokens plus EOS. Larger
    alpha favours longer outputs (alpha = 1 is close to a per-token average).
    """

    alpha: float = 0.0

    def __call__(self, lengths: Tensor) -> Tensor:
        """Penalties for output lengths.

        Args:
            lengths: (...) output lengths |Y| (EOS included), int or float.

        Returns:
            (...) float penalties, all 1 when alpha = 0.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.float32)
        if self.alpha == 0:
            return torch.ones_like(lengths)
        return ((5.0 + lengths) / 6.0) ** self.alpha


@dataclass
class Sampler:
    """Draw each row's next token from the model's distribution, reshaped in this order:

    1. temperature T: p'(y) ~ p(y) ** (1 / T) (T < 1 sharpens, T -> 0 approaches greedy);
    2. top-k (Fan et al. 2018, https://arxiv.org/abs/1805.04833): only the k most probable tokens stay;
    3. top-p, nucleus (Holtzman et al. 2020, https://arxiv.org/abs/1904.09751): only the smallest set
       of most probable tokens whose probability sums to at least p stays (a token goes when the
       tokens ranked above it already hold p).

    top_k = 0 and top_p = 1 keep every token. The score a sampled token adds is its log-probability
    under the model itself (before any reshaping).

    Attributes:
        top_k: tokens kept (0: all).
        top_p: nucleus mass, 0 < p <= 1.
        temperature: T > 0.
        generator: the random source (a seeded ``torch.Generator`` on the search's device makes the
            draws reproducible), or None for torch's global one.
    """

    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    generator: Optional[torch.Generator] = None

    def __post_init__(self):
        if self.top_k < 0:
            raise ValueError(f"Sampler: top_k must be >= 0 (0 keeps every token), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"Sampler: top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0.0:
            raise ValueError(f"Sampler: temperature must be > 0, got {self.temperature}; "
                             "use greedy search for the T -> 0 limit")

    def __call__(self, lprobs: Tensor) -> tuple[Tensor, Tensor]:
        """Draw one token per row.

        Args:
            lprobs: (N, V) log-probabilities (-inf at forbidden tokens; at least one finite per row).

        Returns:
            ((N,) the drawn tokens' log-probabilities in `lprobs`, (N,) long drawn tokens).
        """
        scores = lprobs / self.temperature if self.temperature != 1.0 else lprobs  # (N, V)
        if 0 < self.top_k < scores.size(1):
            kept = scores.topk(self.top_k, dim=1).indices  # (N, k)
            scores = torch.full_like(scores, -math.inf).scatter(1, kept, scores.gather(1, kept))  # (N, V)
        if self.top_p < 1.0:
            probs, order = scores.softmax(dim=1).sort(dim=1, descending=True)  # (N, V)
            above = probs.cumsum(dim=1) - probs  # (N, V) mass of the tokens ranked above each
            drop = torch.zeros_like(above, dtype=torch.bool).scatter(1, order, above >= self.top_p)  # (N, V)
            scores = scores.masked_fill(drop, -math.inf)  # the most probable token always stays
        tokens = torch.multinomial(scores.softmax(dim=1), 1, generator=self.generator)  # (N, 1)
        return lprobs.gather(1, tokens).squeeze(1), tokens.squeeze(1)


def block_topk(x: Tensor, k: int, block: int = 64) -> tuple[Tensor, Tensor]:
    """The k largest values of each row of x and their columns, best first, like ``x.topk(k, dim=1)``.

    Why: beam search takes the 2K best of K x V scores per sentence at every step, and torch's CPU
    top-k copies each row into (value, index) pairs before selecting (1.5 ms for (64, 40000) on the
    benchmark CPU). Here each row is cut into blocks of `block` columns; a value among the row's k
    largest lies in a block whose maximum is among the k largest block maxima (else k blocks would
    hold a larger value each), so one max-reduction over the row, then top-k over the block maxima
    and over the k chosen blocks give the same values (0.3 ms; blocks of 16 were as slow as topk).
    Columns of tied values may differ from ``topk``'s, which leaves ties unspecified too.

    Args:
        x: (A, M) float.
        k: values per row, k <= M.
        block: columns per block.

    Returns:
        ((A, k) values, (A, k) long columns).
    """
    A, M = x.shape
    blocks = M // block
    if blocks <= k:
        return x.topk(k, dim=1)
    heads = x[:, :blocks * block].view(A, blocks, block).amax(dim=2)  # (A, blocks)
    chosen = heads.topk(k, dim=1).indices  # (A, k)
    offsets = torch.arange(block, device=x.device)  # (block,)
    cols = (chosen.unsqueeze(2) * block + offsets).view(A, k * block)  # (A, k*block)
    if blocks * block < M:  # the columns after the last whole block are candidates too
        tail = torch.arange(blocks * block, M, device=x.device).expand(A, -1)  # (A, M - blocks*block)
        cols = torch.cat([cols, tail], dim=1)
    values, pos = x.gather(1, cols).topk(k, dim=1)  # (A, k)
    return values, cols.gather(1, pos)


def max_lengths(src_lengths: Tensor, a: float, b: int, cap: int) -> Tensor:
    """Output length limits ``floor(a * |src| + b)``, clipped to [0, cap].

    Args:
        src_lengths: (B,) real source tokens per sentence (EOS included).
        a: tokens allowed per source token.
        b: tokens allowed on top.
        cap: the most any sentence may get.

    Returns:
        (B,) long: the most output tokens (EOS excluded) per sentence; search forces EOS there.
    """
    limits = torch.floor(src_lengths.float() * a + b).long()
    return limits.clamp(min=0, max=cap)


@dataclass
class _Prefixes:
    """What each live row has produced so far, aligned by row.

    Attributes:
        tokens: (N, t) ids generated so far, BOS excluded.
        attn: (N, t, S) attention of each step so far, (N, t + 1, S) once the current step's row is
            added; None when the decoder gives no attention.
    """

    tokens: Tensor
    attn: Optional[Tensor] = None

    def add_attn(self, step_attn: Optional[Tensor]) -> "_Prefixes":
        """Append this step's attention (N, S), if any."""
        if step_attn is None:
            return self
        row = step_attn.float().unsqueeze(1)  # (N, 1, S)
        attn = row if self.attn is None else torch.cat([self.attn, row], dim=1)  # (N, t + 1, S)
        return replace(self, attn=attn)

    def add_tokens(self, tokens: Tensor) -> "_Prefixes":
        """Append this step's chosen tokens (N,)."""
        return replace(self, tokens=torch.cat([self.tokens, tokens.unsqueeze(1)], dim=1))  # (N, t + 1)

    def select(self, rows: Tensor) -> "_Prefixes":
        attn = None if self.attn is None else self.attn.index_select(0, rows)
        return _Prefixes(tokens=self.tokens.index_select(0, rows), attn=attn)


@dataclass
class _Live:
    """Everything a search keeps per live row (N = live sentences x beams), aligned by row.

    Attributes:
        memory: the encoder memory, N rows (beams of one sentence share identical rows).
        state: the decoder state, N rows.
        prefixes: tokens and attention so far.
        limits: (N,) long, the sentence's length limit: EOS is forced once this many tokens are out.
    """

    memory: Memory
    state: Any
    prefixes: _Prefixes
    limits: Tensor

    def select(self, rows: Tensor, memory_rows: Optional[Tensor] = None, state: Any = None) -> "_Live":
        """Keep rows `rows` (N',) of state, prefixes and limits.

        Memory rows only differ between sentences, so memory is re-indexed by `memory_rows` (N',)
        only when sentences are dropped; None keeps it as it is (beams reordered within sentences).
        `state`: the decoder state of those rows when the caller selected it already (beam search, by
        `seqed.memory.select_beams`); None: ``self.state.index_select(rows)``.
        """
        memory = self.memory if memory_rows is None else self.memory.index_select(memory_rows)
        return _Live(memory=memory, state=self.state.index_select(rows) if state is None else state,
                     prefixes=self.prefixes.select(rows), limits=self.limits.index_select(0, rows))


def _check_args(src: Tensor, min_len: int, max_len_cap: int) -> None:
    if not isinstance(src, Tensor) or src.dim() != 2 or src.dtype not in (torch.long, torch.int):
        got = f"shape {tuple(src.shape)}, dtype {src.dtype}" if isinstance(src, Tensor) else type(src).__name__
        raise ValueError(f"search: src must be a (B, S) long tensor of token ids, got {got}")
    if min_len < 0:
        raise ValueError(f"search: min_len must be >= 0, got {min_len}")
    if max_len_cap < 0 or min_len > max_len_cap:
        raise ValueError(f"search: need 0 <= min_len <= max_len_cap, got min_len={min_len}, "
                         f"max_len_cap={max_len_cap}; lower min_len or raise max_len_cap")


def _start(model, src: Tensor, beams: int, *, max_len_a: float, max_len_b: int, min_len: int,
           max_len_cap: int) -> _Live:
    """Encode `src` (B, S) and set up B*beams rows (beams of sentence b at rows b*beams ... b*beams+beams-1)."""
    memory = model.encode(src)
    limits = max_lengths((src != PAD_ID).sum(dim=1), max_len_a, max_len_b, max_len_cap)
    limits = limits.clamp(min=min_len)  # a forced EOS never comes before min_len
    # The state starts from the B sentences and is then expanded, so that a decoder whose state
    # depends on the source row only (cached cross-attention keys) can tell beam reorders apart.
    state = model.decoder.init_state(memory)
    if beams > 1:
        expand = torch.arange(src.size(0), device=src.device).repeat_interleave(beams)  # (B*K,)
        memory = memory.index_select(expand)
        limits = limits.index_select(0, expand)
        state = select_beams(state, expand, None, beams)
    empty = torch.empty(src.size(0) * beams, 0, dtype=torch.long, device=src.device)  # (B*K, 0)
    return _Live(memory=memory, state=state, prefixes=_Prefixes(empty), limits=limits)


def _next_log_probs(decoder, live: _Live, prev: Tensor, t: int, min_len: int,
                    at_limit: Optional[Tensor] = None) -> tuple[Tensor, _Live]:
    """One decoder step for all live rows.

    PAD and BOS are never emitted; EOS is forbidden while fewer than `min_len` tokens are out and forced
    once a row reaches its limit. Masks are applied after normalisation, so the scores that remain
    are the model's own log-probabilities. The decoder's logits are normalised in place (fp32 ones;
    a bf16 model's are copied to fp32 first): no (N, V) temporary per step.

    Args:
        decoder: has ``step(tokens, memory, state) -> (logits, state)``.
        live: the live rows (N).
        prev: (N,) long, the previous tokens (BOS at t = 0).
        t: tokens already generated.
        min_len: fewest output tokens before EOS.
        at_limit: (n,) long, the rows at their length limit, if the caller knows them; None: found here.

    Returns:
        ((N, V) float log-probabilities, `live` with the new state and this step's attention).
    """
    logits, state = decoder.step(prev, live.memory, live.state)
    lprobs = logits.float()  # (N, V)
    torch.log_softmax(lprobs, dim=-1, out=lprobs)
    lprobs[:, PAD_ID] = -math.inf
    lprobs[:, BOS_ID] = -math.inf
    if t < min_len:
        lprobs[:, EOS_ID] = -math.inf
    if at_limit is None:
        limited = live.limits <= t  # (N,)
        at_limit = limited.nonzero().squeeze(1) if limited.any() else None
    if at_limit is not None and at_limit.numel():  # rare: touch only those rows, not all N x V scores
        eos = lprobs[at_limit, EOS_ID]  # (n,)
        lprobs[at_limit] = -math.inf
        lprobs[at_limit, EOS_ID] = eos
    prefixes = live.prefixes.add_attn(getattr(state, "attn", None))
    return lprobs, replace(live, state=state, prefixes=prefixes)


def _finalize(live: _Live, rows: Tensor, log_probs: Tensor, lp: LengthPenalty) -> list[Hypothesis]:
    """Hypotheses for live rows `rows` (n,) that end with EOS at this step.

    Args:
        live: the live rows, with this step's attention already added.
        rows: (n,) long row indices.
        log_probs: (n,) total log-probabilities, EOS included.
        lp: the length penalty used for `score`.
    """
    length = live.prefixes.tokens.size(1)
    penalty = float(lp(length + 1))  # |Y| counts EOS
    tokens = live.prefixes.tokens.index_select(0, rows).tolist()
    totals = log_probs.tolist()
    if live.prefixes.attn is None:
        attns = [None] * len(tokens)
    else:
        attn = live.prefixes.attn.index_select(0, rows).cpu()  # (n, t + 1, S)
        mask = live.memory.mask.index_select(0, rows).cpu()  # (n, S)
        attns = [a[:, m] for a, m in zip(attn, mask)]  # (t + 1, S_real) each
    return [Hypothesis(tokens=tok, score=total / penalty, log_prob=total, attn=a)
            for tok, total, a in zip(tokens, totals, attns)]


def _left_to_right(model, src: Tensor, rows: int, choose, *, max_len_a: float, max_len_b: int, min_len: int,
                   max_len_cap: int) -> list[list[Hypothesis]]:
    """Extend `rows` independent rows per sentence by one token per step, each by `choose`; a row leaves
    the batch once it ends (EOS, or EOS forced at its length limit).

    Args:
        model: has ``encode`` and ``decoder.init_state`` / ``decoder.step`` (see module docstring).
        src: (B, S) long source ids, PAD padded.
        rows: rows per sentence (rows of sentence b are b*rows ... b*rows+rows-1).
        choose: ``choose(lprobs (A, V)) -> ((A,) log-probabilities, (A,) long tokens)``.
        max_len_a, max_len_b, max_len_cap, min_len: see `greedy_search`.

    Returns:
        B lists (input order) of `rows` hypotheses each, in the order they ended; score == log_prob.
    """
    _check_args(src, min_len, max_len_cap)
    results: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
    if not results:
        return results
    no_penalty = LengthPenalty(0.0)
    n = src.size(0) * rows
    with torch.inference_mode():
        live = _start(model, src, rows, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                      max_len_cap=max_len_cap)
        active = torch.arange(src.size(0), device=src.device).repeat_interleave(rows)  # (A,) input index of each row
        log_probs = torch.zeros(n, device=src.device)  # (A,)
        prev = torch.full((n,), BOS_ID, dtype=torch.long, device=src.device)  # (A,)
        t = 0
        while True:
            lprobs, live = _next_log_probs(model.decoder, live, prev, t, min_len)  # (A, V)
            step_lp, prev = choose(lprobs)  # (A,), (A,)
            log_probs = log_probs + step_lp
            done = (prev == EOS_ID) | (live.limits <= t)  # (A,)
            t += 1
            if done.any():
                ended = done.nonzero().squeeze(1)
                hyps = _finalize(live, ended, log_probs.index_select(0, ended), no_penalty)
                for b, hyp in zip(active.index_select(0, ended).tolist(), hyps):
                    results[b].append(hyp)
                if done.all():
                    break
                stay = (~done).nonzero().squeeze(1)  # (A',)
                active, log_probs, prev = (x.index_select(0, stay) for x in (active, log_probs, prev))
                live = live.select(stay, stay)
            live = replace(live, prefixes=live.prefixes.add_tokens(prev))
    return results


def _most_probable(lprobs: Tensor) -> tuple[Tensor, Tensor]:
    return lprobs.max(dim=1)  # (A,), (A,)


def greedy_search(model, src: Tensor, *, max_len_a: float = 1.2, max_len_b: int = 10, min_len: int = 0,
                  max_len_cap: int = 512) -> list[list[Hypothesis]]:
    """Pick the most probable next token at every step; finished sentences leave the batch.

    Args:
        model: has ``encode`` and ``decoder.init_state`` / ``decoder.step`` (see module docstring).
        src: (B, S) long source ids, PAD padded.
        max_len_a, max_len_b, max_len_cap: output length limit per sentence (see `max_lengths`);
            EOS is forced there.
        min_len: EOS is forbidden before this many output tokens.

    Returns:
        B lists (input order) of one `Hypothesis` each; its score is its log_prob (no length penalty).
    """
    return _left_to_right(model, src, 1, _most_probable, max_len_a=max_len_a, max_len_b=max_len_b,
                          min_len=min_len, max_len_cap=max_len_cap)


def sample_search(model, src: Tensor, *, nbest: int = 1, top_k: int = 0, top_p: float = 1.0,
                  temperature: float = 1.0, generator: Optional[torch.Generator] = None,
                  max_len_a: float = 1.2, max_len_b: int = 10, min_len: int = 0,
                  max_len_cap: int = 512) -> list[list[Hypothesis]]:
    """Draw `nbest` independent outputs per sentence, one token at a time (see `Sampler`).

    The nbest samples of a sentence are nbest rows of one batch (B*nbest rows, like beam search's
    B*K); a row leaves once it ends. The same `generator` state and batch give the same samples.

    Args:
        model: has ``encode`` and ``decoder.init_state`` / ``decoder.step`` (see module docstring).
        src: (B, S) long source ids, PAD padded.
        nbest: samples per sentence (>= 1); duplicates are kept (they are independent draws).
        top_k, top_p, temperature, generator: see `Sampler`.
        max_len_a, max_len_b, max_len_cap: output length limit per sentence (see `max_lengths`);
            EOS is forced there.
        min_len: EOS is forbidden before this many output tokens.

    Returns:
        B lists (input order) of `nbest` hypotheses each, sorted by score, which is the log_prob of
        the sample under the model (no length penalty, no temperature).
    """
    if nbest < 1:
        raise ValueError(f"sample_search: nbest must be >= 1, got {nbest}")
    sampler = Sampler(top_k=top_k, top_p=top_p, temperature=temperature, generator=generator)
    results = _left_to_right(model, src, nbest, sampler, max_len_a=max_len_a, max_len_b=max_len_b,
                             min_len=min_len, max_len_cap=max_len_cap)
    return [sorted(hyps, key=lambda h: -h.score) for hyps in results]


def beam_search(model, src: Tensor, *, beam_size: int = 5, nbest: int = 1, length_penalty: float = 1.0,
                max_len_a: float = 1.2, max_len_b: int = 10, min_len: int = 0, max_len_cap: int = 512,
                patience: Optional[float] = None) -> list[list[Hypothesis]]:
    """Batched beam search over B*K rows, fairseq-style (Ott et al. 2019, fairseq ``search.py``).

    Each step scores all K*V continuations of a sentence's K beams in one top-k (`block_topk`) and keeps the best 2K
    candidates. The K beams start identical, so the first step runs one row per sentence (B rows, not
    B*K) and its 2K best tokens seed the beams. EOS candidates among the first K end a hypothesis (a
    lower-ranked EOS would not have made the beam); the K best other candidates stay live, so the beam
    never runs short.

    Stopping rule (exact under the length penalty): a sentence is done once its `nbest`-th best ended
    score is at least the best score any live beam could still reach, or when its length limit forces
    EOS; its rows then leave the batch. Hypotheses rank by ``log_prob / lp(|Y|)`` with
    lp = `LengthPenalty(length_penalty)`. Log-probabilities only fall and lp grows with |Y|, so a live
    beam of raw score s <= 0 ends with at most ``s / lp(limit + 1)``, where limit is the sentence's
    length limit: no live beam can overtake the ended hypotheses once they beat that bound. With
    alpha = 0 the bound is the best live raw score, and the returned best hypothesis is the one the
    earlier rule (OpenNMT-py's: stop once a step's best candidate is EOS) gave; with alpha > 0 that
    rule stopped too early (outputs about 12% short on Multi30k). An early low-scoring EOS never ends
    a peaked search, since the live beams' bound stays above it (fairseq's rule, stop after K ended
    hypotheses, does: that was tried first).

    Beam 1: with alpha = 0 it is identical to `greedy_search`. With alpha > 0 it may go on past
    greedy's EOS along the second-best token of that step and return a longer hypothesis whose
    normalised score is higher, so it can differ from greedy.

    Args:
        model: has ``encode`` and ``decoder.init_state`` / ``decoder.step`` (see module docstring).
        src: (B, S) long source ids, PAD padded.
        beam_size: K, live hypotheses per sentence.
        nbest: hypotheses returned per sentence, 1 <= nbest <= beam_size.
        length_penalty: GNMT alpha (0 ranks by raw log-probability).
        max_len_a, max_len_b, max_len_cap: output length limit per sentence (see `max_lengths`);
            EOS is forced there.
        min_len: EOS is forbidden before this many output tokens.
        patience: None (exact stopping), or also stop a sentence once ``ceil(beam_size * patience)``
            hypotheses have ended (CTranslate2's and Hugging Face's beam patience, Kasai et al. 2022,
            https://arxiv.org/abs/2204.05424): faster, no longer exact.

    Returns:
        B lists (input order) of `nbest` hypotheses each, best score first.
    """
    _check_args(src, min_len, max_len_cap)
    if patience is not None and not patience > 0:
        raise ValueError(f"beam_search: patience must be > 0 (or None for exact stopping), got {patience}")
    if beam_size < 1:
        raise ValueError(f"beam_search: beam_size must be >= 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"beam_search: need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    k = beam_size
    lp = LengthPenalty(length_penalty)
    finished: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
    if not finished:
        return finished
    device = src.device
    enough = math.inf if patience is None else math.ceil(k * patience)  # ended hypotheses that stop a sentence
    with torch.inference_mode():
        # The K beams of a sentence start identical: the first step runs on one row per sentence (W = 1)
        # and its 2K best tokens seed the K beams; from then on each sentence has W = K rows.
        live = _start(model, src, 1, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                      max_len_cap=max_len_cap)
        active = torch.arange(src.size(0), device=device)  # (A,) input index of each live sentence
        # the nbest best normalised scores of ended hypotheses, best first
        ended_best = torch.full((src.size(0), nbest), -math.inf, device=device)  # (A, nbest)
        n_ended = torch.zeros(src.size(0), device=device)  # (A,) hypotheses ended so far (for `patience`)
        scores = torch.zeros(src.size(0), 1, device=device)  # (A, W)
        prev = torch.full((src.size(0),), BOS_ID, dtype=torch.long, device=device)  # (A*W,)
        # On the host: the first step at which some row reaches its length limit, so that the rows to
        # force EOS on are looked up (a device -> host sync) only from then on, not at every step.
        first_limit = int(live.limits.min())
        no_limit = torch.empty(0, dtype=torch.long, device=device)  # (0,): no row at its limit
        rank = torch.arange(2 * k, device=device)  # (2K,)
        t = 0
        while True:
            n_sent, width = scores.shape
            at_limit = (live.limits <= t).nonzero().squeeze(1) if t >= first_limit else no_limit
            lprobs, live = _next_log_probs(model.decoder, live, prev, t, min_len, at_limit)  # (A*W, V)
            vocab = lprobs.size(1)
            cand = lprobs.add_(scores.view(-1, 1)).view(n_sent, width * vocab)  # (A, W*V), in place
            if width * vocab < 2 * k:  # a vocabulary smaller than the beam (tests): pad with impossible PADs
                cand = F.pad(cand, (0, 2 * k - width * vocab), value=-math.inf)  # (A, 2K)
            top_scores, top_idx = block_topk(cand, 2 * k)  # (A, 2K)
            top_tok = torch.where(top_idx < width * vocab, top_idx % vocab, PAD_ID)  # (A, 2K)
            sent_rows = (torch.arange(n_sent, device=device) * width).unsqueeze(1)  # (A, 1) first row of each
            top_rows = (top_idx // vocab).clamp(max=width - 1) + sent_rows  # (A, 2K)
            is_eos = top_tok == EOS_ID  # (A, 2K)
            ended = is_eos[:, :k] & torch.isfinite(top_scores[:, :k])  # (A, K)
            if ended.any():
                sent, pos = ended.nonzero(as_tuple=True)  # row-major: best candidate first per sentence
                hyps = _finalize(live, top_rows[sent, pos], top_scores[sent, pos], lp)
                for b, hyp in zip(active.index_select(0, sent).tolist(), hyps):
                    finished[b].append(hyp)  # all kept: the final sort picks the n-best
                ended_scores = torch.where(ended, top_scores[:, :k], -math.inf) / lp(t + 1)  # (A, K)
                ended_best = torch.cat([ended_best, ended_scores], dim=1).topk(nbest, dim=1).values
                n_ended = n_ended + ended.sum(dim=1)
            # the K best candidates that do not end here go on (each beam adds at most one EOS, so
            # at least K of the 2K are not EOS); EOS candidates are pushed to the back of the ranking
            keep = (rank + is_eos * (2 * k)).topk(k, dim=1, largest=False).indices  # (A, K)
            scores = top_scores.gather(1, keep)  # (A, K)
            rows = top_rows.gather(1, keep)  # (A, K)
            prev = top_tok.gather(1, keep)  # (A, K)
            # Done when no live beam can beat the nbest-th ended score (see the docstring's bound),
            # or at the length limit, where every beam has just been forced to end; with `patience`,
            # also once k * patience hypotheses have ended.
            limits = live.limits.view(n_sent, width)[:, 0]  # (A,)
            reachable = scores.max(dim=1).values / lp(limits + 1)  # (A,)
            nth = ended_best[:, -1]  # (A,)
            done = (torch.isfinite(nth) & (nth >= reachable)) | (limits <= t) | (n_ended >= enough)  # (A,)
            t += 1
            memory_rows = rows.view(-1) if width != k else None  # memory rows follow the beams' sentences
            kept = None  # (A',) the sentences that stay, None: all
            if done.any():
                if done.all():
                    break
                stay = (~done).nonzero().squeeze(1)  # (A',)
                active, ended_best, n_ended, scores, rows, prev = (
                    x.index_select(0, stay) for x in (active, ended_best, n_ended, scores, rows, prev))
                memory_rows = rows.view(-1)  # (A'*K,)
                kept = stay
                first_limit = int(limits.index_select(0, stay).min())
            prev, rows = prev.view(-1), rows.view(-1)  # (A'*K,)
            live = live.select(rows, memory_rows, select_beams(live.state, rows, kept, k))
            live = replace(live, prefixes=live.prefixes.add_tokens(prev))
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def decode(model, src: Tensor, *, beam_size: int = 1, nbest: int = 1, length_penalty: float = 1.0,
           sampling: Optional[dict] = None, generator: Optional[torch.Generator] = None,
           patience: Optional[float] = None, **limits) -> list[list[Hypothesis]]:
    """The one decoding entry point (`Translator`, the autoencoder tools): sampling when `sampling` holds
    `sample_search` keywords (top_k / top_p / temperature), else greedy for `beam_size` 1, else beam.

    Args:
        model, src, patience: see `beam_search` (patience: beam search only).
        limits: max_len_a, max_len_b, min_len, max_len_cap (see `max_lengths`).

    Returns:
        Per sentence, up to `nbest` hypotheses best first (greedy: one).
    """
    if sampling is not None:
        return sample_search(model, src, nbest=nbest, generator=generator, **sampling, **limits)
    if beam_size == 1:
        return greedy_search(model, src, **limits)
    return beam_search(model, src, beam_size=beam_size, nbest=nbest, length_penalty=length_penalty,
                       patience=patience, **limits)
