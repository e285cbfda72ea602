"""Batches from uint8 image tensors on the training device, augmented with tensor ops.

The whole split lives on the device; each epoch is shuffled, cropped, flipped and cut out in a few
whole-set tensor operations (no DataLoader, no per-image Python), and each batch is cast and
normalised just before the model sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_tensors(images: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 32, 32, 3) uint8 array -> (N, 3, 32, 32) uint8 tensor on ``device``, with int64 labels."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return x.to(device), torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)


def normalization(mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, 3, 1, 1), that map uint8 pixels to ``(x / 255 - mean) / std`` as
    ``x * scale + shift``."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


@dataclass
class Normalizer:
    """uint8 batch -> float32 batch normalised by the training set's per-channel mean and std."""

    scale: torch.Tensor
    shift: torch.Tensor
    channels_last: bool

    @classmethod
    def from_stats(cls, mean, std, device: torch.device, channels_last: bool) -> "Normalizer":
        scale, shift = normalization(mean, std)
        return cls(scale=scale.to(device), shift=shift.to(device), channels_last=channels_last)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().mul_(self.scale).add_(self.shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class Augmenter:
    """Random crop from a padded image, horizontal flip and cutout, drawn per image.

    With ``alternate_flip`` (airbench's trick), a seeded random half of the images is mirrored once
    in :meth:`prepare`, and every second epoch mirrors them all: each image is seen both ways in
    every two epochs, instead of the same way twice a quarter of the time with random flips.

    ``cutout`` > 0 paints a square of that side, placed at random wholly inside each image, in
    ``cutout_fill`` (per-channel values in [0, 1]). Given the normalisation mean, the model sees
    zeros there, as in the published recipes, which cut out after normalising.
    """

    def __init__(self, crop_padding: int, pad_mode: str, flip: bool, alternate_flip: bool = False,
                 cutout: int = 0, cutout_fill: Sequence[float] = (0.0, 0.0, 0.0)):
        self.padding = crop_padding
        self.pad_mode = pad_mode
        self.flip = flip
        self.alternate_flip = alternate_flip
        self.cutout = cutout
        self.cutout_fill = torch.tensor([round(255 * v) for v in cutout_fill], dtype=torch.uint8).view(1, -1, 1, 1)

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Once per run: pad for cropping; with ``alternate_flip``, mirror a random half (``generator``)."""
        if self.flip and self.alternate_flip:
            images = _mirror(images, _coin_flips(len(images), generator, images.device))
        p = self.padding
        if p == 0:
            return images
        if self.pad_mode == "zeros":
            return F.pad(images, (p, p, p, p))
        size = images.shape[-1]
        # Reflect by indexing, which works for uint8 where F.pad's reflect mode does not.
        index = torch.arange(-p, size + p, device=images.device).abs()
        index = torch.where(index >= size, 2 * (size - 1) - index, index)
        return images[:, :, index][:, :, :, index]

    def __call__(self, padded: torch.Tensor, generator: torch.Generator, epoch: int = 1) -> torch.Tensor:
        """Crop, flip and cut out images from :meth:`prepare` for (1-based) ``epoch``."""
        images = self._crop(padded, generator) if self.padding else padded
        if self.flip and self.alternate_flip:
            images = images.flip(-1) if epoch % 2 == 0 else images
        elif self.flip:
            images = _mirror(images, _coin_flips(len(images), generator, images.device))
        return self._cut_out(images, generator) if self.cutout else images

    def _crop(self, padded: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-image random crop, done as one masked copy per row shift, then per column shift."""
        n, c, h, w = padded.shape
        size, shifts = h - 2 * self.padding, 2 * self.padding + 1
        offsets = torch.randint(0, shifts, (2, n), generator=generator, device=padded.device)
        rows = torch.empty((n, c, size, w), dtype=padded.dtype, device=padded.device)
        for s in range(shifts):
            mask = offsets[0] == s
            rows[mask] = padded[mask, :, s : s + size, :]
        out = torch.empty((n, c, size, size), dtype=padded.dtype, device=padded.device)
        for s in range(shifts):
            mask = offsets[1] == s
            out[mask] = rows[mask, :, :, s : s + size]
        return out

    def _cut_out(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One square per image, drawn and painted for the whole set in a few tensor operations."""
        n, _, h, w = images.shape
        corners = torch.randint(0, min(h, w) - self.cutout + 1, (2, n, 1), generator=generator, device=images.device)
        rows = _within(torch.arange(h, device=images.device), corners[0], self.cutout)  # (n, h)
        cols = _within(torch.arange(w, device=images.device), corners[1], self.cutout)  # (n, w)
        square = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)
        return torch.where(square, self.cutout_fill.to(images.device), images)


def _within(positions: torch.Tensor, starts: torch.Tensor, size: int) -> torch.Tensor:
    return (positions >= starts) & (positions < starts + size)


def _coin_flips(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < 0.5


def _mirror(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def train_batches(
    padded: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    augment: Augmenter,
    generator: torch.Generator,
    epoch: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented uint8 batches; the last partial batch is dropped."""
    order = torch.randperm(len(labels), generator=generator, device=labels.device)
    images, labels = augment(padded[order], generator, epoch), labels[order]
    for start in range(0, len(labels) - batch_size + 1, batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return n_images // batch_size
