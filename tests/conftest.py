"""Shared test setup: small thread counts so the suite behaves on 2-core CI machines."""

import os

import torch

torch.set_num_threads(int(os.environ.get("SEQED_TEST_THREADS", "2")))
