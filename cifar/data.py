"""Read CIFAR-10 from any supported source and keep a decoded uint8 cache of it.

Sources: a directory or a ``.tar.gz``/``.tar``/``.zip`` archive holding either the official python
batches (``cifar-10-batches-py/``) or image folders (``train/<class>/*``, ``test/<class>/*``,
under any common top folder). The first run decodes the source once into
``<cache_dir>/cifar10-<fingerprint>.npz``; later runs load that file. When the source changes, its
new cache replaces the old one. A decoded ``.npz`` (such a cache, or the DVC pipeline's
``data/processed/cifar10.npz``) is a source too.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import os
import pickle
import re
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Callable, Iterator

import numpy as np

from cifar.errors import ConfigError, DataError, first_line, os_reason
from cifar.files import atomic_write, first_missing, one_process_at_a_time, remove_made

log = logging.getLogger(__name__)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OFFICIAL_ARCHIVE = "cifar-10-python.tar.gz"
OFFICIAL_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CACHE_FORMAT = 1
UNREADABLE_CACHE = (OSError, ValueError, KeyError, zipfile.BadZipFile)  # what np.load of a damaged .npz raises
TEST_SUBSET_SEED = 0  # the test subset of data.test_limit: the same images whatever the run's seed


@dataclass
class Cifar10:
    """CIFAR-10 decoded: images as (N, 32, 32, 3) uint8 arrays, labels as int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    content_hash: str
    cache_file: Path

    @classmethod
    def from_cache(cls, arrays, meta: dict, cache_file: Path) -> "Cifar10":
        """Build from the cache's four arrays (by name) and its metadata."""
        return cls(
            train_images=arrays["train_images"],
            train_labels=arrays["train_labels"],
            test_images=arrays["test_images"],
            test_labels=arrays["test_labels"],
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            content_hash=meta["content_hash"],
            cache_file=cache_file,
        )

    @property
    def class_counts(self) -> dict[str, dict[str, int]]:
        return {
            split: dict(zip(CLASSES, np.bincount(labels, minlength=len(CLASSES)).tolist()))
            for split, labels in (("train", self.train_labels), ("test", self.test_labels))
        }

    @property
    def stats(self) -> dict:
        """What a run records about its data: content hash, per-channel mean/std, class counts."""
        return {"content_hash": self.content_hash, "mean": list(self.mean), "std": list(self.std),
                "class_counts": self.class_counts}


def load_cifar10(path: str | os.PathLike, cache_dir: str | os.PathLike, download: bool,
                 setting: str = "data.path") -> Cifar10:
    """Return CIFAR-10 from ``path``, decoding it into the cache on first use; ``setting`` is the option that gave
    ``path``, which errors name."""
    if Path(path).suffix == ".npz":
        return read_decoded(Path(path), setting)
    source = locate_source(Path(path), download, setting)
    cache_file = cache_file_for(source, cache_dir)
    if (cached := _cached(cache_file)) is not None:
        return cached
    with one_process_at_a_time(cache_file):  # runs started at once decode the source once
        if (cached := _cached(cache_file, quiet=True)) is not None:
            return cached  # decoded by another run while this one waited
        decode = source_decoder(source)  # a source without a CIFAR-10 layout is refused before the line below
        log.info("Decoding %s into %s (once per source)", source, cache_file)
        decoded = _write_cache(cache_file, *decode(), source=source,
                               fix="free some disk space or set data.cache_dir to a writable directory")
        _remove_earlier_caches(source, keep=cache_file)
    return decoded


def _cached(cache_file: Path, quiet: bool = False) -> Cifar10 | None:
    """The data in ``cache_file``, None where there is none or it cannot be read (said once, unless ``quiet``)."""
    if not cache_file.exists():
        return None
    try:
        return _read_cache(cache_file)
    except UNREADABLE_CACHE as err:
        if not quiet:
            log.warning("Cache %s is unreadable (%s); decoding the source again", cache_file, err)
        return None


def _remove_earlier_caches(source: Path, keep: Path) -> None:
    """Delete the caches in ``keep``'s folder that were decoded from ``source`` before it changed."""
    source_path = str(source.resolve())  # as _write_cache records it
    for cache_file in sorted(keep.parent.glob("cifar10-*.npz")):
        if cache_file == keep:
            continue
        try:
            with np.load(cache_file) as npz:
                decoded_from = json.loads(str(npz["meta"])).get("source")
            if decoded_from == source_path:
                cache_file.unlink()
                log.info("Removed %s, the cache of an earlier version of %s", cache_file, source)
        except UNREADABLE_CACHE:  # not a cache, or one that another process just removed
            continue


# --- finding the source ---------------------------------------------------------------------


def check_data_path(path: Path, download: bool) -> Path | None:
    """Refuse (DataError) a ``data.path`` with no data that a run can read or download, as :func:`load_cifar10` would:
    from the file system alone, before a run imports torch and builds its model (seconds). Returns what the run will
    read: the decoded file or the source, None where it is to be downloaded."""
    if path.suffix == ".npz":
        if not path.exists():
            raise _no_decoded(path, "data.path")
        return path
    return find_source(path, download)


def cached_training_images(path: Path, cache_dir: Path, download: bool) -> int | None:
    """How many training images the data at ``path`` holds, from the labels of its decoded cache alone (no image is
    read: a run's or sweep's split is checked before it imports torch); None where it has no readable cache yet.
    A ``path`` with no data is refused first (:func:`check_data_path`)."""
    if (found := check_data_path(path, download)) is None:
        return None  # to download
    cache_file = found if found.suffix == ".npz" else cache_file_for(found, cache_dir)
    try:
        with np.load(cache_file) as npz:
            return len(npz["train_labels"])
    except UNREADABLE_CACHE:  # none (FileNotFoundError), or damaged: the run decodes the source again
        return None


def locate_source(path: Path, download: bool, setting: str = "data.path") -> Path:
    """Return the directory or archive to read, downloading the official archive if allowed; ``setting`` is the
    option that gave ``path``, which errors name."""
    if (found := find_source(path, download, setting)) is not None:
        return found
    _download(path)
    return path


def find_source(path: Path, download: bool, setting: str = "data.path") -> Path | None:
    """The directory or archive to read at ``path``; None where there is none and ``download`` allows downloading
    the official archive there. A DataError where ``path`` cannot be read."""
    if path.is_symlink() and not path.exists():
        raise DataError(f"{setting}={path} is a broken link (to {os.readlink(path)}): point it at your copy of the "
                        "data")
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise DataError(
                f"{setting}={path} is a file but not a .tar.gz/.tar/.zip archive: point it at a directory or archive"
            )
        return path
    if path.is_dir():
        try:
            found = _find_in_directory(path, setting)
        except OSError as err:  # no permission to list it, a failing disk
            raise DataError(f"{setting}={path} cannot be read ({os_reason(err)}): fix its permissions, or point "
                            f"{setting} at a readable copy") from err
        if found is not None:
            return found
    if path.name.endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{setting}={path} does not exist: check the path, or set {setting} to a directory")
    if not download:
        layouts = f"{OFFICIAL_ARCHIVE} or train/<class>/ image folders"
        if setting == "--data":  # cifar.evaluate's, which also scores images labelled by their folders
            layouts = f"{OFFICIAL_ARCHIVE}, train/<class>/ image folders or labelled images in <class>/ folders"
        fixes = [f"put {layouts} there", f"set {setting} to your copy"]
        if setting == "data.path":
            fixes.append("set data.download=true")  # a run's setting
        raise DataError(f"No CIFAR-10 data in {path}: {', '.join(fixes[:-1])}, or {fixes[-1]}")
    return None


def _find_in_directory(path: Path, setting: str) -> Path | None:
    """The directory itself if it holds a readable layout, else an archive inside it."""
    if _looks_like_layout(path):
        return path
    archives = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))
    preferred = [p for p in archives if p.name == OFFICIAL_ARCHIVE]
    if preferred or len(archives) == 1:
        return (preferred or archives)[0]
    if archives:
        names = ", ".join(p.name for p in archives)
        raise DataError(f"{path} holds several archives ({names}): set {setting} to one of them")
    return None


def _looks_like_layout(path: Path) -> bool:
    """Cheap probe: the official batches or a train/ folder at the top or one folder down."""
    for top in (path, *(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))):
        if (top / TRAIN_BATCHES[0]).is_file() or (top / OFFICIAL_DIR / TRAIN_BATCHES[0]).is_file():
            return True
        if any(p.name.lower() == "train" and p.is_dir() for p in top.iterdir()):  # Train/ too
            return True
    return False


def _download(root: Path) -> None:
    """Download and extract the official archive with torchvision, in a staging folder inside ``root``
    whose files are moved into place once complete: torchvision writes straight to the archive's
    name, so an interrupted download would leave a truncated archive that later runs would read."""
    from torchvision.datasets import CIFAR10

    log.info("Downloading CIFAR-10 into %s", root)
    made = first_missing(root)  # removed again where the download fails: a data.path mistyped leaves no folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as staging:
            CIFAR10(root=staging, train=True, download=True)
            for downloaded in sorted(Path(staging).iterdir()):  # the archive and the folder it extracts to
                downloaded.rename(root / downloaded.name)
    except BaseException as err:  # network errors come in many types: report any of them the same way
        remove_made(root, made)
        if not isinstance(err, Exception):  # Ctrl-C
            raise
        raise DataError(
            f"No CIFAR-10 data in {root} and the download failed ({type(err).__name__}: {err}). "
            f"Put {OFFICIAL_ARCHIVE} or train/<class>/ image folders there, or set data.path to your copy"
        ) from err


def cache_file_for(source: Path, cache_dir: str | os.PathLike) -> Path:
    """The file in ``cache_dir`` that ``source``, as it is now, is decoded into."""
    return Path(cache_dir) / f"cifar10-{fingerprint(source)}.npz"


def fingerprint(source: Path) -> str:
    """A hash of the names, sizes and modification times (cheap: no reads) of the files that the
    decode reads: other files beside the data, such as a cache folder inside ``data.path``, leave it
    as it is."""
    digest = hashlib.sha256(f"cifar10-cache-v{CACHE_FORMAT}".encode())
    if source.is_file():
        files = [(source.name, str(source))]
    else:  # paths as strings: pathlib's objects took 1.5 of the 2 s that 60,000 image files took
        files = [(name, os.path.join(source, name)) for name in _layout_files(_DirectoryTree(source).names)]
    for name, file in sorted(files):
        if (stat := _stat_of_file(file)) is not None:  # a broken link is named when the decode reads it
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _stat_of_file(path: str) -> os.stat_result | None:
    """``os.stat(path)`` where ``path`` is a regular file (or a link to one), None where it is not one or is a
    broken link, as ``Path.is_file`` says."""
    try:
        stat = os.stat(path)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return None
        raise
    return stat if S_ISREG(stat.st_mode) else None


def visible_files(root: Path, unlisted: Callable[[OSError], None] | None = None) -> list[Path]:
    """The files under ``root`` but hidden ones and those in hidden folders, such as the staging folder
    of a download that was killed (``_download``) or the ``._`` files that macOS leaves beside images. A folder
    that cannot be listed is a DataError, or is given to ``unlisted``: ``os.walk`` left its files out unsaid."""
    return [root / name for name in visible_names(root, unlisted)]


def visible_names(root: Path, unlisted: Callable[[OSError], None] | None = None) -> list[str]:
    """:func:`visible_files`, as their paths relative to ``root`` written with ``/``."""
    names = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted or _refuse_unlisted):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        folder = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if folder == "." else f"{folder}/"
        names += [prefix + name for name in filenames if not name.startswith(".")]
    return names


def _refuse_unlisted(err: OSError) -> None:
    raise DataError(f"{err.filename} cannot be read ({os_reason(err)}): fix its permissions, or remove it") from err


# --- reading a source -----------------------------------------------------------------------


class _DirectoryTree:
    def __init__(self, root: Path):
        self.root = root
        self.names = visible_names(root)

    def read_many(self, names: list[str]) -> Iterator[bytes]:
        for name in names:
            try:
                yield (self.root / name).read_bytes()
            except OSError as err:  # a broken link, no permission, a failing disk
                raise DataError(f"{self.root / name} cannot be read ({os_reason(err)}): fix or remove it") from err


class _ArchiveTree:
    """All regular files of a tar or zip archive, read into memory in one pass (CIFAR-10 is < 200 MB)."""

    def __init__(self, archive: Path):
        kind = "zip" if archive.name.endswith(".zip") else "tar"
        try:
            if kind == "zip":
                with zipfile.ZipFile(archive) as zip_file:
                    self.files = {i.filename: zip_file.read(i) for i in zip_file.infolist() if not i.is_dir()}
            else:
                with tarfile.open(archive, "r:*") as tar:
                    self.files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
            reason = first_line(err).rstrip(":")  # tarfile's own goes on with a line per compression it tried
            raise DataError(f"{archive} is truncated or not a {kind} archive ({reason}): re-download or re-create "
                            "it") from err
        self.names = list(self.files)

    def read_many(self, names: list[str]) -> Iterator[bytes]:
        return (self.files[name] for name in names)


def unpack(archive: Path, into: Path) -> None:
    """Write ``archive``'s files under ``into``, but those whose names would leave it (absolute, or with ``..``) and
    the resource forks of macOS's ``__MACOSX/``; a DataError where it cannot be read."""
    for name, content in _ArchiveTree(archive).files.items():
        parts = PurePosixPath(name).parts
        if not parts or parts[0] in ("/", "__MACOSX") or ".." in parts:
            continue
        path = into.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


class NoLayoutError(DataError):
    """A source that holds neither CIFAR-10 layout."""


Decoded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_images, train_labels, test_images, test_labels


def read_source(source: Path) -> Decoded:
    """Decode a source into (train_images, train_labels, test_images, test_labels)."""
    return source_decoder(source)()


def source_decoder(source: Path) -> Callable[[], Decoded]:
    """What decodes ``source``, once its layout is found from its file names (an archive's files are read into
    memory); a NoLayoutError where it holds neither CIFAR-10 layout."""
    tree = _ArchiveTree(source) if source.is_file() else _DirectoryTree(source)
    official = _official_members(tree.names)
    if official:
        return functools.partial(_read_official, tree, official)
    images = _image_members(tree.names)
    if images:
        return functools.partial(_read_image_folders, tree, images, source)
    raise NoLayoutError(
        f"{source} holds no CIFAR-10 layout: expected {OFFICIAL_DIR}/data_batch_1..5 and test_batch, "
        "or train/<class>/ and test/<class>/ image folders"
    )


def _official_members(names: list[str]) -> dict[str, str] | None:
    """Map each official batch name to its path in the tree, if all six are present."""
    by_base = {}
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base in TRAIN_BATCHES + (TEST_BATCH,):
            by_base.setdefault(base, name)
    return by_base if len(by_base) == 6 else None


def _layout_files(names: list[str]) -> list[str]:
    """Those of a tree's files that its decode reads (the official batches, else the image folders'
    images); all of them where the tree holds neither."""
    official = _official_members(names)
    if official:
        return list(official.values())
    images = _image_members(names)
    return [path for files in images.values() for path, _ in files] if images else names


def _read_official(tree, members: dict[str, str]):
    order = list(TRAIN_BATCHES) + [TEST_BATCH]
    batches = dict(zip(order, tree.read_many([members[b] for b in order])))
    train = [_unpickle_batch(members[b], batches[b]) for b in TRAIN_BATCHES]
    test = _unpickle_batch(members[TEST_BATCH], batches[TEST_BATCH])
    return (
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        *test,
    )


def _unpickle_batch(name: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # any unpickling failure means the same thing to the user
        raise DataError(f"{name} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{name} has data of shape {data.shape} and {len(labels)} labels: "
            "expected (N, 3072) uint8 rows and N labels, as in the official CIFAR-10 batches"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{name} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


_SPLIT_CLASS_FILE = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$", re.IGNORECASE)  # Train/Cat/ too


def _image_members(names: list[str]) -> dict[str, list[tuple[str, str]]] | None:
    """Group image files by split as (path, class name in lower case), sorted by path; None if no train/ images."""
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for name in names:
        match = _SPLIT_CLASS_FILE.search(name)
        if match and match.group(3).lower().endswith(IMAGE_SUFFIXES) and not match.group(3).startswith("."):
            splits[match.group(1).lower()].append((name, match.group(2).lower()))
    if not splits["train"]:
        return None
    return {split: sorted(files) for split, files in splits.items()}


def _read_image_folders(tree, members: dict[str, list[tuple[str, str]]], source: Path):
    out = []
    for split in ("train", "test"):
        files = members[split]
        classes = {cls for _, cls in files}
        unknown = sorted(classes - set(CLASSES))
        if unknown:
            raise DataError(
                f"{source}: unknown class folder(s) {unknown} in {split}/: "
                f"expected the CIFAR-10 classes {list(CLASSES)}"
            )
        missing = [cls for cls in CLASSES if cls not in classes]
        if missing:
            raise DataError(
                f"{source}: {split}/ has no images of class(es) {missing}: every CIFAR-10 class needs images"
            )
        paths = [path for path, _ in files]
        labels = np.array([CLASSES.index(cls) for _, cls in files], dtype=np.int64)
        out += [_decode_images(paths, tree.read_many(paths)), labels]
    return tuple(out)


def _decode_images(paths: list[str], blobs: Iterator[bytes]) -> np.ndarray:
    """Decode image files to (N, 32, 32, 3) uint8, converting other colour modes to RGB.

    Serial on purpose: a thread pool measured 2x slower here (Pillow holds the GIL for such
    small images), and the decode runs once per source.
    """
    from PIL import Image, UnidentifiedImageError

    images = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    with corrupt_exif_ignored():
        for i, (path, blob) in enumerate(zip(paths, blobs)):
            try:
                with Image.open(io.BytesIO(blob)) as image:
                    if image.size != (32, 32):
                        raise DataError(f"{path} is {image.size[0]}x{image.size[1]}: CIFAR-10 images must be 32x32")
                    images[i] = np.asarray(upright_rgb(image))
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"{path} is not a readable image ({err}): remove or replace it") from err
    return images


@contextmanager
def corrupt_exif_ignored() -> Iterator[None]:
    """Read images whose EXIF block is corrupt as if they had none. Pillow reads them so, but warns "Corrupt
    EXIF data" on stderr, with a line of its own source and no file name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
        yield


def upright_rgb(image):
    """A Pillow image as 8-bit RGB, turned as its EXIF orientation says: the way viewers show it (a camera
    stores a portrait photo sideways and says so in that tag). A 16-bit image (grayscale PNG or TIFF) keeps
    its high byte, where Pillow's own conversion clips each value at 255 and so turns all but the darkest
    pixels white."""
    from PIL import Image, ImageOps

    ImageOps.exif_transpose(image, in_place=True)
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


# --- splits ---------------------------------------------------------------------------------


def split_indices(n_train: int, n_test: int, cfg_data, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: a seeded validation hold-out of ``data.val_size`` from train, then
    ``data.limit`` and ``data.test_limit``; a split :func:`check_split` refuses raises ConfigError.

    The test subset is drawn with a fixed seed, so runs with the same ``test_limit`` score the same images.
    """
    check_split(cfg_data, n_train)
    val_size, test_limit = cfg_data.val_size, cfg_data.test_limit
    order = np.random.default_rng(seed).permutation(n_train)
    val_idx, train_idx = np.sort(order[:val_size]), np.sort(order[val_size:][:cfg_data.limit])
    test_idx = np.arange(n_test)
    if test_limit is not None and test_limit < n_test:
        test_idx = np.sort(np.random.default_rng(TEST_SUBSET_SEED).permutation(n_test)[:test_limit])
    return train_idx, val_idx, test_idx


def check_split(cfg_data, n_train: int) -> None:
    """Refuse a split of ``n_train`` training images that holds every one of them out for validation, or
    leaves fewer to train on than a batch (ConfigError)."""
    val_size, limit, batch_size = cfg_data.val_size, cfg_data.limit, cfg_data.batch_size
    if val_size >= n_train:
        raise ConfigError(f"data.val_size={val_size} must be smaller than the training set ({n_train} images): "
                          "lower data.val_size")
    held_out = n_train - val_size
    limited = limit is not None and limit < held_out
    trained = limit if limited else held_out
    if trained < batch_size:
        raise ConfigError(f"data.batch_size={batch_size} is larger than the {trained} training images: "
                          f"lower data.batch_size or {'raise data.limit' if limited else 'data.val_size'}")


# --- the cache ------------------------------------------------------------------------------


def read_decoded(path: Path, setting: str = "data.path") -> Cifar10:
    """A decoded ``.npz`` given as the source; a one-line DataError if it is missing or not one."""
    try:
        return _read_cache(path)
    except FileNotFoundError:
        raise _no_decoded(path, setting) from None
    except UNREADABLE_CACHE as err:
        raise DataError(
            f"{setting}={path} is not a decoded CIFAR-10 .npz ({err}): point {setting} at the raw data"
        ) from err


def _no_decoded(path: Path, setting: str) -> DataError:
    return DataError(f"{setting}={path} does not exist: run `dvc repro prepare` or point {setting} at the raw data")


def write_decoded(path: Path, source: Path, setting: str) -> Cifar10:
    """Decode ``source`` (given by ``setting``, to name in errors) into the ``.npz`` at ``path`` (written to a temp
    file, then renamed)."""
    return _write_cache(path, *read_source(locate_source(source, download=False, setting=setting)),
                        fix="free some disk space or give a writable output directory")


def _write_cache(cache_file: Path, train_x, train_y, test_x, test_y, fix: str, source: Path | None = None) -> Cifar10:
    """Write the decoded arrays and their statistics (and the absolute path of the ``source`` of a
    cache, by which its next version finds it) to a temp file, then rename it into place; a file that
    cannot be written is a DataError, with ``fix``."""
    pixels = train_x.reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    meta = {"format": CACHE_FORMAT, "mean": mean.tolist(), "std": std.tolist(),
            "content_hash": content_hash(train_x, train_y, test_x, test_y)}
    if source is not None:
        meta["source"] = str(source.resolve())
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    try:
        atomic_write(cache_file, lambda f: np.savez(f, **arrays, meta=json.dumps(meta)))
    except OSError as err:  # not a directory, no permission, disk full
        raise DataError(f"cannot write {cache_file} ({os_reason(err)}): {fix}") from err
    return Cifar10.from_cache(arrays, meta, cache_file)


def content_hash(*arrays: np.ndarray) -> str:
    """The sha256 of the arrays' bytes, in order: what the images and labels are, whatever file held them."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _read_cache(cache_file: Path) -> Cifar10:
    with np.load(cache_file) as npz:
        meta = json.loads(str(npz["meta"]))
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache format {meta.get('format')} is not {CACHE_FORMAT}")
        return Cifar10.from_cache(npz, meta, cache_file)


if __name__ == "__main__":  # python -m cifar.data: a summary of the prepared data
    from cifar.data_summary import main
    from cifar.errors import exit_with_status_of

    exit_with_status_of(main)
