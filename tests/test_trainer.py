from __future__ import annotations

import signal
import time

import pytest
import torch

from cifar import checkpoint
from cifar.batches import Augmenter, Normalizer
from cifar.device import Runtime
from cifar.engine import TTA, evaluate
from cifar.files import BEST, LAST
from cifar.models import simplecnn
from cifar.trainer import FitResult, Splits, Trainer
from tests.fp16 import FirstLossBlownUp


def _trainer(tmp_path, compile: bool, val_size: int = 32, batch_norm: bool = True, device: str = "cpu",
             amp_dtype: torch.dtype | None = None, loss_fn: torch.nn.Module | None = None) -> Trainer:
    """simplecnn (with dropout, and BatchNorm or else conv biases) on random images; ``compile`` only asks for
    the warm-up here; with ``amp_dtype``, autocast in it."""
    data = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (320, 3, 32, 32), dtype=torch.uint8, generator=data).to(device)
    labels = torch.randint(0, 10, (320,), generator=data).to(device)
    augment = Augmenter(crop_padding=2, pad_mode="reflect", flip=True)
    val = slice(256, 256 + val_size)
    splits = Splits(augment.prepare(images[:256]), labels[:256], images[val], labels[val], images[288:], labels[288:])
    torch.manual_seed(0)
    model = simplecnn([8, 16], hidden=32, dropout=0.5, batch_norm=batch_norm).to(device)
    runtime = Runtime(device=torch.device(device), amp=amp_dtype is not None, channels_last=False, compile=compile,
                      amp_dtype=amp_dtype or torch.bfloat16)
    return Trainer(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), scheduler=None,
        loss_fn=loss_fn or torch.nn.CrossEntropyLoss(), splits=splits,
        normalize=Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, runtime.device, False), augment=augment,
        runtime=runtime, batch_size=64, eval_batch_size=16, generator=torch.Generator(device).manual_seed(0),
        checkpoint_dir=tmp_path, show_progress=False,
    )


def test_the_compile_warm_up_is_timed_apart_and_leaves_training_as_it_was(tmp_path):
    results = {}
    for name, compile in (("plain", False), ("warmed", True)):
        trainer = _trainer(tmp_path / name, compile)
        torch.manual_seed(0)  # dropout's draws
        results[name] = trainer, trainer.fit(2, None, lambda metrics: None)
    (plain, plain_result), (warmed, warmed_result) = results.values()

    assert plain_result.warmup_seconds == 0 and warmed_result.warmup_seconds > 0
    curves = [[(m.train.loss, m.train.acc, m.val.loss, m.val.acc) for m in r.history]
              for r in (plain_result, warmed_result)]
    assert curves[0] == curves[1]  # same dropout draws, same BatchNorm statistics, same steps
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, warmed.model.state_dict()[name]), name


def test_a_resumed_fp16_fit_goes_on_with_the_loss_scale_it_had_reached(tmp_path):
    """The scale starts high and backs off at each overflow: a resumed fit that started again from 2 ** 16 would
    skip those steps again."""
    # the first batch's float16 gradients overflow, and the scale halves
    trainer = _trainer(tmp_path, compile=False, amp_dtype=torch.float16, loss_fn=FirstLossBlownUp())
    trainer.fit(1, None, lambda metrics: None)
    last = checkpoint.load(tmp_path / LAST)
    assert last["grad_scaler"]["scale"] == trainer._scaler.get_scale() <= 2.0 ** 15
    resumed = _trainer(tmp_path, compile=False, amp_dtype=torch.float16)
    resumed.fit(1, None, lambda metrics: None, resume_from=last)
    assert resumed._scaler.get_scale() == last["grad_scaler"]["scale"]
    assert _trainer(tmp_path / "bf16", compile=False, amp_dtype=torch.bfloat16)._state(1, FitResult())[
        "grad_scaler"] is None  # nothing to scale


def test_the_warm_up_puts_back_batchnorm_statistics_and_the_rng(tmp_path):
    trainer = _trainer(tmp_path, compile=True)
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    trainer.warm_up()
    assert torch.equal(torch.get_rng_state(), rng)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_without_a_validation_set_best_pt_holds_the_last_epoch_and_the_fit_resumes(tmp_path):
    trainer = _trainer(tmp_path, compile=True, val_size=0)  # the warm-up evaluates a test batch
    result = trainer.fit(2, None, lambda metrics: None)
    assert result.best_val_acc is None and result.best_epoch == 2
    assert all(m.val is None and "val/acc" not in m.as_dict() and "val" not in m.summary(2) for m in result.history)
    best = checkpoint.load(tmp_path / BEST)
    assert best["epoch"] == 2 and best["best_val_acc"] is None
    assert all(torch.equal(value, trainer.model.state_dict()[name]) for name, value in best["model"].items())

    resumed = _trainer(tmp_path, compile=False, val_size=0)
    more = resumed.fit(3, None, lambda metrics: None, resume_from=checkpoint.load(tmp_path / LAST))
    assert [m.epoch for m in more.history] == [1, 2, 3] and more.best_epoch == 3
    assert checkpoint.load(tmp_path / BEST)["epoch"] == 3
    assert resumed.test_best().images == 32


def test_a_resumed_fit_counts_the_run_seconds_on_from_its_last_pt(tmp_path):
    def timed_fit(epochs, resume_from=None) -> float:
        start = time.perf_counter()
        trainer = _trainer(tmp_path, compile=False)
        trainer.fit(epochs, None, lambda metrics: None, resume_from=resume_from)
        assert trainer.run_seconds() <= (resume_from or {}).get("run_seconds", 0) + time.perf_counter() - start
        return time.perf_counter() - start

    first_s = timed_fit(1)
    last = checkpoint.load(tmp_path / LAST)
    assert 0 < last["run_seconds"] <= first_s
    last["run_seconds"] = 1000.0  # the processes before it took long
    resumed_s = timed_fit(2, resume_from=last)
    assert 1000 < checkpoint.load(tmp_path / LAST)["run_seconds"] <= 1000 + resumed_s


@pytest.mark.parametrize("in_validation", [True, False])
def test_tta_in_validation_picks_the_views_validation_scores_while_the_test_scores_every_view(tmp_path, in_validation):
    trainer = _trainer(tmp_path, compile=False)
    trainer.tta, trainer.tta_in_validation = TTA(flip=True, translate=True), in_validation
    result = trainer.fit(1, None, lambda metrics: None)  # before it fits random labels with a constant

    def score(images, labels, tta):
        return evaluate(trainer.model, images, labels, trainer.normalize, 16, trainer.runtime, tta).loss

    splits = trainer.splits
    plain, views = (score(splits.val_images, splits.val_labels, tta) for tta in (TTA(), trainer.tta))
    assert plain != views
    assert result.history[-1].val.loss == (views if in_validation else plain)
    assert trainer.test_best().loss == score(splits.test_images, splits.test_labels, trainer.tta)  # best.pt's weights


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_a_resumed_fit_draws_the_dropout_masks_the_uninterrupted_fit_would(tmp_path, device):
    def next_mask() -> torch.Tensor:
        return torch.nn.functional.dropout(torch.ones(4096, device=device), 0.5)

    _trainer(tmp_path, compile=False, device=device).fit(1, None, lambda metrics: None)
    expected = next_mask()  # what dropout draws next where the fit goes on
    resumed = _trainer(tmp_path, compile=False, device=device)  # seeds the generators afresh, as a new process
    resumed.fit(1, None, lambda metrics: None, resume_from=checkpoint.load(tmp_path / LAST))
    assert torch.equal(next_mask(), expected)


def test_the_first_bias_trains_for_whiten_bias_epochs_then_stays_fixed_also_after_a_resume(tmp_path):
    trainer = _trainer(tmp_path, compile=False, batch_norm=False)
    trainer.whiten_bias_epochs = 1
    first, last = trainer.model[0], trainer.model[-1]
    start = first.bias.detach().clone()
    after = []  # (first bias, last layer's weights) after each epoch
    trainer.fit(2, None, lambda metrics: after.append((first.bias.detach().clone(), last.weight.detach().clone())))
    (bias_1, weights_1), (bias_2, weights_2) = after
    assert not torch.equal(bias_1, start) and torch.equal(bias_2, bias_1)
    assert not torch.equal(weights_2, weights_1)  # the rest trains on
    assert trainer.optimizer.state[first.bias]["step"] == 4  # Adam's steps: the first epoch's 4 only

    resumed = _trainer(tmp_path, compile=False, batch_norm=False)
    resumed.whiten_bias_epochs = 1
    resumed.fit(3, None, lambda metrics: None, resume_from=checkpoint.load(tmp_path / LAST))
    assert torch.equal(resumed.model[0].bias, bias_1) and not torch.equal(resumed.model[-1].weight, weights_2)


@pytest.mark.slow
def test_fixing_the_first_bias_does_not_recompile_the_compiled_model(tmp_path):
    from torch._dynamo.utils import counters

    trainer = _trainer(tmp_path, compile=True, batch_norm=False)
    trainer.whiten_bias_epochs = 1
    trainer.model.compile()
    graphs = []  # compiled so far, after each epoch: the warm-up compiles the training and evaluation graphs
    trainer.fit(2, None, lambda metrics: graphs.append(counters["stats"]["unique_graphs"]))
    assert graphs[0] > 0 and graphs[1] == graphs[0]


def test_checkpoints_written_in_the_background_are_the_bytes_a_direct_save_writes(tmp_path):
    trainer = _trainer(tmp_path, compile=False)
    trainer.run_seconds = lambda: 12.5  # the one value in last.pt that the time it is made changes
    result = trainer.fit(2, None, lambda metrics: None)
    checkpoint.save(tmp_path / "direct.pt", trainer._state(2, result))
    assert (tmp_path / LAST).read_bytes() == (tmp_path / "direct.pt").read_bytes()
    best = checkpoint.load(tmp_path / BEST)
    assert best["epoch"] == result.best_epoch and best["best_val_acc"] == result.best_val_acc


def test_checkpoint_every_n_writes_every_nth_epoch_and_the_last_and_trains_the_same(tmp_path, monkeypatch):
    saved = []  # (dir, file, epoch) of each checkpoint written
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, state: (saved.append((path.parent.name, path.name,
                                                                               state["epoch"])), save(path, state)))
    for every in (1, 3):
        trainer = _trainer(tmp_path / str(every), compile=False)
        trainer.checkpoint_every = every
        trainer.fit(7, None, lambda metrics: None)

    def written(every, name):
        return [epoch for run, file, epoch in saved if (run, file) == (str(every), name)]

    assert written(1, LAST) == [1, 2, 3, 4, 5, 6, 7]
    assert written(3, LAST) == [3, 6, 7]  # the last epoch too, though not a multiple of 3
    # best.pt: at each write, the newest best since the write before, if any
    bests = written(1, BEST)
    expected = [max(e for e in bests if before < e <= upto) for before, upto in ((0, 3), (3, 6), (6, 7))
                if any(before < e <= upto for e in bests)]
    assert written(3, BEST) == expected
    for name in (BEST, LAST):
        every_epoch, every_third = (checkpoint.load(tmp_path / str(every) / name) for every in (1, 3))
        assert every_epoch["epoch"] == every_third["epoch"]
        assert all(torch.equal(value, every_third["model"][key]) for key, value in every_epoch["model"].items())


@pytest.mark.parametrize("every", [1, 5])
def test_sigterm_while_an_epoch_is_reported_stops_the_fit_once_that_epoch_is_checkpointed(tmp_path, every):
    def interrupt(number, frame):  # as cifar.train handles SIGTERM
        raise KeyboardInterrupt(number)

    def report(metrics):
        if metrics.epoch == 2:
            signal.raise_signal(signal.SIGTERM)  # lands while the epoch's metrics go to MLflow
            reported.append(metrics.epoch)  # the report itself is not cut short

    previous = signal.signal(signal.SIGTERM, interrupt)
    reported = []
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer = _trainer(tmp_path, compile=False)
            trainer.checkpoint_every = every  # 5: epoch 2 is not due, but kept and written on the interrupt
            trainer.fit(5, None, report)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert reported == [2] and checkpoint.load(tmp_path / LAST)["epoch"] == 2


def test_train_images_are_spread_over_a_class_sorted_split_and_uncropped():
    labels = torch.arange(10).repeat_interleave(30)  # sorted by class, as a decoded copy may be
    images = (labels + 1).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 32, 32)  # each image its class + 1
    augment = Augmenter(crop_padding=2, pad_mode="zeros", flip=False)
    splits = Splits(augment.prepare(images), labels, images[:0], labels[:0], images[:5], labels[:5])
    sample = splits.train_images(augment.padding, 20)
    assert sample.shape == (20, 3, 32, 32)
    assert (sample == sample[:, :1, :1, :1]).all() and (sample > 0).all()  # none of the zero padding
    assert torch.bincount(sample[:, 0, 0, 0].long() - 1, minlength=10).tolist() == [2] * 10
