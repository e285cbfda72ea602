from __future__ import annotations

import hashlib

from cifar.versioning import dvc_data_hash


def test_a_directory_takes_the_hash_of_the_dvc_file_that_tracks_it_or_a_parent(tmp_path):
    (tmp_path / "data/raw/cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "data/raw.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  size: 10\n  nfiles: 2\n  path: raw\n")
    assert dvc_data_hash(tmp_path / "data/raw") == "0123abcd.dir"
    assert dvc_data_hash(tmp_path / "data/raw/cifar-10-batches-py") == "0123abcd.dir"
    assert dvc_data_hash(tmp_path / "data") is None  # nothing tracks data/ itself


def test_a_file_takes_the_md5_of_its_content_as_dvc_does(tmp_path):
    decoded = tmp_path / "cifar10.npz"
    decoded.write_bytes(b"x" * 3_000_000)
    assert dvc_data_hash(decoded) == hashlib.md5(b"x" * 3_000_000).hexdigest()
    decoded.write_bytes(b"changed")  # a new version of the file gets its own hash
    assert dvc_data_hash(decoded) == hashlib.md5(b"changed").hexdigest()
