"""Data-parallel training (issue 5, scale-out): `torchrun -m seqed train` with DDP and the gloo backend on CPU.

The sampler deals each epoch's batches round-robin to the ranks (rank r takes batches r, r + W, ...)
and the trainer scales each rank's summed loss by W / (global target tokens) before DDP averages the
gradients. So one update of W processes with train.accum=A sees exactly the batches, and the
per-token mean loss, of one process with accum=A*W. Here W=2, A=2 (the first micro-batch under
`no_sync`) against one process with accum=4; dropout is off, since each rank draws its own masks.

Tolerance: the runs differ only in the order of float additions: per gradient element, one process
adds four micro-batch gradients in sequence, ((a + b) + c) + d, two processes add (a + b) + (c + d) and
scale by W = 2 (exact); the summed losses differ likewise. That is one float32 rounding (~6e-8 relative)
per element and step. We measured loss curves equal to ~1e-7 relative after 40 Adam steps and assert
1e-5. Parameters agree to 1e-5 absolute except the attention key biases: their gradient is zero in
exact arithmetic (softmax ignores a shift shared by all keys), so it is pure rounding noise, which
Adam divides by its own tiny magnitude and turns into lr-sized steps of either sign; they are left out.
"""

import subprocess
import sys

import pytest
import torch

from seqed.runlog import read_records
from seqed.cli import main
from tiny_runs import assert_same_tensors, child_env, load_state, write_config, write_task

pytestmark = pytest.mark.slow  # every test trains through subprocesses

STEPS = 40
# fp32: one and two processes must agree to 1e-5 on every CPU (bf16 rounds differently per batch split)
TRAIN = f"max_steps: {STEPS}, valid_every: 10, max_tokens: 128, precision: fp32"
NO_DROPOUT = ["model.encoder.dropout=0", "model.decoder.dropout=0"]


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a free local port, so parallel test runs do not collide)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "seqed", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def history(run) -> list:
    return read_records(run / "train.log.jsonl")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def ddp_run(task, tmp_path_factory):
    """Two processes, accum 2, trained without interruption."""
    root = tmp_path_factory.mktemp("ddp")
    cfg = write_config(root / "cfg.yaml", task, root / "run", train=TRAIN + ", accum: 2")
    proc = torchrun("train", cfg, *NO_DROPOUT, "--no-progress")
    return cfg, root / "run", proc.stderr


def test_two_processes_match_one_process_with_the_same_global_batch(task, ddp_run, tmp_path):
    _, run2, stderr = ddp_run
    # Only rank 0 logs and writes.
    assert stderr.count("[seqed] validation {") == STEPS // 10
    assert stderr.count("[seqed] done: reached train.max_steps") == 1
    assert sorted(p.name for p in run2.glob("checkpoint_*.pt")) == \
        ["checkpoint_30.pt", "checkpoint_40.pt", "checkpoint_best.pt", "checkpoint_last.pt"]

    threads = torch.get_num_threads()
    run1 = tmp_path / "run1"
    cfg = write_config(tmp_path / "cfg.yaml", task, run1, train=TRAIN + ", accum: 4")
    try:
        assert main(["train", str(cfg), *NO_DROPOUT, "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)

    h1, h2 = history(run1), history(run2)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [10, 20, 30, 40]
    assert [h["epoch"] for h in h1] == [h["epoch"] for h in h2]
    for key in ("valid_nll", "train_loss"):
        assert [h[key] for h in h1] == pytest.approx([h[key] for h in h2], rel=1e-5, abs=0), key
    assert h2[-1]["train_loss"] < h2[0]["train_loss"] - 1.0  # it learns: the curves are not flat

    a, b = load_state(run1 / "checkpoint_last.pt"), load_state(run2 / "checkpoint_last.pt")
    compared = [k for k in a["model"] if not k.endswith("k_proj.bias")]
    assert len(compared) > 10
    for k in compared:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-5, msg=k)
    assert a["train_state"]["batch_in_epoch"] == 2 * b["train_state"]["batch_in_epoch"]  # per-rank position
    assert b["train_state"]["world"] == 2


def test_resume_under_ddp_is_exact(task, ddp_run, tmp_path):
    _, reference, _ = ddp_run
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", task, run, train=TRAIN + ", accum: 2")
    torchrun("train", cfg, *NO_DROPOUT, "train.max_steps=25", "--no-progress")
    assert load_state(run / "checkpoint_last.pt")["train_state"]["step"] == 25
    proc = torchrun("train", cfg, *NO_DROPOUT, "--no-progress", "--resume")
    assert proc.stderr.count("resumed from step 25") == 1  # rank 0 only
    a, b = load_state(run / "checkpoint_last.pt"), load_state(reference / "checkpoint_last.pt")
    assert a["train_state"]["step"] == STEPS
    assert_same_tensors(a["model"], b["model"], "model.")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer.")
    assert [h["valid_nll"] for h in history(run) if h["step"] % 10 == 0] == [h["valid_nll"] for h in history(reference)]


def test_binarized_data_under_ddp_then_resumed_by_one_process(task, tmp_path):
    """Rank 0 preprocesses the missing data.binarized while rank 1 waits; 2 processes with accum 1 for 3
    updates, then 1 process with accum 2 (--resume) to 6: the batches, hence the weights, of one process with
    accum 2 throughout (up to float rounding, see the module docstring)."""
    short = "max_steps: 6, valid_every: 3, max_tokens: 128"
    over = [*NO_DROPOUT, f"data.binarized={tmp_path / 'bin'}"]
    run, ref = tmp_path / "run", tmp_path / "ref"
    cfg = write_config(tmp_path / "cfg.yaml", task, run, train=short)
    proc = torchrun("train", cfg, *over, "train.max_steps=3", "--no-progress")
    assert proc.stderr.count("[seqed] preprocessed ") == 1  # rank 0 only; rank 1 mapped its output
    saved = load_state(run / "checkpoint_last.pt")["train_state"]
    assert (saved["world"], saved["step"], saved["batch_in_epoch"]) == (2, 3, 3)

    threads = torch.get_num_threads()
    try:
        assert main(["train", str(cfg), *over, "train.accum=2", "--no-progress", "--resume"]) == 0
        cfg_ref = write_config(tmp_path / "ref.yaml", task, ref, train=short + ", accum: 2")
        assert main(["train", str(cfg_ref), *over, "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = load_state(run / "checkpoint_last.pt"), load_state(ref / "checkpoint_last.pt")
    assert (a["train_state"]["epoch_start"], a["train_state"]["batch_in_epoch"]) == (6, 6)
    assert b["train_state"]["batch_in_epoch"] == 12 and a["train_state"]["step"] == 6
    compared = [k for k in a["model"] if not k.endswith("k_proj.bias")]
    for k in compared:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-5, msg=k)


def test_rank_0_preprocessing_error_reaches_every_rank(task, tmp_path):
    """A corpus that cannot be preprocessed: rank 0's error, and no rank left waiting for the timeout."""
    (tmp_path / "train.tgt").write_text("".join((task / "train.tgt").read_text().splitlines(True)[:-1]))
    cfg = write_config(tmp_path / "cfg.yaml", task, tmp_path / "run")
    cfg.write_text(cfg.read_text().replace(f"tgt: {task}/train.tgt", f"tgt: {tmp_path}/train.tgt"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seqed",
           "train", str(cfg), f"data.binarized={tmp_path / 'bin'}", "train.dist_timeout_minutes=5", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode != 0
    assert "seqed: error: rank 0 could not preprocess the training data:" in proc.stderr  # rank 1
    assert proc.stderr.count("train.tgt") >= 2 and not (tmp_path / "bin").exists()
