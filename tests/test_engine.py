from __future__ import annotations

import math

import pytest
import torch

from cifar.batches import Normalizer
from cifar.device import Runtime
from cifar.engine import TTA, evaluate, predict_logits, train_epoch
from tests.fp16 import FirstLossBlownUp


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


def test_in_fp16_a_step_whose_gradients_overflow_is_skipped_and_the_loss_scale_backs_off():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127.5).long()  # a class the images show
    normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, torch.device("cpu"), channels_last=False)
    runtime = Runtime(device=torch.device("cpu"), amp=True, channels_last=False, amp_dtype=torch.float16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = runtime.grad_scaler()
    first = [(images[:16], labels[:16])]
    before = [p.detach().clone() for p in model.parameters()]
    train_epoch(model, first, normalize, optimizer, None, FirstLossBlownUp(), runtime, scaler)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # skipped, not inf or NaN weights
    assert scaler.get_scale() == 2.0 ** 15  # halved from 2 ** 16
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)]
    losses = [train_epoch(model, batches, normalize, optimizer, None, torch.nn.CrossEntropyLoss(), runtime,
                          scaler).loss for _ in range(10)]
    assert all(p.isfinite().all() for p in model.parameters())
    assert losses[-1] < 0.7 * losses[0]  # the other steps train


@pytest.mark.parametrize("amp_dtype", [None, torch.float16])
def test_grad_clip_norm_scales_each_step_down_to_that_norm_of_the_true_gradients(amp_dtype):
    """A step of plain SGD at lr 1 moves the weights by the gradients: clipped, by exactly the norm given, in fp16
    too, where the clipping must see the gradients unscaled (the scaler's 2 ** 16 would make every norm huge)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (16,))
    normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, torch.device("cpu"), channels_last=False)
    runtime = Runtime(device=torch.device("cpu"), amp=amp_dtype is not None, channels_last=False,
                      amp_dtype=amp_dtype or torch.bfloat16)
    moved, passes = {}, {}
    for clip in (None, 1e-2):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        passes[clip] = train_epoch(model, [(images, labels)], normalize, torch.optim.SGD(model.parameters(), lr=1.0),
                                   None, torch.nn.CrossEntropyLoss(), runtime, runtime.grad_scaler(),
                                   max_grad_norm=clip)
        moved[clip] = (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm().item()
    assert moved[None] > 0.1  # unclipped: the gradients' own norm, well above the clip
    assert moved[1e-2] == pytest.approx(1e-2, rel=1e-3)
    assert passes[None].grad_norm is None  # not clipped: not computed
    assert passes[1e-2].grad_norm == pytest.approx(moved[None], rel=1e-2)  # the norm before clipping


def test_the_mean_gradient_norm_leaves_out_the_fp16_steps_that_overflowed():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (32,))
    normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, torch.device("cpu"), channels_last=False)
    runtime = Runtime(device=torch.device("cpu"), amp=True, channels_last=False, amp_dtype=torch.float16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: each batch's norm is its own
    batches = [(images[:16], labels[:16]), (images[16:], labels[16:])]
    blown_up = train_epoch(model, batches, normalize, optimizer, None, FirstLossBlownUp(), runtime,
                           runtime.grad_scaler(), max_grad_norm=1e9)
    alone = train_epoch(model, batches[1:], normalize, optimizer, None, torch.nn.CrossEntropyLoss(), runtime,
                        runtime.grad_scaler(), max_grad_norm=1e9)
    assert math.isfinite(blown_up.grad_norm) and blown_up.grad_norm == pytest.approx(alone.grad_norm, rel=1e-3)
    every_step = train_epoch(model, batches[:1], normalize, optimizer, None, FirstLossBlownUp(), runtime,
                             runtime.grad_scaler(), max_grad_norm=1e9)
    assert math.isnan(every_step.grad_norm)  # no step to average
