"""Lookahead: when the weights are pulled toward their slow copy, by how much, and what resumes."""

from __future__ import annotations

import torch
from torch import nn

from cifar.lookahead import Lookahead


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def train_step(model: nn.Module, seed: int) -> None:
    """A stand-in for an optimizer step: move every weight, and the BatchNorm statistics by a forward pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator))
    model.train()
    model(torch.randn(8, 4, generator=generator))


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_every_nth_step_pulls_the_weights_and_statistics_to_the_slow_copy_by_the_ramped_decay():
    model = make_model()
    lookahead = Lookahead(model, every=3, decay=0.8, total_steps=6)
    slow = float_state(model)
    for step in range(1, 7):
        train_step(model, step)
        fast = float_state(model)
        lookahead.after_step(model)
        if step % 3:
            assert all(torch.equal(model.state_dict()[k], fast[k]) for k in fast)  # untouched between syncs
            continue
        keep = 0.8 * (step / 6) ** 3  # 0.1 at step 3, 0.8 at the last
        slow = {k: keep * slow[k] + (1 - keep) * fast[k] for k in slow}
        for k in slow:
            torch.testing.assert_close(model.state_dict()[k], slow[k])
    assert {"1.running_mean", "1.running_var"} <= slow.keys()  # the statistics too
    assert model.state_dict()["1.num_batches_tracked"] == 6  # counters are left alone


def test_finish_drops_the_fast_steps_since_the_last_sync():
    model = make_model()
    lookahead = Lookahead(model, every=2, decay=0.5, total_steps=3)
    for step in range(1, 4):
        train_step(model, step)
        lookahead.after_step(model)
    lookahead.finish(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in lookahead.slow.items())
    synced = make_model()
    lookahead_again = Lookahead(synced, every=2, decay=0.5, total_steps=3)
    for step in range(1, 3):  # to the last sync only
        train_step(synced, step)
        lookahead_again.after_step(synced)
    assert all(torch.equal(model.state_dict()[k], synced.state_dict()[k]) for k in lookahead.slow)


def test_a_restored_lookahead_goes_on_as_the_uninterrupted_one():
    whole, resumed = make_model(), make_model()
    whole_lookahead = Lookahead(whole, every=2, decay=0.9, total_steps=6)
    for step in range(1, 7):
        train_step(whole, step)
        whole_lookahead.after_step(whole)

    first = make_model()
    first_lookahead = Lookahead(first, every=2, decay=0.9, total_steps=6)
    for step in range(1, 4):  # stopped between syncs
        train_step(first, step)
        first_lookahead.after_step(first)
    saved = {k: v.clone() for k, v in first_lookahead.state_dict()["slow"].items()}
    resumed.load_state_dict(first.state_dict())
    resumed_lookahead = Lookahead(resumed, every=2, decay=0.9, total_steps=6)
    resumed_lookahead.load_state_dict({"step": first_lookahead.step, "slow": saved})
    for step in range(4, 7):
        train_step(resumed, step)
        resumed_lookahead.after_step(resumed)
    assert all(torch.equal(whole.state_dict()[k], resumed.state_dict()[k]) for k in whole.state_dict())
