"""Shared test setup: small thread counts so the suite behaves on 2-core CI machines."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SEQED_TEST_THREADS", "2")))


@pytest.fixture
def one_thread():
    """In-process decoding of tiny models: extra threads only synchronise (and stall a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reversal_model(tmp_path_factory):
    """A 1+1-layer Transformer trained for 200 steps on the letter-reversal task (~10 s, once per session),
    its CTranslate2 export (None without ctranslate2), and the validation sources.

    Returns:
        (run directory, export directory or None, list of source sentences)
    """
    from seqed.config import load_config
    from seqed.train import train
    from tiny_runs import write_config, write_task

    root = tmp_path_factory.mktemp("reversal")
    task = write_task(root, n_valid=60)
    cfg = write_config(root / "cfg.yaml", task, root / "run", train="max_steps: 200, valid_every: 200, lr: 0.005")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(cfg), progress=False)
    finally:
        torch.set_num_threads(before)
    from seqed.export import ExportError, export_ctranslate2

    try:
        export = export_ctranslate2(root / "run", root / "ct2")
    except ExportError:  # ctranslate2 not installed
        export = None
    return root / "run", export, (task / "valid.src").read_text().splitlines()
