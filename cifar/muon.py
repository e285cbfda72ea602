"""Muon for a conv net's hidden filters, with SGD for its other parameters, in one optimizer.

Muon (MomentUm Orthogonalized by Newton-Schulz, kellerjordan.github.io/posts/muon) takes SGD's
(Nesterov) momentum of a layer's gradient, viewed as an out_channels x (in_channels x kh x kw)
matrix, and steps along the nearest semi-orthogonal matrix to it instead, found by a few
Newton-Schulz iterations in bf16. This is cifar10-airbench's airbench94_muon variant: before each
step it also rescales the filters to Frobenius norm sqrt(out_channels), which changes nothing
that a BatchNorm after them passes on but keeps their effective rate fixed.

``torch.optim.Muon`` takes 2-D parameters only (conv filters are 4-D) and has no such rescaling,
hence this class. Param groups with ``orthogonalize`` set take the Muon step; the others take
``torch.optim.SGD``'s step (momentum without dampening, L2 weight decay), so that one optimizer,
one scheduler and one checkpoint serve both.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim.sgd import sgd

NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Muon's quintic: fast growth of small singular values


def orthogonalize(matrix: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """About the nearest semi-orthogonal matrix to ``matrix`` (its singular values brought to 0.5-1.5,
    which trains as well as 1 and takes fewer iterations), in bf16."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # singular values at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
        ns_steps: int,
        normalize_filters: bool,
    ):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, orthogonalize=False,
                        ns_steps=ns_steps, normalize_filters=normalize_filters)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state[p].get("momentum_buffer") for p in params]  # None before the first step
            (_muon_step if group["orthogonalize"] else _sgd_step)(params, buffers, group)
            for p, buffer in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buffer


def _sgd_step(params: list[torch.Tensor], buffers: list[torch.Tensor | None], group: dict[str, Any]) -> None:
    """torch.optim.SGD's step (its functional form, which fills in ``buffers``)."""
    sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"], momentum=group["momentum"],
        lr=group["lr"], dampening=0.0, nesterov=group["nesterov"], maximize=False)


def _muon_step(params: list[torch.Tensor], buffers: list[torch.Tensor | None], group: dict[str, Any]) -> None:
    """SGD's momentum, then a step along the orthogonalised update; no weight decay."""
    momentum = group["momentum"]
    for i, p in enumerate(params):
        if buffers[i] is None:
            buffers[i] = p.grad.clone()
        else:
            buffers[i].mul_(momentum).add_(p.grad)
        update = p.grad.add(buffers[i], alpha=momentum) if group["nesterov"] else buffers[i]
        if group["normalize_filters"]:
            p.mul_(len(p) ** 0.5 / p.norm())
        p.add_(orthogonalize(update.reshape(len(p), -1), group["ns_steps"]).reshape_as(p), alpha=-group["lr"])
