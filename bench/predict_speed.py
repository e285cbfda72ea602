"""``cifar.predict`` on a folder of image files against the run's own evaluation of the test set.

Writes the test images as files (PNG by default) into a temp folder, then times, interleaved:
- the test-set evaluation of a run (``cifar.engine.evaluate``: the decoded images already on the
  device, the device's evaluation batch size), and
- ``cifar.predict.classify`` on the folder (decode, resize check, normalise, the same model),
  in-process, model loaded;
and, once, the whole command (``python -m cifar.predict FOLDER --model ... --json``), start-up included.
By default it takes what the DVC pipeline left (``uv run dvc repro`` first).

    uv run python bench/predict_speed.py [--checkpoint results/train/best.pt] [--images 10000] [--format jpg]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cifar import inference, predict  # noqa: E402
from cifar.batches import Normalizer, to_tensors  # noqa: E402
from cifar.data import load_cifar10  # noqa: E402
from cifar.device import default_eval_batch_size, make_runtime  # noqa: E402
from cifar.engine import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "results/train/best.pt")
    parser.add_argument("--data", type=Path, default=REPO / "data/processed/cifar10.npz")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for path in (args.checkpoint, args.data):
        if not path.exists():
            sys.exit(f"{path} is missing: run `uv run dvc repro` (or pass --checkpoint/--data)")
    data = load_cifar10(args.data, REPO / "data/processed", download=False)
    images, labels = data.test_images[: args.images], data.test_labels[: args.images]
    runtime = make_runtime("cpu", amp=None, channels_last=None, compile=False, threads=None)
    classifier = inference.from_checkpoint(args.checkpoint)
    if runtime.channels_last:
        classifier = classifier.to(memory_format=torch.channels_last)
    model = classifier.model.eval()  # what a run evaluates; the TTA setting is the checkpoint's in both
    x, y = to_tensors(images, labels, runtime.device)
    normalize = Normalizer.from_stats(data.mean, data.std, runtime.device, runtime.channels_last)
    batch_size = default_eval_batch_size(runtime.device)

    with tempfile.TemporaryDirectory() as folder:
        for i, image in enumerate(images):
            Image.fromarray(image).save(Path(folder) / f"{i:05d}.{args.format}")
        files, _ = predict.image_files([folder])
        times: dict[str, list[float]] = {"evaluate": [], "classify": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate(model, x, y, normalize, batch_size, runtime, classifier.tta)
            times["evaluate"].append(time.perf_counter() - start)
            start = time.perf_counter()
            predictions = list(predict.classify(classifier, files, batch_size, 1, runtime.device))
            times["classify"].append(time.perf_counter() - start)
        assert len(predictions) == len(files)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cifar.predict", folder, "--model", str(args.checkpoint), "--json"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        command = time.perf_counter() - start

    evaluate_s, classify_s = (statistics.median(times[k]) for k in ("evaluate", "classify"))
    print(f"{len(files)} {args.format.upper()} files, {args.checkpoint} ({classifier.tta}), "
          f"batches of {batch_size}, {torch.get_num_threads()} threads; "
          f"medians of {args.repeats}:")
    print("| | seconds | vs evaluate |\n|---|---:|---:|")
    print(f"| test-set evaluation in a run | {evaluate_s:.2f} | 1.00x |")
    print(f"| cifar.predict.classify on the folder | {classify_s:.2f} | {classify_s / evaluate_s:.2f}x |")
    print(f"| python -m cifar.predict (once, start-up included) | {command:.2f} | {command / evaluate_s:.2f}x |")


if __name__ == "__main__":
    main()
