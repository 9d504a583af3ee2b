import copy
import math

import pytest
import torch
import torch.nn.functional as F

from seqed.losses import label_smoothed_nll
from seqed.optim import Schedule, build_optimizer


def test_no_smoothing_is_cross_entropy_and_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    target = torch.randint(4, 7, (2, 5))
    target[1, 3:] = 0
    out = label_smoothed_nll(logits, target, smoothing=0.0)
    ref = F.cross_entropy(logits.reshape(-1, 7), target.reshape(-1), ignore_index=0, reduction="sum")
    assert out.n_tokens == 8
    assert torch.allclose(out.loss, ref, atol=1e-5) and torch.allclose(out.nll, ref, atol=1e-5)


def test_smoothing_matches_formula_and_torch():
    torch.manual_seed(1)
    logits = torch.randn(4, 6)
    target = torch.tensor([1, 2, 5, 0])
    eps = 0.1
    out = label_smoothed_nll(logits, target, smoothing=eps)
    lp = logits.log_softmax(-1)
    expected = sum((1 - eps) * -lp[i, target[i]] + eps * -lp[i].mean() for i in range(3))
    assert torch.allclose(out.loss, expected, atol=1e-5)
    ref = F.cross_entropy(logits[:3], target[:3], label_smoothing=eps, reduction="sum")
    assert torch.allclose(out.loss, ref, atol=1e-5)


def test_smoothing_optimum_is_not_one_hot():
    # With eps > 0 the loss is minimised by a distribution that keeps eps/V on the other classes.
    V, eps = 5, 0.2
    target = torch.tensor([2])
    p = torch.full((1, V), eps / V)
    p[0, 2] += 1 - eps
    best = label_smoothed_nll(p.log(), target, smoothing=eps).loss
    sharper = label_smoothed_nll(torch.tensor([[0.0, 0.0, 8.0, 0.0, 0.0]]), target, smoothing=eps).loss
    assert best < sharper


def test_noam_schedule_shape():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = Schedule(opt, kind="noam", lr=2e-3, warmup=100)
    assert math.isclose(s.lr_at(50), 1e-3)
    assert math.isclose(s.lr_at(100), 2e-3)
    assert math.isclose(s.lr_at(400), 1e-3)
    assert s.set_step(10) == opt.param_groups[0]["lr"]


def test_plateau_schedule_reduces():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = Schedule(opt, kind="plateau", lr=1e-3, warmup=0, factor=0.5, patience=1)
    for loss in (3.0, 3.1, 3.2):
        s.on_validation(loss)
    assert math.isclose(s.lr_at(1000), 5e-4)
    state = s.state_dict()
    s2 = Schedule(opt, kind="plateau", lr=1e-3)
    s2.load_state_dict(state)
    assert s2.lr_at(5) == s.lr_at(5)


@pytest.mark.parametrize("fused", [True, False])
def test_a_nonfinite_update_is_skipped_on_the_device_exactly(fused):
    """skip_on_device(finite=False) leaves weights, moments and step counters as if step() was never called."""
    from seqed.optim import build_optimizer, skip_on_device

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = build_optimizer(model.parameters(), lr=0.1, weight_decay=0.01, fused=fused)
    model(torch.randn(2, 4)).sum().backward()
    skip_on_device(opt, torch.tensor(True))  # one real update: moments exist
    before = copy.deepcopy((model.state_dict(), opt.state_dict()))
    model(torch.randn(2, 4)).sum().backward()
    skip_on_device(opt, torch.tensor(False))
    after = (model.state_dict(), opt.state_dict())
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k])
    for i, s in before[1]["state"].items():
        for k, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after[1]["state"][i][k])), k
    skip_on_device(opt, torch.tensor(True))  # and the next good update is applied
    assert not torch.equal(before[0]["weight"], model.weight)


def test_wsd_schedule_warms_holds_then_decays_to_min_lr():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = Schedule(opt, kind="wsd", lr=1e-3, warmup=10, min_lr=0.0, total=100, decay_fraction=0.2)
    assert math.isclose(s.lr_at(5), 5e-4)
    assert s.lr_at(10) == s.lr_at(50) == s.lr_at(80) == 1e-3   # stable until the last 20 steps
    assert math.isclose(s.lr_at(90), 5e-4)                     # halfway down
    assert s.lr_at(100) == 0.0 and s.lr_at(120) == 0.0         # the last update and beyond: min_lr
    lrs = [s.lr_at(k) for k in range(80, 101)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_wsd_schedule_by_the_clock_decays_over_the_last_fraction_of_the_minutes():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = Schedule(opt, kind="wsd", lr=1e-3, warmup=10, min_lr=0.0, total=0, seconds=600, decay_fraction=0.2)
    assert math.isclose(s.lr_at(5, elapsed=0), 5e-4)            # the warmup still counts updates
    assert s.lr_at(10, 0) == s.lr_at(10_000, 300) == s.lr_at(10, 480) == 1e-3  # stable until minute 8
    assert math.isclose(s.lr_at(10, 540), 5e-4)                 # halfway down, whatever the step
    assert s.lr_at(10, 600) == 0.0 and s.lr_at(10, 700) == 0.0  # the budget spent: min_lr
    lrs = [s.lr_at(50, t) for t in range(480, 601, 10)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert s.set_step(10, 540) == opt.param_groups[0]["lr"] == s.lr_at(10, 540)
    assert s.end_note(10, 600) is None
    assert "decays over minutes 8.0-10 of training, but training stopped after 7.5 minutes" in s.end_note(10, 450)
    # Steps win when both are given: the clock-free schedule of before.
    both = Schedule(opt, kind="wsd", lr=1e-3, min_lr=0.0, total=100, seconds=600, decay_fraction=0.2)
    assert both.lr_at(90, elapsed=0) == s.lr_at(10, 540) and not both.by_clock


def test_wsd_schedule_needs_a_step_or_time_budget():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total > 0 steps or seconds > 0"):
        Schedule(opt, kind="wsd", lr=1e-3, total=0)
    from seqed.config import Config, ConfigError

    cfg = Config()
    cfg.train.schedule = "wsd"
    with pytest.raises(ConfigError, match="set train.max_steps > 0 or train.max_minutes > 0"):
        cfg.validate()
    cfg.train.max_steps = 1000
    cfg.validate()
    cfg.train.max_steps, cfg.train.max_minutes = 0, 60
    cfg.validate()
    cfg.train.decay_fraction = 0
    with pytest.raises(ConfigError, match="decay_fraction=0"):
        cfg.validate()
