from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cifar.optim import build_optimizer, build_scheduler, param_groups

SGD = {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4, "norm_bias_lr_scale": 1.0, "momentum": 0.9, "nesterov": True}
ONECYCLE = {"name": "onecycle", "pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4,
            "cycle_momentum": False, "base_momentum": 0.85, "max_momentum": 0.95}


def schedule(scheduler_cfg: dict, steps: int, key: str = "lr", optimizer_cfg: dict | None = None) -> list:
    """The param group's ``key`` (the rate by default) at each step, and after the last one."""
    optimizer_cfg = optimizer_cfg or {**SGD, "lr": 1.0, "weight_decay": 0.0}
    optimizer = build_optimizer(OmegaConf.create(optimizer_cfg), torch.nn.Linear(1, 1), torch.device("cpu"))
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


@pytest.mark.parametrize(
    "name,extra", [("adam", {"betas": [0.9, 0.999]}), ("sgd", {"momentum": 0.9, "nesterov": True})]
)
def test_optimizers_use_the_fused_kernels_on_the_cpu(name, extra):
    cfg = OmegaConf.create({"name": name, "lr": 0.1, "weight_decay": 0.0, "norm_bias_lr_scale": 1.0, **extra})
    optimizer = build_optimizer(cfg, torch.nn.Linear(1, 1), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True


@pytest.mark.parametrize("steps,pct_start", [(4, 0.2), (9, 0.1)])
def test_onecycle_with_a_one_step_warm_up_starts_at_the_peak(steps, pct_start):
    """OneCycleLR divides by the warm-up's length, which is 0 steps when pct_start x (steps + 1) is 1."""
    rates = schedule({**ONECYCLE, "pct_start": pct_start, "anneal": "linear"}, steps)
    assert rates[0] == pytest.approx(1.0) and rates[-1] == pytest.approx(1 / 25 / 1e4)
    assert all(a > b for a, b in zip(rates, rates[1:]))


ADAM = {"name": "adam", "lr": 1.0, "weight_decay": 0.0, "norm_bias_lr_scale": 1.0, "betas": [0.9, 0.999]}


@pytest.mark.parametrize("optimizer_cfg,key", [(None, "momentum"), (ADAM, "betas")])
def test_onecycle_momentum_cycles_only_when_asked(optimizer_cfg, key):
    cycled = [m[0] if key == "betas" else m for m in
              schedule({**ONECYCLE, "anneal": "linear", "cycle_momentum": True}, 101, key, optimizer_cfg)]
    assert cycled[0] == pytest.approx(0.95) and cycled[-1] == pytest.approx(0.95)
    assert min(cycled) == pytest.approx(0.85, abs=2e-3)
    kept = schedule({**ONECYCLE, "anneal": "linear"}, 101, key, optimizer_cfg)
    assert set(map(str, kept)) == {str(0.9 if key == "momentum" else (0.9, 0.999))}  # the optimizer's own value


def _with_a_batchnorm() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.Linear(1, 1))


def test_norm_biases_train_at_the_scaled_rate_and_decay_as_fast_as_the_other_weights():
    model = _with_a_batchnorm()
    optimizer = build_optimizer(OmegaConf.create({**SGD, "norm_bias_lr_scale": 64.0}), model, torch.device("cpu"))
    others, norm_biases = optimizer.param_groups
    assert norm_biases["params"] == [model[1].bias]
    assert {id(p) for p in others["params"]} == {id(p) for p in model.parameters()} - {id(model[1].bias)}
    assert norm_biases["lr"] == pytest.approx(64 * others["lr"])
    for p in model.parameters():  # a step on a zero loss: weight decay alone
        p.data.fill_(1.0)
        p.grad = torch.zeros_like(p)
    optimizer.step()
    decayed = [p.data.flatten()[0].item() for p in model.parameters()]
    assert decayed == pytest.approx([1 - 0.1 * 5e-4 * (1 + 0.9)] * 6)  # Nesterov: lr x wd x (1 + momentum), each tensor


def test_the_schedule_keeps_the_norm_biases_rate_a_multiple_of_the_others():
    cfg = OmegaConf.create({**SGD, "norm_bias_lr_scale": 64.0})
    optimizer = build_optimizer(cfg, _with_a_batchnorm(), torch.device("cpu"))
    scheduler = build_scheduler(OmegaConf.create({**ONECYCLE, "anneal": "linear"}), optimizer, steps_per_epoch=10,
                                epochs=1)
    for _ in range(10):
        others, norm_biases = (group["lr"] for group in optimizer.param_groups)
        assert norm_biases == pytest.approx(64 * others)
        optimizer.step()
        scheduler.step()


def test_without_a_norm_bias_scale_every_parameter_is_in_one_group():
    model = _with_a_batchnorm()
    [group] = build_optimizer(OmegaConf.create(SGD), model, torch.device("cpu")).param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]


def test_a_left_out_parameter_is_in_no_group_even_a_norm_bias():
    model = _with_a_batchnorm()
    left_out = [model[0].weight, model[1].bias]
    groups = param_groups(model, lr=0.1, weight_decay=5e-4, norm_bias_lr_scale=64.0, leave_out=left_out)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if all(p is not q for q in left_out))


COSINE = {"name": "cosine", "min_lr_ratio": 0.0}


@pytest.mark.parametrize("warmup_epochs,warned", [(0.5, False), (1.0, True), (2.0, True)])
def test_a_cosine_warm_up_as_long_as_the_run_is_warned_of_with_the_peak_it_reaches(warmup_epochs, warned, caplog):
    rates = schedule({**COSINE, "warmup_epochs": warmup_epochs}, 10)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert bool(warnings) == warned
    trained = rates[:-1]  # the rates of the run's steps
    if warned:  # it rises at each step, to the last step's rate, which the warning gives
        assert all(a < b for a, b in zip(trained, trained[1:]))
        assert f"to {100 * trained[-1]:.0f}% of optimizer.lr" in warnings[0]
    else:
        assert rates[-1] == pytest.approx(0.0, abs=1e-9)
