from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cifar.muon import Muon, orthogonalize
from cifar.optim import build_optimizer, build_scheduler

MUON = {"name": "muon", "lr": 0.1, "weight_decay": 5e-4, "norm_bias_lr_scale": 1.0, "momentum": 0.9, "nesterov": True,
        "muon_lr": 0.05, "muon_momentum": 0.6, "ns_steps": 3, "normalize_filters": True}


def _net() -> nn.Sequential:
    """A first convolution (not Muon's), a hidden one with a BatchNorm, and a linear head."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.Flatten(), nn.LazyLinear(10))


def _net_with_head() -> nn.Sequential:
    net = _net()
    net(torch.zeros(1, 3, 6, 6))  # the lazy head takes its shape
    return net


def _loss(net: nn.Module, scale: float = 1.0) -> torch.Tensor:
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 10, (4,))
    return scale * nn.functional.cross_entropy(net(x), y)


@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_orthogonalize_brings_every_singular_value_near_1_whatever_the_scale(shape):
    torch.manual_seed(0)
    rank = min(shape)
    left, _ = torch.linalg.qr(torch.randn(shape[0], rank))
    right, _ = torch.linalg.qr(torch.randn(shape[1], rank))
    matrix = left @ torch.diag(torch.logspace(1, 0, rank)) @ right.T  # singular values from 10 down to 1
    result = orthogonalize(matrix, steps=5)
    assert result.shape == matrix.shape
    singular_values = torch.linalg.svdvals(result.float())
    assert singular_values.min() > 0.5 and singular_values.max() < 1.5  # bf16, 5 steps: not exactly 1
    assert torch.equal(orthogonalize(1024 * matrix, steps=5), result)  # only the direction counts
    assert torch.equal(orthogonalize(matrix.T, steps=5), result.T)  # tall matrices go through their transpose


def test_muon_takes_the_hidden_filters_and_sgd_the_rest_first():
    net = _net_with_head()
    optimizer = build_optimizer(OmegaConf.create({**MUON, "norm_bias_lr_scale": 64.0}), net, torch.device("cpu"))
    others, norm_biases, filters = optimizer.param_groups
    assert filters["params"] == [net[1].weight]  # not the first convolution, which sees the images
    assert filters["orthogonalize"] and not others["orthogonalize"] and not norm_biases["orthogonalize"]
    assert (filters["lr"], filters["momentum"], filters["weight_decay"]) == (0.05, 0.6, 0.0)
    assert norm_biases["params"] == [net[2].bias] and norm_biases["lr"] == pytest.approx(6.4)
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in net.parameters()}
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(net.parameters()))


def test_the_sgd_groups_step_as_torch_sgd_does():
    net = _net_with_head()
    net[1].weight.requires_grad_(False)  # so that both nets compute the same gradients for the rest
    reference = copy.deepcopy(net)
    muon = build_optimizer(OmegaConf.create(MUON), net, torch.device("cpu"))
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for _ in range(3):  # momentum and Nesterov's look-ahead come in from the second step
        for model, optimizer in ((net, muon), (reference, sgd)):
            optimizer.zero_grad()
            _loss(model).backward()
            optimizer.step()
    for p, q in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_a_muon_step_does_not_depend_on_the_gradients_scale_and_keeps_the_filters_norm():
    steps = []
    for scale in (1.0, 1024.0):
        torch.manual_seed(0)
        net = _net_with_head()
        nn.init.normal_(net[1].weight, std=3.0)  # far from the norm Muon keeps
        optimizer = build_optimizer(OmegaConf.create(MUON), net, torch.device("cpu"))
        before = net[1].weight.detach().clone()
        _loss(net, scale).backward()
        optimizer.step()
        steps.append(net[1].weight.detach() - before * 16**0.5 / before.norm())  # the step after the rescaling
    torch.testing.assert_close(steps[0], steps[1])
    singular_values = torch.linalg.svdvals(steps[0].reshape(16, -1) / MUON["muon_lr"])
    assert singular_values.median() > 0.5 and singular_values.max() < 1.5  # about orthogonal (3 steps), of size muon_lr
    assert net[1].weight.norm().item() == pytest.approx(16**0.5, rel=0.1)  # rescaled to sqrt(out_channels), a step


def test_the_filters_follow_airbench94_muons_update_step_by_step():
    """Its rule written out: Nesterov momentum (buffer = momentum x buffer + grad; grad + momentum x buffer),
    the filters rescaled to norm sqrt(out_channels), then a step along the orthogonalised update."""
    net = _net_with_head()
    filters = net[1].weight
    expected, buffer = filters.detach().clone(), torch.zeros_like(filters)
    optimizer = build_optimizer(OmegaConf.create(MUON), net, torch.device("cpu"))
    for _ in range(3):
        optimizer.zero_grad()
        _loss(net).backward()
        buffer = 0.6 * buffer + filters.grad
        update = filters.grad.add(buffer, alpha=0.6)
        expected = expected * (4 / expected.norm())
        step = orthogonalize(update.reshape(16, -1), steps=3).reshape_as(expected)
        expected = expected.add(step, alpha=-0.05)
        optimizer.step()
        # Summed as the optimizer sums them (with alpha), the terms round alike: an fp32 ulp apart, the bf16 iterations
        # and step rounded apart by up to 2e-4 (1 net in 7 failed at 1e-4), near a rule's term missed (Nesterov: 6e-4)
        torch.testing.assert_close(filters.detach(), expected, rtol=0, atol=1e-6)


def test_without_normalize_filters_muon_leaves_their_scale_alone():
    net = _net_with_head()
    with torch.no_grad():
        net[1].weight.mul_(10)
    norm = net[1].weight.norm().item()
    optimizer = build_optimizer(OmegaConf.create({**MUON, "normalize_filters": False}), net, torch.device("cpu"))
    _loss(net).backward()
    optimizer.step()
    assert net[1].weight.norm().item() == pytest.approx(norm, rel=0.05)  # where a rescaling would give 4


def test_a_muon_run_resumed_from_its_state_ends_as_an_uninterrupted_one():
    def train(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            _loss(net).backward()
            optimizer.step()

    net = _net_with_head()
    resumed = copy.deepcopy(net)
    optimizer = build_optimizer(OmegaConf.create(MUON), net, torch.device("cpu"))
    train(net, optimizer, 4)
    first = build_optimizer(OmegaConf.create(MUON), resumed, torch.device("cpu"))
    train(resumed, first, 2)
    state = copy.deepcopy(first.state_dict())
    second = build_optimizer(OmegaConf.create(MUON), resumed, torch.device("cpu"))
    second.load_state_dict(state)
    train(resumed, second, 2)
    for p, q in zip(net.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_frozen_or_gradless_parameter_is_left_alone():
    net = _net_with_head()
    net[1].weight.requires_grad_(False)
    optimizer = Muon(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, ns_steps=3,
                     normalize_filters=True)
    frozen = net[1].weight.clone()
    _loss(net).backward()
    optimizer.step()
    assert torch.equal(net[1].weight, frozen) and net[1].weight not in optimizer.state


def test_a_onecycle_without_warm_up_decays_linearly_from_the_peak():
    optimizer = build_optimizer(OmegaConf.create({**MUON, "lr": 1.0}), _net_with_head(), torch.device("cpu"))
    scheduler = build_scheduler(OmegaConf.create({"name": "onecycle", "pct_start": 0.0, "div_factor": 1.0,
                                                  "final_div_factor": 1e4, "anneal": "linear", "cycle_momentum": False,
                                                  "base_momentum": 0.85, "max_momentum": 0.95}),
                                optimizer, steps_per_epoch=10, epochs=2)
    rates = []
    for _ in range(20):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    sgd_rates = torch.tensor([r[0] for r in rates])
    assert sgd_rates[0] == pytest.approx(1.0, abs=0.05) and sgd_rates[-1] < 0.06
    falls = torch.diff(sgd_rates)
    assert torch.allclose(falls, falls[0], atol=1e-6) and falls[0] < 0  # a straight line down
    assert all(muon == pytest.approx(0.05 * sgd) for sgd, muon in rates)  # both rates alike
