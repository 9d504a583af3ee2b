"""Batch invariance (issue 26, item 8): a sentence translates to the same tokens alone and inside a
mixed-length dynamic batch, greedy and beam, with both engines, in fp32."""

import random

import pytest

pytest.importorskip("ctranslate2")

from seqed.serve.batcher import Batcher  # noqa: E402
from seqed.serve.engine import DecodeOptions  # noqa: E402
from serve_helpers import engine  # noqa: E402


def mixed_lengths(sources, n=80, seed=0):
    """The validation sentences plus longer ones (two or three joined): 3 to ~24 letters."""
    rng = random.Random(seed)
    out = list(sources)
    while len(out) < n:
        out.append(" ".join(rng.sample(sources, rng.choice([2, 3]))))
    rng.shuffle(out)
    return out[:n]


@pytest.mark.parametrize("kind", ["seqed", "ctranslate2"])
@pytest.mark.parametrize("options", [DecodeOptions(beam=1), DecodeOptions(beam=5, length_penalty=1.0),
                                     DecodeOptions(beam=4, nbest=2, length_penalty=0.0)],
                         ids=["greedy", "beam", "nbest"])
def test_alone_equals_inside_a_dynamic_batch(reversal_model, kind, options, one_thread):
    run, _, sources = reversal_model
    served = engine("m", run, kind, "--threads", "1", "--precision", "fp32")
    sentences = mixed_lengths(sources)
    ids = served.encode(sentences)
    alone = [served.translate_ids([x], options)[0] for x in ids]
    sizes = []
    batcher = Batcher(served, max_batch_tokens=100_000, max_wait_ms=300,
                      on_batch=lambda stats: sizes.append(stats.sentences)).start()
    first = batcher.submit([ids[0]], options, 60)  # everything else queues up behind this one
    futures = [batcher.submit([x], options, 60) for x in ids[1:]]
    together = [first.result(60)[0]] + [f.result(60)[0] for f in futures]
    batcher.stop(10)
    served.close()
    assert max(sizes) >= len(ids) // 2  # most sentences did share one model call
    for sentence, a, pairs in zip(sentences, alone, together):
        assert [h.tokens for h in a] == [h.tokens for _, h in pairs], sentence
        assert [h.score for h in a] == pytest.approx([h.score for _, h in pairs], abs=1e-4)
