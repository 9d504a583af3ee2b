"""Batched beam search gives the outputs of a plain reference beam search on a trained Transformer.

The reference (`reference_beam`) decodes one sentence at a time, scores every prefix with a
teacher-forced forward pass (no cache, no state reordering), normalises the whole vocabulary with
log_softmax and ranks all W x V continuations in one top-k: the textbook algorithm under seqed's
rules (2K candidates, an EOS among the first K ends a hypothesis, the K best others go on, the GNMT
length penalty, the exact stopping bound, EOS forced at the length limit). Every shortcut in
`seqed.search.beam_search` (top-2K of raw logits, the first step on one row per sentence) and in the
Transformer decoder's step (the in-place cache, fused projections, no prefix re-run) must leave the
tokens unchanged.
"""

import math

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from seqed.config import load_config
from seqed.loading import load_model
from seqed.search import LengthPenalty, beam_search, max_lengths
from seqed.train import train
from seqed.vocab import BOS_ID, EOS_ID, PAD_ID
from tiny_runs import write_config, write_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1+1-layer reversal Transformer trained for 150 steps, and its validation sources as (S,) ids + EOS."""
    root = tmp_path_factory.mktemp("beamref")
    task = write_task(root)
    cfg = write_config(root / "cfg.yaml", task, root / "run", train="max_steps: 150, valid_every: 150, lr: 0.005")
    before = torch.get_num_threads()
    train(load_config(cfg), progress=False)
    torch.set_num_threads(before)
    loaded = load_model(str(root / "run" / "checkpoint_best.pt"), device="cpu")
    lines = (task / "valid.src").read_text().splitlines()
    sources = [torch.tensor(ids + [EOS_ID]) for ids in loaded.tokenizer.encode_src(lines)]
    return loaded.model, sources


def reference_beam(model, src, *, k, nbest, alpha, max_len_a, max_len_b, min_len=0, cap=512):
    """Beam search over one source `src` (S,): [(tokens, score, log_prob)] best first."""
    lp = LengthPenalty(alpha)
    limit = max(int(max_lengths(torch.tensor([src.numel()]), max_len_a, max_len_b, cap)[0]), min_len)
    memory = model.encode(src.unsqueeze(0))
    beams, finished = [([], 0.0)], []
    for t in range(limit + 1):
        prefixes = torch.tensor([[BOS_ID] + tokens for tokens, _ in beams])  # (W, t + 1)
        rows = memory.index_select(torch.zeros(len(beams), dtype=torch.long))
        lprobs = torch.log_softmax(model.decoder(prefixes, rows).logits[:, -1].float(), dim=-1)  # (W, V)
        lprobs[:, [PAD_ID, BOS_ID]] = -math.inf
        if t < min_len:
            lprobs[:, EOS_ID] = -math.inf
        if t >= limit:
            lprobs[:, [i for i in range(lprobs.size(1)) if i != EOS_ID]] = -math.inf
        cand = (torch.tensor([s for _, s in beams]).unsqueeze(1) + lprobs).view(-1)  # (W*V,)
        top, idx = cand.topk(min(2 * k, cand.numel()))
        going = []
        for rank, (score, i) in enumerate(zip(top.tolist(), idx.tolist())):
            beam, token = divmod(i, lprobs.size(1))
            if token == EOS_ID:
                if rank < k and math.isfinite(score):
                    finished.append((beams[beam][0], score / float(lp(t + 1)), score))
            elif len(going) < k:
                going.append((beams[beam][0] + [token], score))
        ranked = sorted(f[1] for f in finished)[::-1]
        reachable = max(s for _, s in going) / float(lp(limit + 1))
        if t >= limit or (len(ranked) >= nbest and ranked[nbest - 1] >= reachable):
            break
        beams = going
    return sorted(finished, key=lambda f: -f[1])[:nbest]


@pytest.mark.parametrize("k, nbest, alpha, min_len", [(5, 1, 1.0, 0), (3, 3, 0.0, 0), (4, 2, 0.6, 3)])
def test_batched_beam_search_equals_the_reference(trained, k, nbest, alpha, min_len):
    model, sources = trained
    limits = dict(max_len_a=1.2, max_len_b=2, min_len=min_len)
    src = pad_sequence(sources, batch_first=True, padding_value=PAD_ID)  # (B, S): mixed lengths in one batch
    batched = beam_search(model, src, beam_size=k, nbest=nbest, length_penalty=alpha, **limits)
    with torch.inference_mode():
        want = [reference_beam(model, s, k=k, nbest=nbest, alpha=alpha, **limits) for s in sources]
    assert [[h.tokens for h in hyps] for hyps in batched] == [[w[0] for w in ws] for ws in want]
    for hyps, ws in zip(batched, want):
        for h, (_, score, log_prob) in zip(hyps, ws):
            assert h.score == pytest.approx(score, abs=1e-4) and h.log_prob == pytest.approx(log_prob, abs=1e-4)
    assert len({len(hyps[0].tokens) for hyps in batched}) > 1  # sentences end at different steps
