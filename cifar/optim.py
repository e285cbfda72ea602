"""Optimizer and learning-rate schedule from the ``optimizer`` and ``scheduler`` config groups."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from cifar.models import first_conv
from cifar.muon import Muon


log = logging.getLogger(__name__)

FUSED_DEVICES = ("cpu", "cuda")  # one kernel per step instead of one per parameter tensor


def build_optimizer(cfg: Any, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    if cfg.name == "muon":
        return build_muon(cfg, model)
    fused = device.type in FUSED_DEVICES
    params = param_groups(model, cfg.lr, cfg.weight_decay, cfg.norm_bias_lr_scale)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, fused=fused
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def build_muon(cfg: Any, model: nn.Module) -> Muon:
    """Muon at ``muon_lr`` and ``muon_momentum`` for the hidden filters, without weight decay (cifar10-airbench's
    airbench94_muon); SGD with the other settings for the rest, in the groups of ``param_groups``, first (the
    run's logged lr is the first group's)."""
    filters = hidden_filters(model)
    sgd_groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.norm_bias_lr_scale, leave_out=filters)
    muon_group = {"params": filters, "lr": cfg.muon_lr, "momentum": cfg.muon_momentum, "weight_decay": 0.0,
                  "orthogonalize": True}
    return Muon([*sgd_groups, muon_group], lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay, ns_steps=cfg.ns_steps, normalize_filters=cfg.normalize_filters)


def hidden_filters(model: nn.Module) -> list[nn.Parameter]:
    """The trained convolution filters but the first one's, which sees the images: the weights Muon is for."""
    first = first_conv(model)
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m is not first and m.weight.requires_grad]


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, norm_bias_lr_scale: float, leave_out: Sequence[nn.Parameter] = ()
) -> list[dict[str, Any]]:
    """One group of all parameters but ``leave_out``; with ``norm_bias_lr_scale`` other than 1, the BatchNorm
    biases in a group of their own whose rate is ``lr`` times it and whose weight decay is divided by it, so
    that weight decay takes the same share of them each step (cifar10-airbench's bias scaler).
    """
    left_out = {id(p) for p in leave_out}
    params = [p for p in model.parameters() if id(p) not in left_out]
    if norm_bias_lr_scale == 1:
        return [{"params": params}]
    norm_bias_ids = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.bias is not None}
    return [
        {"params": [p for p in params if id(p) not in norm_bias_ids]},
        {"params": [p for p in params if id(p) in norm_bias_ids], "lr": lr * norm_bias_lr_scale,
         "weight_decay": weight_decay / norm_bias_lr_scale},
    ]


def build_scheduler(
    cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> LRScheduler | None:
    """A schedule stepped once per batch over ``epochs`` epochs; None for a constant rate."""
    total = steps_per_epoch * epochs
    if cfg.name == "none":
        return None
    if cfg.name == "onecycle":
        total_steps = total + 1  # its last rate is reached after the last step, not one step beyond it
        pct_start = cfg.pct_start
        if pct_start * total_steps == 1:  # OneCycleLR's warm-up phase would end at step 0; it divides by its length
            pct_start = math.nextafter(pct_start, 0)  # a warm-up under one step: the run starts at the peak rate
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=pct_start,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            anneal_strategy=cfg.anneal,
            cycle_momentum=cfg.cycle_momentum,
            base_momentum=cfg.base_momentum,
            max_momentum=cfg.max_momentum,
        )
    if cfg.name == "cosine":
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        if warmup >= total:  # a dry run (debug=smoke: 1 epoch) of a longer run's schedule, or a slip
            log.warning("scheduler.warmup_epochs=%s is not shorter than the run (trainer.epochs=%d): the rate rises "
                        "for the whole run, to %.0f%% of optimizer.lr, and never decays: lower "
                        "scheduler.warmup_epochs or raise trainer.epochs", cfg.warmup_epochs, epochs,
                        100 * total / warmup)
        return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, cfg.min_lr_ratio))
    raise ValueError(f"unknown scheduler {cfg.name!r}")


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base rate: linear from 0 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
