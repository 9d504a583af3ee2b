"""`train.init_from`: fine-tuning starts from a checkpoint's weights with a fresh optimizer, schedule and
step, and refuses a checkpoint whose vocabulary is not the run's."""

import pytest
import torch

from seqed.checkpoint import CheckpointError
from seqed.config import load_config
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
                           f"tokenizer.model={parent}/run/tokenizer"])
    saved = load_state(parent / "run" / "checkpoint_last.pt")
    assert saved["train_state"]["step"] == 3
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    assert trainer.state.step == 0 and trainer.state.epoch == 0 and trainer.state.batch_in_epoch == 0
    assert trainer.optimizer.state_dict()["state"] == {}  # no Adam moments carried over
    assert trainer.schedule.state_dict() == {"scale": 1.0, "best": float("inf"), "bad": 0}  # a fresh schedule
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert lr == trainer.schedule.lr_at(0) < trainer.schedule.lr_at(3)  # the warm-up starts again


def test_another_vocabulary_is_refused(parent, tmp_path):
    path = write_config(tmp_path / "c.yaml", parent, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"src vocabulary \(20 pieces\) is not this run's \(24.*tokenizer.model"):
        setup(path, [f"train.init_from={parent}/run", "tokenizer.vocab_size=24"])
