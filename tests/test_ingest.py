"""Ingest against moto S3 (through the provider's S3Hook) and against the local lake, same code path.

The interruption is a test double of the *storage* only: it forwards every call to the real one
and raises after k uploads, like a worker killed mid-batch; ingest's own logic runs unchanged.
"""
from airflow_fixtures import BUCKET, make_landing

import json
from pathlib import Path

import pytest

from fruits import layout
from fruits.ingest import ingest, skip_reason
from fruits.storage import LocalStorage, S3Storage

@pytest.fixture(params=["s3", "local"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "lake")
    request.getfixturevalue("aws")  # moto S3; the calls made are checked against the IAM policy
    return S3Storage(BUCKET, "aws_default")


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    expected = make_landing(root)
    return root, expected


class CrashingStorage:
    """Forwards to the real storage; raises after `uploads` successful uploads."""

    def __init__(self, inner, uploads: int):
        self.inner, self.left = inner, uploads

    def upload_file(self, path, key):
        if self.left == 0:
            raise ConnectionError("simulated crash in the middle of the batch")
        self.inner.upload_file(path, key)
        self.left -= 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


def raw_objects(storage, batch_id):
    return storage.sizes(layout.raw_prefix(batch_id))


def manifest(storage, batch_id):
    return json.loads(storage.read_text(layout.manifest_key(batch_id)))


def test_first_run_uploads_everything_but_junk_and_writes_the_manifest(storage, landing):
    root, expected = landing
    report = ingest(root, storage, "2025-01-01")
    assert report["uploaded"] == report["files"] == expected["uploaded"] == 12
    objects = raw_objects(storage, "2025-01-01")
    assert len(objects) == 12
    m = manifest(storage, "2025-01-01")
    assert m["counts"] == {"files": 12, "bytes": sum(objects.values()), "skipped": 2, "already_held": 0}
    for entry in m["files"]:
        assert objects[entry["key"]] == entry["size"] == (root / entry["path"]).stat().st_size
        assert len(entry["sha256"]) == 64
    # the broken files go up for the features job to reject; junk is skipped, with its reason
    assert "raw/batch_id=2025-01-01/Training/Banana/notes.txt" in objects
    assert "raw/batch_id=2025-01-01/Training/Banana/truncated_1.jpg" in objects
    assert {s["path"]: s["reason"] for s in m["skipped"]} == {
        "Training/Banana/.DS_Store": "OS metadata file (macOS Finder)",
        "Training/Banana/._1_100.jpg": "AppleDouble resource fork (macOS)",
    }


def test_rerun_of_the_batch_uploads_nothing(storage, landing):
    root, _ = landing
    ingest(root, storage, "2025-01-01")
    before = manifest(storage, "2025-01-01")["files"]
    report = ingest(root, storage, "2025-01-01")
    assert (report["uploaded"], report["already_uploaded"], report["files"]) == (0, 12, 12)
    assert manifest(storage, "2025-01-01")["files"] == before


def test_next_batch_takes_only_photos_no_batch_holds(storage, landing):
    root, _ = landing
    ingest(root, storage, "2025-01-01")
    report = ingest(root, storage, "2025-01-02")
    assert (report["files"], report["uploaded"], report["already_held"]) == (0, 0, 12)
    assert raw_objects(storage, "2025-01-02") == {}

    new = root / "Test" / "Kiwi" / "new_1.jpg"
    new.parent.mkdir(parents=True)
    new.write_bytes(b"\xff\xd8 pretend jpeg")
    (root / "Test" / "Kiwi" / "copy_of_new.jpg").write_bytes(new.read_bytes())
    report = ingest(root, storage, "2025-01-03")
    assert (report["files"], report["uploaded"], report["skipped"]) == (1, 1, 3)
    assert list(raw_objects(storage, "2025-01-03")) == ["raw/batch_id=2025-01-03/Test/Kiwi/copy_of_new.jpg"]
    assert {"path": "Test/Kiwi/new_1.jpg", "reason": "same content as Test/Kiwi/copy_of_new.jpg"} \
        in manifest(storage, "2025-01-03")["skipped"]


def test_interrupted_run_resumes_without_duplicates_or_losses(storage, landing):
    root, _ = landing
    with pytest.raises(ConnectionError):
        ingest(root, CrashingStorage(storage, uploads=5), "2025-01-01")
    assert len(raw_objects(storage, "2025-01-01")) == 5
    assert layout.manifest_key("2025-01-01") not in storage.sizes(layout.MANIFESTS)  # written last

    report = ingest(root, storage, "2025-01-01")
    assert (report["uploaded"], report["already_uploaded"]) == (7, 5)
    objects = raw_objects(storage, "2025-01-01")
    assert sorted(objects) == sorted(f["key"] for f in manifest(storage, "2025-01-01")["files"])
    assert len(objects) == 12


@pytest.mark.parametrize("rel,reason", [
    ("Banana/1.jpg", None),
    ("Training/Banana/1.jpg", None),
    ("Training/Banana/notes.txt", None),
    ("1.jpg", "not inside a class folder"),
    ("Training/1.jpg", "not inside a class folder"),
    ("Banana/Thumbs.db", "OS metadata"),
    ("Banana/desktop.ini", "OS metadata"),
    ("Banana/_DSC0001.jpg", "Spark's reader skips it"),
    (".ipynb_checkpoints/Banana/1.jpg", "Spark's reader skips it"),
    ("Banana/1.jpg._COPYING_", "Spark's reader skips it"),
    ("Banana/_metadata.jpg", None),  # Spark keeps Parquet's _metadata names: so do we
    ("Training/_season=2024/1.jpg", None),  # '_' with '=' is a partition folder to Spark, not hidden
])
def test_skip_rules(rel, reason):
    got = skip_reason(Path(rel))
    assert got == reason if reason is None else reason in got
