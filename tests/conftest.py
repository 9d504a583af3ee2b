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
