from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cifar.optim import build_optimizer, build_scheduler

ONECYCLE = {"name": "onecycle", "pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4,
            "cycle_momentum": False, "base_momentum": 0.85, "max_momentum": 0.95}


def schedule(scheduler_cfg: dict, steps: int, key: str = "lr", optimizer_cfg: dict | None = None) -> list:
    """The param group's ``key`` (the rate by default) at each step, and after the last one."""
    optimizer_cfg = optimizer_cfg or {"name": "sgd", "lr": 1.0, "weight_decay": 0.0, "momentum": 0.9, "nesterov": True}
    optimizer = build_optimizer(OmegaConf.create(optimizer_cfg), [torch.nn.Parameter(torch.zeros(1))],
                                torch.device("cpu"))
    scheduler = build_scheduler(OmegaConf.create(scheduler_cfg), optimizer, steps_per_epoch=steps, epochs=1)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0][key])
        optimizer.step()
        scheduler.step()
    return values + [optimizer.param_groups[0][key]]


def test_linear_onecycle_is_a_triangle_and_cos_is_not():
    linear = schedule({**ONECYCLE, "anneal": "linear"}, 101)
    cos = schedule({**ONECYCLE, "anneal": "cos"}, 101)
    assert max(linear) == pytest.approx(1.0, rel=0.02) and linear[0] == pytest.approx(1 / 25)
    peak = linear.index(max(linear))
    rises, falls = torch.diff(torch.tensor(linear[:peak])), torch.diff(torch.tensor(linear[peak + 1 :]))
    assert torch.allclose(rises, rises[0], atol=1e-6) and torch.allclose(falls, falls[0], atol=1e-6)  # straight lines
    assert not torch.allclose(torch.diff(torch.tensor(cos[peak + 1 :])), falls[0], atol=1e-3)
    for rates in (linear, cos):  # both end on the lowest rate, after the last step: never below it
        assert rates[-1] == pytest.approx(1 / 25 / 1e4) and min(rates) == rates[-1]


@pytest.mark.parametrize("name,extra", [("adam", {"betas": [0.9, 0.999]}), ("sgd", {"momentum": 0.9, "nesterov": True})])
def test_optimizers_use_the_fused_kernels_on_the_cpu(name, extra):
    cfg = OmegaConf.create({"name": name, "lr": 0.1, "weight_decay": 0.0, **extra})
    optimizer = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))], torch.device("cpu"))
    assert optimizer.defaults["fused"] is True


@pytest.mark.parametrize("steps,pct_start", [(4, 0.2), (9, 0.1)])
def test_onecycle_with_a_one_step_warm_up_starts_at_the_peak(steps, pct_start):
    """OneCycleLR divides by the warm-up's length, which is 0 steps when pct_start x (steps + 1) is 1."""
    rates = schedule({**ONECYCLE, "pct_start": pct_start, "anneal": "linear"}, steps)
    assert rates[0] == pytest.approx(1.0) and rates[-1] == pytest.approx(1 / 25 / 1e4)
    assert all(a > b for a, b in zip(rates, rates[1:]))


ADAM = {"name": "adam", "lr": 1.0, "weight_decay": 0.0, "betas": [0.9, 0.999]}


@pytest.mark.parametrize("optimizer_cfg,key", [(None, "momentum"), (ADAM, "betas")])
def test_onecycle_momentum_cycles_only_when_asked(optimizer_cfg, key):
    cycled = [m[0] if key == "betas" else m for m in
              schedule({**ONECYCLE, "anneal": "linear", "cycle_momentum": True}, 101, key, optimizer_cfg)]
    assert cycled[0] == pytest.approx(0.95) and min(cycled) == pytest.approx(0.85, abs=2e-3) and cycled[-1] == pytest.approx(0.95)
    kept = schedule({**ONECYCLE, "anneal": "linear"}, 101, key, optimizer_cfg)
    assert set(map(str, kept)) == {str(0.9 if key == "momentum" else (0.9, 0.999))}  # the optimizer's own value
