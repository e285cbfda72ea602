from __future__ import annotations

import pytest
import torch

from cifar.batches import Normalizer
from cifar.device import Runtime
from cifar.engine import TTA, evaluate, predict_logits


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror_image():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))  # not mirror-invariant
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (20,))
    normalize = Normalizer.from_stats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"), channels_last=False)
    runtime = Runtime(device=torch.device("cpu"), amp=False, channels_last=False)
    with torch.no_grad():
        x = normalize(images)
        plain, mirrored = model(x), model(x.flip(-1))
    expected = ((plain + mirrored) / 2).argmax(1)
    assert not torch.equal(plain.argmax(1), expected)  # the mirror image changes some predictions
    tta = evaluate(model, images, labels, normalize, batch_size=8, runtime=runtime, tta=TTA(flip=True))
    assert torch.equal(tta.predictions, expected)
    assert tta.loss == pytest.approx(torch.nn.functional.cross_entropy((plain + mirrored) / 2, labels).item())
    without = evaluate(model, images, labels, normalize, batch_size=8, runtime=runtime)
    assert torch.equal(without.predictions, plain.argmax(1))


def test_translate_tta_adds_the_views_shifted_a_pixel_diagonally_each_way_at_half_weight():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))  # not shift-invariant
    x = torch.randn(20, 3, 8, 8)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    top_left, bottom_right = padded[..., :8, :8], padded[..., 2:, 2:]
    assert torch.equal(top_left[..., 1:, 1:], x[..., :-1, :-1])  # the image moved a pixel down and right
    assert torch.equal(bottom_right[..., :-1, :-1], x[..., 1:, 1:])
    with torch.no_grad():
        for flip in (False, True):
            def view(v):
                return (model(v) + model(v.flip(-1))) / 2 if flip else model(v)

            expected = view(x) / 2 + (view(top_left) + view(bottom_right)) / 4
            actual = predict_logits(model, x, TTA(flip=flip, translate=True))
            torch.testing.assert_close(actual, expected)
            assert not torch.equal(actual.argmax(1), view(x).argmax(1))  # the shifted views change some predictions
