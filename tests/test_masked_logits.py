"""Scoring only some positions (`EncoderDecoder.forward(src, tgt_in, keep)`): a masked autoencoder's loss
(train.loss_on=masked) reads the vocabulary projection at the masked positions only, so the update
projects just those rows. Pinned here: the kept logits, the loss and its gradients equal the full
computation's at those positions, for both decoder types."""

import pytest
import torch

from seqed.config import load_config
from seqed.losses import label_smoothed_nll, masked_target
from seqed.model import build_model
from seqed.vocab import PAD_ID

DECODERS = {
    "rnn": ["model.encoder={type: rnn, cell: gru, bidirectional: true, hidden: 8, embed_dim: 16, layers: 1, "
            "dropout: 0.0}",
            "model.decoder={type: rnn, cell: gru, hidden: 16, embed_dim: 16, attention: bahdanau, layers: 1, "
            "dropout: 0.0}"],
    "transformer": ["model.encoder={type: transformer, layers: 1, hidden: 16, heads: 2, ffn: 32, dropout: 0.0}",
                    "model.decoder={type: transformer, layers: 2, hidden: 16, heads: 2, ffn: 32, dropout: 0.0}"],
}


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_kept_positions_match_the_full_projection(kind):
    torch.manual_seed(0)
    cfg = load_config(None, [*DECODERS[kind], "model.share_embeddings=true", "model.tie_output=true"])
    model = build_model(cfg, 40, 40).double()
    src = torch.randint(4, 40, (3, 7))  # (B, S)
    tgt = torch.randint(4, 40, (3, 6))  # (B, T): BOS-led input and its shifted output
    tgt[:, 0] = 2
    src[2, 5:] = PAD_ID
    out = torch.cat([tgt[:, 1:], torch.randint(4, 40, (3, 1))], dim=1)  # (B, T)
    masked = torch.rand(3, 6) < 0.4  # (B, T)
    masked[0, 1] = True
    target = masked_target(out, masked)  # PAD where not scored

    full = model(src, tgt)
    lo_full = label_smoothed_nll(full.logits, target, smoothing=0.1)
    lo_full.loss.backward()
    grads_full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    keep = target != PAD_ID
    kept = model(src, tgt, keep)
    assert kept.logits.shape == (int(keep.sum()), 40)
    torch.testing.assert_close(kept.logits, full.logits[keep])
    lo_kept = label_smoothed_nll(kept.logits, target[keep], smoothing=0.1)
    lo_kept.loss.backward()
    torch.testing.assert_close(lo_kept.loss, lo_full.loss)
    assert lo_kept.n_tokens == lo_full.n_tokens == int(masked.sum())
    grads_kept = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads_kept.keys() == grads_full.keys()
    for name, g in grads_full.items():
        torch.testing.assert_close(grads_kept[name], g, msg=name)
