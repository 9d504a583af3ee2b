"""Properties of the source-side noise: rates, layout, determinism, span infilling, config parsing."""

import math

import pytest
import torch

from seqed.noise import NoiseConfig, Noiser, fill_spans, parse_noise
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID

V = 10_000
MASK = 4  # a reserved mask piece; the batches below use word ids >= 5 only


def batch(rows=400, max_words=40, seed=0, bos=False, unique=False):
    """Random right-padded batch [BOS] words EOS PAD...; rows have 0..max_words words.

    unique=True gives every word of a row a distinct id (5 + its position) so moves can be traced.
    """
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, max_words + 1, (rows,), generator=g)
    n[0] = max_words  # the widest row, so S is fixed
    pos = torch.arange(max_words + 1)
    words = torch.randint(MASK + 1, V, (rows, max_words + 1), generator=g)
    if unique:
        words = (MASK + 1 + pos).expand(rows, -1).clone()
    x = torch.where(pos < n[:, None], words, PAD_ID)
    x[torch.arange(rows), n] = EOS_ID
    if bos:
        x = torch.cat([torch.full((rows, 1), BOS_ID), x], 1)
    return x


def run(config, src, seed=1, **kw):
    noiser = Noiser(config, vocab_size=V, mask_id=MASK, **kw)
    return noiser(src, torch.Generator().manual_seed(seed))


def words(x):
    return (x != PAD_ID) & (x != EOS_ID) & (x != BOS_ID)


def assert_layout(x, bos):
    """Every row is [BOS] words EOS PAD...: specials only at the ends."""
    length = (x != PAD_ID).sum(1)
    pos = torch.arange(x.size(1))
    assert ((x != PAD_ID) == (pos < length[:, None])).all()
    assert (x.gather(1, length[:, None] - 1) == EOS_ID).all()
    start = 1 if bos else 0
    assert (x[:, 0] == BOS_ID).all() == bos
    assert (words(x) == ((pos >= start) & (pos < length[:, None] - 1))).all()


def test_all_zero_config_is_identity_copy():
    src = batch(rows=20)
    noisy, masked = run(NoiseConfig(), src)
    assert not NoiseConfig().active
    assert torch.equal(noisy, src) and noisy.data_ptr() != src.data_ptr()
    assert masked.shape == src.shape and not masked.any()


@pytest.mark.parametrize("bos", [False, True])
def test_all_noise_keeps_layout_and_never_touches_input(bos):
    src = batch(rows=200, bos=bos)
    clean = src.clone()
    config = NoiseConfig(drop=0.1, infill=0.2, mask=0.1, substitute=0.1, shuffle_k=3)
    noisy, masked = run(config, src)
    assert torch.equal(src, clean)
    assert masked.shape == noisy.shape
    assert_layout(noisy, bos)
    assert not (masked & ~words(noisy)).any()  # only words are ever flagged


def test_same_seed_same_noise_other_seed_other_noise():
    src = batch(rows=50)
    config = NoiseConfig(drop=0.1, infill=0.2, mask=0.1, substitute=0.1, shuffle_k=3)
    a, b, c = run(config, src, seed=7), run(config, src, seed=7), run(config, src, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0])


def test_drop_rate_and_order():
    src = batch()
    noisy, masked = run(NoiseConfig(drop=0.3), src)
    removed = 1 - words(noisy).sum() / words(src).sum()
    assert abs(removed - 0.3) < 0.02
    assert noisy.size(1) <= src.size(1) and not masked.any()
    assert_layout(noisy, bos=False)
    for s, n in zip(src[:20].tolist(), noisy[:20].tolist()):  # the survivors keep their order
        it = iter(s)
        assert all(t in it for t in n if t != PAD_ID)


def test_mask_rate_and_flags():
    src = batch()
    noisy, masked = run(NoiseConfig(mask=0.15), src)
    assert noisy.shape == src.shape  # positions stay aligned with the clean target
    assert torch.equal(masked, noisy == MASK)
    assert abs(masked.sum() / words(src).sum() - 0.15) < 0.02
    assert torch.equal(noisy[~masked], src[~masked])


def test_substitute_rate_changes_every_chosen_word():
    src = batch()
    noisy, masked = run(NoiseConfig(substitute=0.1), src)
    assert noisy.shape == src.shape
    assert torch.equal(masked, noisy != src)  # a substitution always changes the word
    assert abs(masked.sum() / words(src).sum() - 0.1) < 0.02
    new = noisy[masked]
    assert (new > MASK).all() and (new < V).all()  # a real word, never the mask token


def test_substitute_small_vocab_is_uniform_over_other_words():
    src = torch.tensor([[5, 5, 5, 5, 3]]).repeat(2000, 1)
    noiser = Noiser(NoiseConfig(substitute=1.0), vocab_size=8, mask_id=4)
    noisy, masked = noiser(src, torch.Generator().manual_seed(0))
    assert masked[:, :4].all()
    counts = torch.bincount(noisy[:, :4].flatten(), minlength=8)
    assert counts[:6].sum() == 0  # not the specials, the mask (4) or the original (5)
    assert abs(counts[6] / counts[6:].sum() - 0.5) < 0.03


def test_mask_then_substitute_do_not_overlap():
    src = batch()
    noisy, masked = run(NoiseConfig(mask=0.5, substitute=0.5), src)
    n_words = words(src).sum()
    n_mask = (noisy == MASK).sum()
    n_sub = (masked & (noisy != MASK)).sum()
    assert abs(n_mask / n_words - 0.5) < 0.02
    assert abs(n_sub / n_words - 0.25) < 0.02  # half of the unmasked half
    assert torch.equal(masked, noisy != src)


@pytest.mark.parametrize("k, bound", [(3.0, 3), (1.5, 2)])
@pytest.mark.parametrize("bos", [False, True])
def test_shuffle_keeps_tokens_and_moves_at_most_k(k, bound, bos):
    src = batch(rows=300, unique=True, bos=bos)
    noisy, masked = run(NoiseConfig(shuffle_k=k), src)
    assert noisy.shape == src.shape and not masked.any()
    assert torch.equal(noisy.sort(1).values, src.sort(1).values)  # same multiset per row
    assert torch.equal(noisy == EOS_ID, src == EOS_ID) and torch.equal(noisy == PAD_ID, src == PAD_ID)
    assert torch.equal(noisy == BOS_ID, src == BOS_ID)
    pos = torch.arange(src.size(1)).expand(src.shape)
    w = words(src)
    origin = noisy - (MASK + 1) + int(bos)  # unique ids: where each word came from
    moves = (origin - pos)[w].abs()
    assert moves.max() == bound
    assert (moves > 0).float().mean() > 0.3


def test_shuffle_carries_the_mask_flags_along():
    src = batch(rows=100, unique=True)
    noisy, masked = run(NoiseConfig(mask=0.3, shuffle_k=2), src)
    assert torch.equal(masked, noisy == MASK)


def test_fill_spans_by_hand():
    x = torch.tensor([[5, 6, 7, 8, 3, 0],
                      [2, 9, 10, 3, 0, 0],
                      [5, 6, 7, 3, 0, 0]])
    starts = torch.tensor([[1, 4, 0], [1, 3, 0], [0, 0, 0]])
    lengths = torch.tensor([[2, 0, 0], [0, 0, 0], [0, 3, 0]])
    used = torch.tensor([[True, True, False], [True, True, False], [True, True, False]])
    noisy, is_mask = fill_spans(x, starts, lengths, used, mask_id=4)
    assert noisy.tolist() == [[5, 4, 8, 4, 3, 0],   # a span over 6 7; a 0-length span before EOS
                              [2, 4, 9, 10, 4, 3],  # 0-length spans right after BOS and before EOS
                              [4, 4, 3, 0, 0, 0]]   # a 0-length span, then one over every word
    assert torch.equal(is_mask, noisy == 4)


def test_infill_hides_the_rate_with_one_mask_per_span():
    src = batch(rows=400, unique=True)
    noisy, masked = run(NoiseConfig(infill=0.3), src)
    assert torch.equal(masked, noisy == MASK)
    assert_layout(noisy, bos=False)
    n_masks = masked.sum()
    hidden = words(src).sum() - (words(noisy) & ~masked).sum()
    assert abs(hidden / words(src).sum() - 0.3) < 0.02
    # Poisson(3) spans, the last one per row cut to fit: mean length a bit under 3, never ~1 (token masking).
    assert 1.8 < hidden / n_masks < 3.2
    for s, n in zip(src[:50].tolist(), noisy[:50].tolist()):
        origin = {t: o for o, t in enumerate(s)}  # unique ids: a token's position in the clean row
        prev_i = prev_o = -1
        for i, t in enumerate(n):
            if t in (MASK, PAD_ID):
                continue
            assert origin[t] > prev_o  # the unhidden words keep their order
            if origin[t] - prev_o > 1:  # words hidden here: a mask token stands in for them
                assert i - prev_i > 1 and all(u == MASK for u in n[prev_i + 1:i])
            prev_i, prev_o = i, origin[t]


def test_infill_rate_holds_even_when_most_spans_are_empty():
    src = batch(rows=200)
    noisy, masked = run(NoiseConfig(infill=0.4, infill_lambda=0.05), src)
    hidden = words(src).sum() - (words(noisy) & ~masked).sum()
    assert abs(hidden / words(src).sum() - 0.4) < 0.02


def test_infill_spans_can_sit_at_either_end():
    src = batch(rows=200)
    noisy, masked = run(NoiseConfig(infill=0.2), src)
    last = noisy.gather(1, ((noisy != PAD_ID).sum(1, keepdim=True) - 2).clamp(min=0))[:, 0]  # before EOS
    long_rows = words(src).sum(1) >= 10  # short rows can be hidden whole, which proves nothing
    assert (noisy[long_rows, 0] == MASK).any() and (last[long_rows] == MASK).any()


def test_infill_everything_leaves_only_masks():
    src = batch(rows=100, bos=True)
    noisy, masked = run(NoiseConfig(infill=1.0, infill_lambda=2.0), src)
    assert_layout(noisy, bos=True)
    assert torch.equal(words(noisy), masked)
    has_words = words(src).any(1)
    assert (masked.sum(1) >= 1)[has_words].all() and not masked[~has_words].any()


@pytest.mark.parametrize("field, value", [("drop", 1.5), ("mask", -0.1), ("substitute", math.nan),
                                          ("infill", 2.0), ("shuffle_k", -1.0), ("infill_lambda", 0.0)])
def test_validate_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        NoiseConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match=field):
        Noiser(NoiseConfig(**{field: value}), vocab_size=V, mask_id=MASK)


def test_parse_noise():
    c = parse_noise(" drop=0.1, mask=0.15,shuffle_k=3 ")
    assert c == NoiseConfig(drop=0.1, mask=0.15, shuffle_k=3.0) and c.active
    assert parse_noise("") == NoiseConfig()
    with pytest.raises(ValueError, match="valid keys: drop, mask, substitute, shuffle_k, infill, infill_lambda"):
        parse_noise("dropout=0.1")
    with pytest.raises(ValueError, match="not a number"):
        parse_noise("drop=lots")
    with pytest.raises(ValueError, match="key=value"):
        parse_noise("drop")
    with pytest.raises(ValueError, match="twice"):
        parse_noise("drop=0.1,drop=0.2")
    with pytest.raises(ValueError, match="drop"):
        parse_noise("drop=2")


def test_user_mistakes_are_explained():
    with pytest.raises(ValueError, match="mask_id"):
        Noiser(NoiseConfig(mask=0.1), vocab_size=V, mask_id=EOS_ID)
    with pytest.raises(ValueError, match="vocab_size"):
        Noiser(NoiseConfig(substitute=0.1), vocab_size=6, mask_id=MASK)
    noiser = Noiser(NoiseConfig(mask=0.1), vocab_size=V, mask_id=MASK)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="row 1"):
        noiser(torch.tensor([[5, 6, 3], [5, 6, 7]]), g)  # no EOS
    with pytest.raises(ValueError, match="row 0"):
        noiser(torch.tensor([[5, 0, 6, 3]]), g)  # PAD inside
    with pytest.raises(ValueError, match="row 0"):
        noiser(torch.tensor([[5, 3, 6, 3]]), g)  # EOS among the words
