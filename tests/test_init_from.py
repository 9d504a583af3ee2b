"""`train.init_from`: fine-tuning starts from a checkpoint's weights with a fresh optimizer, schedule and
step, reuses the checkpoint's tokenizer unless `tokenizer.model` names another, and refuses a checkpoint
whose vocabulary is not the run's."""

import pytest
import torch

from seqed.checkpoint import CheckpointError
from seqed.config import load_config
from seqed.tokenizer import Tokenizer
from seqed.train import Trainer
from tiny_runs import load_state, write_config, write_task


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny run of 3 updates: the checkpoint to fine-tune from."""
    root = tmp_path_factory.mktemp("parent")
    write_task(root)
    cfg = load_config(write_config(root / "c.yaml", root, root / "run", train="max_steps: 3, valid_every: 3"))
    threads = torch.get_num_threads()
    try:
        Trainer(cfg, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return root


def setup(path, overrides):
    threads = torch.get_num_threads()
    trainer = Trainer(load_config(path, overrides), progress=False)
    try:
        trainer.setup()
    finally:
        torch.set_num_threads(threads)
    return trainer


def test_weights_are_copied_and_training_starts_fresh(parent, tmp_path):
    path = write_config(tmp_path / "c.yaml", parent, tmp_path / "run")
    trainer = setup(path, [f"train.init_from={parent}/run/checkpoint_last.pt",
                           f"tokenizer.model={parent}/run/tokenizer"])  # the same tokenizer, given by hand
    saved = load_state(parent / "run" / "checkpoint_last.pt")
    assert saved["train_state"]["step"] == 3
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    assert trainer.state.step == 0 and trainer.state.epoch == 0 and trainer.state.batch_in_epoch == 0
    assert trainer.optimizer.state_dict()["state"] == {}  # no Adam moments carried over
    assert trainer.schedule.state_dict() == {"scale": 1.0, "best": float("inf"), "bad": 0}  # a fresh schedule
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert lr == trainer.schedule.lr_at(0) < trainer.schedule.lr_at(3)  # the warm-up starts again


def test_the_checkpoints_tokenizer_is_reused_without_tokenizer_model(parent, tmp_path):
    path = write_config(tmp_path / "c.yaml", parent, tmp_path / "run")
    # vocab_size 24 would train another tokenizer; the checkpoint's (20 pieces) is reused instead.
    trainer = setup(path, [f"train.init_from={parent}/run", "tokenizer.vocab_size=24"])
    theirs = Tokenizer.load(parent / "run" / "tokenizer")
    for side in ("src", "tgt"):
        assert trainer.tokenizer.pieces(side) == theirs.pieces(side)
        assert Tokenizer.load(tmp_path / "run" / "tokenizer").pieces(side) == theirs.pieces(side)
    saved = load_state(parent / "run" / "checkpoint_last.pt")
    assert all(torch.equal(v, saved["model"][k]) for k, v in trainer.model.state_dict().items())


def test_another_tokenizer_is_refused_naming_both(parent, tmp_path):
    rows = (parent / "train.src").read_text().splitlines()
    Tokenizer.train(rows, [" ".join(reversed(r.split())) for r in rows], vocab_size=24,
                    model_type="bpe").save(tmp_path / "other")
    path = write_config(tmp_path / "c.yaml", parent, tmp_path / "run")
    with pytest.raises(CheckpointError, match=rf"init_from {parent}/run: its src vocabulary \(20 pieces\) is not the "
                                              rf"tokenizer of {tmp_path}/other \(24.*tokenizer.model unset"):
        setup(path, [f"train.init_from={parent}/run", f"tokenizer.model={tmp_path}/other"])
