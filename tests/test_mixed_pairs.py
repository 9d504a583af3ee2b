"""Mixed encoder-decoder pairs: an RNN encoder with a Transformer decoder, and a Transformer encoder with an
RNN attention decoder. `EncoderDecoder` takes any encoder with any decoder (the `Memory` contract); these
tests train each pair end to end on the letter-copy task of `ae_tasks` and decode it with greedy and beam
search, and pin what a mixed pair cannot do (share encoder and decoder weights)."""


import pytest

from ae_tasks import write_config, write_corpus
from seqed.config import ConfigError, load_config
from seqed.model import build_model
from seqed.runlog import read_records
from seqed.train import Trainer
from seqed.translator import Translator

# Whole sections: the YAML's Transformer keys (heads, ffn) do not apply to an RNN.
RNN_ENCODER = ["model.encoder={type: rnn, cell: gru, bidirectional: true, hidden: 16, embed_dim: 32, layers: 1, "
               "dropout: 0.0}"]  # states 2 x 16 = 32 wide
RNN_DECODER = ["model.decoder={type: rnn, cell: gru, hidden: 32, embed_dim: 32, attention: bahdanau, layers: 1, "
               "dropout: 0.0}"]
PAIRS = {"rnn_transformer": RNN_ENCODER, "transformer_rnn": RNN_DECODER}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_mixed_pair_learns_to_copy(tmp_path, pair, one_thread):
    """150 updates (~4 s on an idle core): validation BLEU 92 and 94, exact match 82% and 90% when written."""
    data = write_corpus(tmp_path / "data", "letters", n_train=600, n_test=40)
    run = tmp_path / "run"
    cfg = load_config(str(write_config(tmp_path / "ae.yaml", data, run)), [
        *PAIRS[pair], "model.share_embeddings=true", "model.tie_output=true", "train.max_steps=150",
        "train.valid_every=150", "train.max_tokens=384", "train.lr=0.01", "train.warmup=20",
        "train.precision=fp32"])  # the BLEU bars were set in fp32; auto is bf16 on CPUs with native bf16
    trainer = Trainer(cfg, progress=False)
    state = trainer.run()
    enc, dec = type(trainer.model.encoder).__name__, type(trainer.model.decoder).__name__
    assert (enc, dec) == {"rnn_transformer": ("RNNEncoder", "TransformerDecoder"),
                          "transformer_rnn": ("TransformerEncoder", "RNNDecoder")}[pair]
    log = read_records(run / "train.log.jsonl")
    assert state.step == 150 and log[-1]["valid_bleu"] >= 80, log[-1]
    # Incremental decoding (decoder.step with its cached state) reproduces the sentences, greedy and beam.
    src = (data / "test.txt").read_text().splitlines()
    for beam in (1, 3):
        out = Translator(trainer.model, trainer.tokenizer, beam_size=beam).translate_text(src)
        exact = sum(h[0][0] == s for h, s in zip(out, src)) / len(src)
        assert exact >= 0.7, f"{pair}, beam {beam}: exact match {exact:.0%}"


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_mixed_pair_cannot_tie_encoder_and_decoder(pair):
    """The one option a mixed pair cannot have: tying shares same-shaped weights of an RNN with an RNN or of
    a Transformer with a Transformer, so `tie_encoder_decoder` on a mixed pair is refused by name."""
    cfg = load_config(None, [*PAIRS[pair], "model.share_embeddings=false", "model.tie_encoder_decoder=true"])
    with pytest.raises(ConfigError, match="tie_encoder_decoder: no encoder and decoder weights"):
        build_model(cfg, 30, 30)
