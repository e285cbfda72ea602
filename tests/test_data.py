from __future__ import annotations

import os
import pickle
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar import data
from cifar.data import CLASSES, load_cifar10
from cifar.errors import DataError
from tests import fakedata
from tests.conftest import REAL_DATA, unlistable


def expected_official():
    train_labels = fakedata.balanced_labels(20, seed=0)
    test_labels = fakedata.balanced_labels(5, seed=2)
    return fakedata.images_for(train_labels, 1), train_labels, fakedata.images_for(test_labels, 3), test_labels


@pytest.mark.parametrize("source", ["official_dir", "official_archive"])
def test_official_layout_reads_the_exact_pixels_and_labels(source, request, tmp_path):
    loaded = load_cifar10(request.getfixturevalue(source), tmp_path / "cache", download=False)
    train_x, train_y, test_x, test_y = expected_official()
    np.testing.assert_array_equal(loaded.train_images, train_x)
    np.testing.assert_array_equal(loaded.train_labels, train_y)
    np.testing.assert_array_equal(loaded.test_images, test_x)
    np.testing.assert_array_equal(loaded.test_labels, test_y)


def test_image_folders_from_directory_and_archive_agree(folders_dir, folders_archive, tmp_path):
    from_dir = load_cifar10(folders_dir, tmp_path / "a", download=False)
    from_tar = load_cifar10(folders_archive, tmp_path / "b", download=False)
    assert from_dir.train_images.shape == (200, 32, 32, 3)
    assert from_dir.test_images.shape == (50, 32, 32, 3)
    assert from_dir.class_counts["train"] == {c: 20 for c in CLASSES}
    np.testing.assert_array_equal(from_dir.train_images, from_tar.train_images)
    np.testing.assert_array_equal(from_dir.test_labels, from_tar.test_labels)
    assert from_dir.content_hash == from_tar.content_hash


def test_image_folder_labels_follow_the_folder_names(folders_dir, tmp_path):
    loaded = load_cifar10(folders_dir, tmp_path / "cache", download=False)
    for label in range(len(CLASSES)):
        mean_colour = loaded.train_images[loaded.train_labels == label].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean_colour - fakedata.PALETTE[label]).max() < 25


def test_directory_holding_one_archive_reads_the_archive(folders_archive, tmp_path):
    loaded = load_cifar10(folders_archive.parent, tmp_path / "cache", download=False)
    assert loaded.train_images.shape[0] == 200


def test_cache_is_reused_and_mean_std_are_the_train_pixels(official_dir, tmp_path, monkeypatch):
    first = load_cifar10(official_dir, tmp_path / "cache", download=False)
    cache_files = list((tmp_path / "cache").iterdir())
    assert [f.name for f in cache_files] == [first.cache_file.name]  # no temp file left behind

    monkeypatch.setattr(data, "source_decoder", lambda source: pytest.fail("decoded again despite the cache"))
    second = load_cifar10(official_dir, tmp_path / "cache", download=False)
    np.testing.assert_array_equal(first.train_images, second.train_images)
    pixels = first.train_images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(second.mean, pixels.mean(axis=0))
    np.testing.assert_allclose(second.std, pixels.std(axis=0))


@pytest.mark.parametrize("layout", ["official_dir", "folders_dir"])
def test_a_cache_inside_the_data_folder_is_reused_until_the_data_changes(layout, request, tmp_path, monkeypatch):
    """data.path=data beside the default data.cache_dir=data/processed: the cache is not part of the source."""
    source = shutil.copytree(request.getfixturevalue(layout), tmp_path / "data", symlinks=True)
    cache = source / "processed"
    first = load_cifar10(source, cache, download=False)
    (source / "notes.txt").write_text("written beside the data")
    decodes = []
    real_source_decoder = data.source_decoder
    monkeypatch.setattr(data, "source_decoder", lambda src: decodes.append(src) or real_source_decoder(src))
    assert load_cifar10(source, cache, download=False).cache_file == first.cache_file and decodes == []
    read_file = next(p for p in sorted(source.rglob("*")) if p.name == "data_batch_1" or p.suffix == ".png")
    os.utime(read_file, ns=(0, 0))
    assert load_cifar10(source, cache, download=False).cache_file != first.cache_file and decodes == [source]


def test_a_changed_source_s_new_cache_replaces_its_old_one_only(official_dir, folders_dir, tmp_path):
    cache = tmp_path / "cache"
    source = shutil.copytree(official_dir, tmp_path / "data", symlinks=True)
    first = load_cifar10(source, cache, download=False)
    other = load_cifar10(folders_dir, cache, download=False)
    (cache / "cifar10-notacache.npz").write_bytes(b"not a zip file")
    (cache / "cifar10-cut.npz").write_bytes(other.cache_file.read_bytes()[:1000])  # a zip cut short
    os.utime(next(source.rglob("data_batch_1")), ns=(0, 0))
    changed = load_cifar10(source, cache, download=False)
    assert changed.cache_file != first.cache_file
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [changed.cache_file.name, other.cache_file.name, "cifar10-notacache.npz", "cifar10-cut.npz"])
    assert load_cifar10(folders_dir, cache, download=False).content_hash == other.content_hash


@pytest.mark.parametrize("damage", ["not a zip", "cut short"])
def test_a_corrupt_cache_is_decoded_again(damage, official_dir, tmp_path):
    first = load_cifar10(official_dir, tmp_path / "cache", download=False)
    cache_bytes = first.cache_file.read_bytes()
    first.cache_file.write_bytes(b"not a zip file" if damage == "not a zip" else cache_bytes[: len(cache_bytes) // 2])
    again = load_cifar10(official_dir, tmp_path / "cache", download=False)
    assert again.content_hash == first.content_hash


def test_the_training_set_size_is_read_from_the_cache_alone_and_none_where_there_is_no_readable_one(
        official_dir, tmp_path):
    cache = tmp_path / "cache"
    assert data.cached_training_images(official_dir, cache, download=False) is None  # not decoded yet
    decoded = load_cifar10(official_dir, cache, download=False)
    assert data.cached_training_images(official_dir, cache, download=False) == len(decoded.train_labels) == 200
    assert data.cached_training_images(decoded.cache_file, tmp_path / "unused", download=False) == 200  # a .npz given
    assert data.cached_training_images(tmp_path / "to-download", cache, download=True) is None
    with pytest.raises(DataError, match="No CIFAR-10 data in "):
        data.cached_training_images(tmp_path / "to-download", cache, download=False)
    decoded.cache_file.write_bytes(decoded.cache_file.read_bytes()[:1000])  # cut short: the run decodes again
    assert data.cached_training_images(official_dir, cache, download=False) is None


def test_a_failed_cache_write_leaves_no_file(official_dir, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(DataError, match=r"cannot write .*\.npz \(disk full\): free some disk space"):
        load_cifar10(official_dir, tmp_path / "cache", download=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_data_without_download_names_the_fix(tmp_path):
    with pytest.raises(DataError) as missing:
        load_cifar10(tmp_path / "nowhere", tmp_path / "cache", download=False)
    assert str(missing.value) == (f"No CIFAR-10 data in {tmp_path / 'nowhere'}: put cifar-10-python.tar.gz or "
                                  "train/<class>/ image folders there, set data.path to your copy, or set "
                                  "data.download=true")


def test_a_broken_link_as_the_data_path_is_named_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda root: pytest.fail("tried to download into a broken link"))
    (tmp_path / "data").symlink_to(tmp_path / "gone")
    said = f"data.path={tmp_path / 'data'} is a broken link (to {tmp_path / 'gone'}): point it at your copy"
    with pytest.raises(DataError, match=re.escape(said)):
        load_cifar10(tmp_path / "data", tmp_path / "cache", download=True)


def test_a_data_dir_that_cannot_be_listed_is_one_line_before_the_run_starts(tmp_path, monkeypatch):
    from cifar.data import check_data_path

    (tmp_path / "data").mkdir()
    unlistable(monkeypatch, tmp_path / "data")
    said = f"data.path={tmp_path / 'data'} cannot be read (Permission denied): fix its permissions, or point data.path"
    with pytest.raises(DataError, match=re.escape(said)):  # where a callback's PermissionError was a warning
        check_data_path(tmp_path / "data", download=True)
    with pytest.raises(DataError, match=re.escape(said)):  # where the task's was a traceback
        load_cifar10(tmp_path / "data", tmp_path / "cache", download=True)


def test_an_image_folder_that_cannot_be_listed_is_one_line(tmp_path, monkeypatch):
    fakedata.write_image_folders(tmp_path / "folders")
    locked = tmp_path / "folders" / "fake-cifar" / "train" / "cat"
    unlistable(monkeypatch, locked)
    with pytest.raises(DataError) as refused:  # where its images were left out without a word
        load_cifar10(tmp_path / "folders", tmp_path / "cache", download=False)
    assert str(refused.value) == f"{locked} cannot be read (Permission denied): fix its permissions, or remove it"


def test_missing_data_is_downloaded_with_torchvision(official_dir, tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:  # stands in for torchvision's downloader: writes the official layout
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            fakedata.write_official(Path(root))

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    loaded = load_cifar10(tmp_path / "raw", tmp_path / "cache", download=True)
    [(root, train, download)] = calls
    assert Path(root).parent == tmp_path / "raw" and (train, download) == (True, True)
    assert loaded.train_images.shape == (200, 32, 32, 3)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["cifar-10-batches-py"]  # no staging folder left


def test_an_interrupted_download_leaves_nothing_and_the_next_run_downloads_again(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:  # torchvision's downloader, interrupted in the middle of the archive the first time
        def __init__(self, root, train, download):
            calls.append(root)
            if len(calls) == 1:
                (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b half an archive")
                raise KeyboardInterrupt
            fakedata.write_official(Path(root))

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(tmp_path / "raw", tmp_path / "cache", download=True)
    assert not (tmp_path / "raw").exists()  # made for the download, and removed with it
    assert load_cifar10(tmp_path / "raw", tmp_path / "cache", download=True).train_images.shape == (200, 32, 32, 3)
    assert len(calls) == 2


def test_a_failed_download_says_where_to_put_the_data(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="download failed.*Name or service not known.*data.path"):
        load_cifar10(tmp_path / "typo" / "raw", tmp_path / "cache", download=True)
    assert list(tmp_path.iterdir()) == []  # typo/raw, made for the download, removed with it
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="download failed"):
        load_cifar10(tmp_path / "raw", tmp_path / "cache", download=True)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["notes.txt"]  # a folder of one's own stays as it was


def test_hidden_folders_and_files_are_not_read(official_dir, tmp_path):
    """Such as the staging folder of a download that was killed, or the ._ files macOS leaves."""
    source = shutil.copytree(official_dir, tmp_path / "raw")
    before = data.fingerprint(source)
    (source / "cifar-10-batches-py" / "._data_batch_1").write_bytes(b"resource fork")
    stale = source / ".download-x" / "cifar-10-batches-py"
    stale.mkdir(parents=True)
    (stale / "data_batch_1").write_bytes(b"cut short")
    assert data.fingerprint(source) == before  # the same cache
    assert load_cifar10(source, tmp_path / "cache", download=False).train_images.shape == (200, 32, 32, 3)
    shutil.rmtree(source / "cifar-10-batches-py")  # the stale staging folder alone is no data
    with pytest.raises(DataError, match="No CIFAR-10 data.*data.download=true"):
        load_cifar10(source, tmp_path / "cache", download=False)


def test_a_file_that_cannot_be_read_is_named(folders_dir, tmp_path):
    source = shutil.copytree(folders_dir, tmp_path / "raw", symlinks=True)
    broken = source / "fake-cifar/train/cat/9999.png"
    broken.symlink_to(tmp_path / "gone.png")  # a link whose file was moved
    with pytest.raises(DataError, match=f"^{broken} cannot be read \\(No such file or directory\\): fix or remove it$"):
        load_cifar10(source, tmp_path / "cache", download=False)


def test_a_zip_archive_of_image_folders_reads_as_the_folders(folders_dir, tmp_path):
    import zipfile

    archive = tmp_path / "cifar10.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        for path in sorted(folders_dir.rglob("*")):
            zip_file.write(path, path.relative_to(folders_dir).as_posix())  # folders too, as zip tools write them
        zip_file.writestr("__MACOSX/fake-cifar/train/cat/._0000.png", b"macOS metadata")
    from_zip = load_cifar10(archive, tmp_path / "cache", download=False)
    from_dir = load_cifar10(folders_dir, tmp_path / "cache0", download=False)
    np.testing.assert_array_equal(from_zip.train_images, from_dir.train_images)
    assert from_zip.content_hash == from_dir.content_hash
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated or not a zip archive"):
        load_cifar10(archive, tmp_path / "cache", download=False)


def test_truncated_archive_is_reported(official_archive, tmp_path):
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(official_archive.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated or not a tar archive"):
        load_cifar10(truncated, tmp_path / "cache", download=False)


def test_file_that_is_not_an_archive_is_reported(tmp_path):
    bogus = tmp_path / "data.tar.gz"
    bogus.write_text("hello")
    with pytest.raises(DataError, match="truncated or not a tar archive"):
        load_cifar10(bogus, tmp_path / "cache", download=False)


def test_pickle_of_the_wrong_shape_is_reported(official_dir, tmp_path):
    broken = tmp_path / "broken"
    fakedata.write_official(broken)
    with open(broken / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match=r"data_batch_3 has data of shape \(4, 100\)"):
        load_cifar10(broken, tmp_path / "cache", download=False)


def test_split_and_class_folders_are_read_whatever_their_case(folders_dir, tmp_path):
    root = tmp_path / "capitalised"
    for path in sorted(folders_dir.rglob("*.png")):
        split, cls = path.parent.parent.name, path.parent.name
        target = root / split.capitalize() / cls.upper() / path.name  # Train/AIRPLANE/0000.png
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    loaded = load_cifar10(root, tmp_path / "cache", download=False)
    expected = load_cifar10(folders_dir, tmp_path / "cache0", download=False)
    np.testing.assert_array_equal(loaded.train_labels, expected.train_labels)
    np.testing.assert_array_equal(loaded.test_images, expected.test_images)


def test_16_bit_grayscale_images_read_as_their_8_bit_pixels(folders_dir, tmp_path):
    for bits in (8, 16):
        for path in sorted(folders_dir.rglob("*.png")):
            gray = np.asarray(Image.open(path).convert("L"))
            target = tmp_path / f"gray{bits}" / path.relative_to(folders_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(gray if bits == 8 else gray.astype(np.uint16) * 257).save(target)
    gray8 = load_cifar10(tmp_path / "gray8", tmp_path / "cache8", download=False)
    gray16 = load_cifar10(tmp_path / "gray16", tmp_path / "cache16", download=False)
    assert Image.open(next((tmp_path / "gray16").rglob("*.png"))).mode.startswith("I;16")
    np.testing.assert_array_equal(gray16.train_images, gray8.train_images)
    np.testing.assert_array_equal(gray16.test_images, gray8.test_images)


def test_an_image_stored_sideways_reads_upright_as_its_exif_orientation_says(folders_dir, tmp_path):
    root = tmp_path / "sideways"
    shutil.copytree(folders_dir, root)
    turned = sorted(root.rglob("*.png"))[::7]
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the pixels are stored turned the other way
    for path in turned:
        Image.open(path).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    loaded = load_cifar10(root, tmp_path / "cache", download=False)
    expected = load_cifar10(folders_dir, tmp_path / "cache0", download=False)
    assert Image.open(turned[0]).tobytes() != Image.open(folders_dir / turned[0].relative_to(root)).tobytes()
    np.testing.assert_array_equal(loaded.train_images, expected.train_images)
    np.testing.assert_array_equal(loaded.test_images, expected.test_images)


def test_unknown_class_folder_is_reported(tmp_path):
    root = fakedata.write_image_folders(tmp_path / "src", train_per_class=1, test_per_class=1)
    (root / "fake-cifar" / "train" / "cats").mkdir()
    Image.new("RGB", (32, 32)).save(root / "fake-cifar" / "train" / "cats" / "x.png")
    with pytest.raises(DataError, match=r"unknown class folder\(s\) \['cats'\]"):
        load_cifar10(root, tmp_path / "cache", download=False)


def test_class_without_images_is_reported(tmp_path):
    root = fakedata.write_image_folders(tmp_path / "src", train_per_class=1, test_per_class=1)
    for image in (root / "fake-cifar" / "test" / "frog").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"test/ has no images of class\(es\) \['frog'\]"):
        load_cifar10(root, tmp_path / "cache", download=False)


def test_image_of_the_wrong_size_is_refused_and_grey_is_converted(tmp_path):
    root = fakedata.write_image_folders(tmp_path / "src", train_per_class=1, test_per_class=1)
    grey = root / "fake-cifar" / "train" / "cat" / "grey.png"
    Image.new("L", (32, 32), color=77).save(grey)
    loaded = load_cifar10(root, tmp_path / "cache", download=False)
    assert loaded.train_images.shape[0] == 11
    assert (loaded.train_images == 77).all(axis=(1, 2, 3)).sum() == 1

    Image.new("RGB", (64, 64)).save(root / "fake-cifar" / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="big.png is 64x64: CIFAR-10 images must be 32x32"):
        load_cifar10(root, tmp_path / "cache2", download=False)


def test_folder_without_any_layout_is_reported(tmp_path):
    (tmp_path / "src" / "misc").mkdir(parents=True)
    (tmp_path / "src" / "misc" / "notes.txt").write_text("x")
    with tarfile.open(tmp_path / "src.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="src")
    with pytest.raises(DataError, match="holds no CIFAR-10 layout"):
        load_cifar10(tmp_path / "src.tar.gz", tmp_path / "cache", download=False)


@pytest.mark.slow
def test_real_jpeg_copy_has_the_standard_split(real_data_cache):
    loaded = load_cifar10(REAL_DATA, real_data_cache, download=False)
    assert loaded.train_images.shape == (50000, 32, 32, 3)
    assert loaded.test_images.shape == (10000, 32, 32, 3)
    assert loaded.class_counts == {"train": {c: 5000 for c in CLASSES}, "test": {c: 1000 for c in CLASSES}}
    # Published CIFAR-10 channel means; the JPEG copy is within a few thousandths.
    np.testing.assert_allclose(loaded.mean, (0.4914, 0.4822, 0.4465), atol=0.005)


def test_prepare_writes_the_decoded_npz_and_stats_that_training_reads(official_dir, tmp_path, capsys):
    import json

    from cifar import prepare

    assert prepare.main([str(official_dir), str(tmp_path / "processed")]) == 0
    decoded = load_cifar10(tmp_path / "processed/cifar10.npz", tmp_path / "unused-cache", download=False)
    direct = load_cifar10(official_dir, tmp_path / "cache", download=False)
    assert np.array_equal(decoded.train_images, direct.train_images)
    assert np.array_equal(decoded.test_labels, direct.test_labels)
    assert not (tmp_path / "unused-cache").exists()  # a decoded .npz is read as it is
    stats = json.loads((tmp_path / "processed/stats.json").read_text())
    assert stats == json.loads(json.dumps(direct.stats))
    nowhere = tmp_path / "nowhere"  # the stage's RAW argument: no data.path nor data.download to set
    assert prepare.main([str(nowhere), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"cifar.prepare: error: No CIFAR-10 data in {nowhere}: put "
                                       "cifar-10-python.tar.gz or train/<class>/ image folders there, or set RAW to "
                                       "your copy\n")
    assert not (tmp_path / "out").exists()
    not_an_archive = tmp_path / "data.tar.gz"
    not_an_archive.write_text("hello")
    assert prepare.main([str(not_an_archive), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"cifar.prepare: error: {not_an_archive} is truncated or not a tar archive "
                                       "(file could not be opened successfully): re-download or re-create it\n")
    a_file = tmp_path / "processed/stats.json"  # an output dir that cannot be made
    assert prepare.main([str(official_dir), str(a_file / "out")]) == 2
    assert capsys.readouterr().err == (f"cifar.prepare: error: cannot write {a_file / 'out/cifar10.npz'} (Not a "
                                       "directory): free some disk space or give a writable output directory\n")


def test_a_cache_that_cannot_be_written_names_data_cache_dir(official_dir, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(DataError, match=r"cannot write .*a-file/cache/cifar10-\w+\.npz \(Not a directory\): free some "
                                        "disk space or set data.cache_dir to a writable directory"):
        load_cifar10(official_dir, a_file / "cache", download=False)


def test_a_missing_or_foreign_npz_source_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist: run `dvc repro prepare`"):
        load_cifar10(tmp_path / "cifar10.npz", tmp_path / "cache", download=False)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="is not a decoded CIFAR-10 .npz"):
        load_cifar10(tmp_path / "other.npz", tmp_path / "cache", download=False)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "other.npz").read_bytes()[:100])
    with pytest.raises(DataError, match="is not a decoded CIFAR-10 .npz"):
        load_cifar10(tmp_path / "cut.npz", tmp_path / "cache", download=False)
