from __future__ import annotations

import numpy as np
import pytest
import torch

from cifar.batches import Augmenter, Normalizer, steps_per_epoch, to_tensors, train_batches


def random_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("zeros", "constant")])
def test_padding_matches_numpy(mode, np_mode):
    images = random_images(4)
    padded = Augmenter(4, mode, flip=False).prepare(images)
    expected = np.pad(images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode=np_mode)
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_each_crop_is_a_window_of_its_own_padded_image_and_shifts_vary():
    images = random_images(200)
    augment = Augmenter(4, "zeros", flip=False)
    padded = augment.prepare(images)
    out = augment(padded, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets = set()
    for i in range(len(images)):
        windows = padded[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32)
        match = (windows == out[i][:, None, None]).all(dim=(0, 3, 4)).nonzero()
        assert len(match) >= 1, f"image {i} is not a crop of its padded source"
        offsets.add(tuple(match[0].tolist()))
    assert len(offsets) > 40  # 81 possible offsets, drawn per image


def test_flip_mirrors_about_half_the_images():
    images = random_images(400)
    out = Augmenter(0, "reflect", flip=True)(images, torch.Generator().manual_seed(2))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_augmentation_is_reproducible_from_the_generator_seed():
    images = random_images(50)
    augment = Augmenter(4, "reflect", flip=True)
    a = augment(augment.prepare(images), torch.Generator().manual_seed(3))
    b = augment(augment.prepare(images), torch.Generator().manual_seed(3))
    c = augment(augment.prepare(images), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_batches_cover_the_epoch_once_and_drop_the_partial_batch():
    labels = torch.arange(100)
    images = labels.view(-1, 1, 1, 1).expand(-1, 3, 32, 32).to(torch.uint8).contiguous()
    batches = list(train_batches(images, labels, 32, Augmenter(0, "reflect", False), torch.Generator().manual_seed(0)))
    assert len(batches) == steps_per_epoch(100, 32) == 3
    seen = torch.cat([y for _, y in batches])
    assert len(set(seen.tolist())) == 96
    for x, y in batches:  # images travel with their labels through the shuffle
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_normalizer_uses_the_dataset_statistics():
    images = random_images(8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = Normalizer.from_stats(mean, std, torch.device("cpu"), channels_last=True)(images)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_to_tensors_converts_hwc_to_chw():
    hwc = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    x, y = to_tensors(hwc, np.arange(5), torch.device("cpu"))
    assert x.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(x[2, 1].numpy(), hwc[2, :, :, 1])
    assert y.dtype == torch.int64


def test_alternate_flip_shows_each_image_both_ways_in_two_epochs():
    images = random_images(400)
    augment = Augmenter(0, "reflect", flip=True, alternate_flip=True)
    prepared = augment.prepare(images, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(6)
    odd, even = augment(prepared, generator, epoch=1), augment(prepared, generator, epoch=2)
    mirrored = (odd == images.flip(-1)).flatten(1).all(1)
    assert 150 < int(mirrored.sum()) < 250  # a random half is mirrored in odd epochs
    assert torch.equal(even, odd.flip(-1))  # and the other way round in even ones
    assert torch.equal(augment(prepared, generator, epoch=3), odd)


def test_cutout_paints_one_square_wholly_inside_each_image_and_nothing_else():
    images = torch.randint(0, 60, (300, 3, 32, 32), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    augment = Augmenter(0, "reflect", flip=False, cutout=8, cutout_fill=(0.5, 0.25, 1.0))
    out = augment(augment.prepare(images), torch.Generator().manual_seed(8))
    fill = torch.tensor([128, 64, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    painted = (out == fill).all(1)  # (n, 32, 32): the source pixels never take the fill's values
    assert torch.equal(torch.where(painted[:, None], images, out), images)  # the rest is untouched
    rows, cols = painted.any(2), painted.any(1)
    assert (rows.sum(1) == 8).all() and (cols.sum(1) == 8).all() and (painted.flatten(1).sum(1) == 64).all()
    top, left = rows.int().argmax(1), cols.int().argmax(1)
    assert (rows.int().diff(dim=1).abs().sum(1) <= 2).all()  # one run of rows, one of columns: a square
    assert (cols.int().diff(dim=1).abs().sum(1) <= 2).all()
    assert {int(top.min()), int(top.max()), int(left.min()), int(left.max())} == {0, 32 - 8}  # edge to edge
    again = augment(augment.prepare(images), torch.Generator().manual_seed(8))
    assert torch.equal(out, again)


def test_cutout_filled_with_the_mean_is_zero_after_normalising():
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    images = torch.zeros((4, 3, 32, 32), dtype=torch.uint8)
    out = Augmenter(0, "reflect", flip=False, cutout=32, cutout_fill=mean)(images, torch.Generator().manual_seed(0))
    normalised = Normalizer.from_stats(mean, std, torch.device("cpu"), channels_last=False)(out)
    assert normalised.abs().max() < 0.5 / 255 / min(std)  # the nearest uint8 to the mean
