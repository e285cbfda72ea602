"""Tiny CIFAR-10 copies in the official layouts, with images a model can learn (class colours)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cifar.data import CLASSES

PALETTE = np.random.default_rng(1234).integers(40, 216, size=(len(CLASSES), 3))


def images_for(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 32, 32, 3) uint8: each image its class colour plus noise and a bright square."""
    rng = np.random.default_rng(seed)
    images = PALETTE[labels][:, None, None, :] + rng.integers(-30, 31, size=(len(labels), 32, 32, 3))
    for i, label in enumerate(labels):
        y, x = 4 + 2 * label, 20 - 2 * label
        images[i, y : y + 6, x : x + 6] = 255
    return np.clip(images, 0, 255).astype(np.uint8)


def balanced_labels(per_class: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(CLASSES)), per_class))


def write_official(root: Path, train_per_class: int = 20, test_per_class: int = 5) -> Path:
    """``root/cifar-10-batches-py/`` with five train batches, test_batch and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_labels = balanced_labels(train_per_class, seed=0)
    train_images = images_for(train_labels, seed=1)
    for i, (xs, ys) in enumerate(zip(np.array_split(train_images, 5), np.array_split(train_labels, 5)), start=1):
        _pickle_batch(folder / f"data_batch_{i}", xs, ys)
    test_labels = balanced_labels(test_per_class, seed=2)
    _pickle_batch(folder / "test_batch", images_for(test_labels, seed=3), test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    return root


def _pickle_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1), b"labels": labels.tolist()}
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def write_image_folders(
    root: Path, train_per_class: int = 20, test_per_class: int = 5, top: str = "fake-cifar", suffix: str = ".png"
) -> Path:
    """``root/<top>/{train,test}/<class>/NNNN.png``, as in image-folder exports of CIFAR-10."""
    for split, per_class, seed in (("train", train_per_class, 0), ("test", test_per_class, 2)):
        labels = balanced_labels(per_class, seed)
        for i, (image, label) in enumerate(zip(images_for(labels, seed + 1), labels)):
            folder = root / top / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}{suffix}")
    return root


def tar_gz(folder: Path, archive: Path) -> Path:
    """Pack the contents of ``folder`` into ``archive`` (members relative to ``folder``)."""
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return archive
