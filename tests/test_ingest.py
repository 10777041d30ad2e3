"""Ingest against moto S3 (through the provider's S3Hook) and against the local lake, same code path;
each behaviour for both forms of a batch: packed in Parquet shards (new batches) and one object per
photo (batches ingested before shards, which keep their form).

The interruption is a test double of the *storage* only: it forwards every call to the real one
and raises after k uploads, like a worker killed mid-batch; ingest's own logic runs unchanged.
"""

import functools
import hashlib
import io
import itertools
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from space_fixtures import put_published

from fruits.lake import ingest as ingest_module
from fruits.lake import leases, packing, published
from fruits.lake.ingest import IngestRefused, next_free_batch_id, skip_reason
from fruits.lake.storage import LocalStorage, S3Storage
from fruits_jobs import commits, contract, layout, tables

from airflow_fixtures import BUCKET, make_landing


@pytest.fixture(params=["s3", "local"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "lake")
    request.getfixturevalue("aws")  # moto S3; the calls made are checked against the IAM policy
    return S3Storage(BUCKET, "aws_default")


@pytest.fixture(params=[contract.PACKED, contract.LOOSE])
def form(request):
    return request.param


@pytest.fixture
def ingest(form):
    """Ingest making new batches in this test's form (shards small enough for several per batch)."""
    return functools.partial(ingest_module.ingest, form=form, shard_bytes=2500)


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    expected = make_landing(root)
    return root, expected


class CrashingStorage:
    """Forwards to the real storage; raises after `uploads` successful uploads (objects: photos, or shards)."""

    def __init__(self, inner, uploads: int):
        self.inner, self.left = inner, uploads

    def upload_file(self, path, key):
        if self.left == 0:
            raise ConnectionError("simulated crash in the middle of the batch")
        self.inner.upload_file(path, key)
        self.left -= 1

    def upload_files(self, uploads, progress):
        uploads = iter(uploads)
        self.inner.upload_files(itertools.islice(uploads, self.left), progress)  # stored in full
        if next(uploads, None) is not None:
            raise ConnectionError("simulated crash in the middle of the batch")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def as_cluster(storage):
    """put(data, key) as the cluster writes, not as Airflow, whose role may not write the jobs'
    outputs: hence not through `storage`."""

    def put(data, key):
        if isinstance(storage, LocalStorage):
            (storage.root / key).parent.mkdir(parents=True, exist_ok=True)
            (storage.root / key).write_bytes(data)
        else:
            import boto3

            boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)

    return put


def publish(storage, batch_id, started=None):
    """What the features job does when its run of the batch succeeds: its files and record, then the
    tables' commit under the lease its run started with (started: a lease read at an earlier run's
    start; default: the lease now). A run given up on publishes nothing: the job finds its token gone
    before committing, and the log refuses its lease generation (tables.GivenUp) after that."""
    lease = started or leases.read_lease(storage, batch_id) or {}
    if not commits.is_live({"token": lease.get("token")}, leases.read_lease(storage, batch_id)):
        return
    fence = (tables.lease_app_id(batch_id), lease["generation"]) if lease.get("generation") else None
    put_published(storage, batch_id, commits.new_run_id(), put=as_cluster(storage), fence=fence)


def raw_objects(storage, batch_id):
    """The photos stored for a batch, {logical key: size}: its objects, or the rows of its shards
    (a photo in two shards is a duplicate: refused here)."""
    prefix = layout.raw_prefix(batch_id)
    found: dict[str, int] = {}
    for key, size in storage.sizes(prefix).items():
        if layout.shard_index(key) is None:
            found[key] = size
            continue
        for row in pq.read_table(io.BytesIO(stored_bytes(storage, key)), columns=["path", "size"]).to_pylist():
            assert prefix + row["path"] not in found, f"{row['path']} stored twice"
            found[prefix + row["path"]] = row["size"]
    return found


def stored_bytes(storage, key):
    """An object's bytes, read as the test (not as Airflow's role, which may not read photos)."""
    if isinstance(storage, LocalStorage):
        return (storage.root / key).read_bytes()
    import boto3

    return boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()


def shards(storage, batch_id):
    return sorted(k for k in storage.sizes(layout.raw_prefix(batch_id)) if layout.shard_index(k) is not None)


def manifest(storage, batch_id):
    return json.loads(storage.read_text(layout.manifest_key(batch_id)))


def test_first_run_uploads_everything_but_junk_and_writes_the_manifest(ingest, storage, landing):
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


def test_rerun_of_the_batch_uploads_nothing(ingest, storage, landing):
    root, _ = landing
    ingest(root, storage, "2025-01-01")
    before = manifest(storage, "2025-01-01")["files"]
    report = ingest(root, storage, "2025-01-01")
    assert (report["uploaded"], report["already_uploaded"], report["files"]) == (0, 12, 12)
    assert manifest(storage, "2025-01-01")["files"] == before


def test_next_batch_takes_only_photos_no_published_batch_holds(ingest, storage, landing):
    root, _ = landing
    ingest(root, storage, "2025-01-01")
    publish(storage, "2025-01-01")
    report = ingest(root, storage, "2025-01-02")
    assert (report["files"], report["uploaded"], report["already_held"]) == (0, 0, 12)
    assert report["already_held_by"] == {"2025-01-01": 12}  # the batch that holds them, by name
    assert raw_objects(storage, "2025-01-02") == {}
    assert {"path": "Training/Banana/1_100.jpg", "reason": "already in batch 2025-01-01"} in manifest(
        storage, "2025-01-02"
    )["skipped"]

    new = root / "Test" / "Kiwi" / "new_1.jpg"
    new.parent.mkdir(parents=True)
    new.write_bytes(b"\xff\xd8 pretend jpeg")
    (root / "Test" / "Kiwi" / "copy_of_new.jpg").write_bytes(new.read_bytes())
    report = ingest(root, storage, "2025-01-03")
    assert (report["files"], report["uploaded"], report["skipped"]) == (1, 1, 3)
    assert list(raw_objects(storage, "2025-01-03")) == ["raw/batch_id=2025-01-03/Test/Kiwi/copy_of_new.jpg"]
    assert {"path": "Test/Kiwi/new_1.jpg", "reason": "same content as Test/Kiwi/copy_of_new.jpg"} in manifest(
        storage, "2025-01-03"
    )["skipped"]


def test_interrupted_run_resumes_without_duplicates_or_losses(ingest, form, storage, landing):
    root, _ = landing
    with pytest.raises(ConnectionError):  # after 5 photos, or after the first shard (~4 photos)
        ingest(root, CrashingStorage(storage, uploads=5 if form == contract.LOOSE else 1), "2025-01-01")
    sent = len(raw_objects(storage, "2025-01-01"))
    assert 0 < sent < 12
    assert layout.manifest_key("2025-01-01") not in storage.sizes(layout.MANIFESTS)  # written last

    report = ingest(root, storage, "2025-01-01")
    assert (report["uploaded"], report["already_uploaded"]) == (12 - sent, sent)
    objects = raw_objects(storage, "2025-01-01")  # each photo once (a second copy fails here)
    assert sorted(objects) == sorted(f["key"] for f in manifest(storage, "2025-01-01")["files"])
    assert len(objects) == 12


def test_a_shard_stored_in_parts_is_recognised_when_the_ingest_resumes(aws, tmp_path):
    """A multipart object's ETag is no MD5: the shard's sha256 in its metadata tells it is complete."""
    from fruits.lake.transfer import transfer_config

    storage = S3Storage(BUCKET, "aws_default", transfer=transfer_config(threshold=5 << 20, chunksize=5 << 20))
    for name in ("a", "b"):
        (tmp_path / "landing" / "Plum").mkdir(parents=True, exist_ok=True)
        (tmp_path / "landing" / "Plum" / f"{name}.jpg").write_bytes(os.urandom(6 << 20))
    with pytest.raises(ConnectionError):
        ingest_module.ingest(tmp_path / "landing", CrashingStorage(storage, uploads=1), "b1", shard_bytes=1 << 20)
    (first,) = shards(storage, "b1")
    import boto3

    assert "-" in boto3.client("s3").head_object(Bucket=BUCKET, Key=first)["ETag"]  # sent in parts
    report = ingest_module.ingest(tmp_path / "landing", storage, "b1", shard_bytes=1 << 20)
    assert (report["uploaded"], report["already_uploaded"], report["shards_uploaded"]) == (1, 1, 1)
    assert len(raw_objects(storage, "b1")) == 2


@pytest.mark.parametrize(
    "rel,reason",
    [
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
    ],
)
def test_skip_rules(rel, reason):
    got = skip_reason(Path(rel))
    assert got == reason if reason is None else reason in got


def test_a_failed_batch_holds_nothing(ingest, storage, landing):
    """Its run never published: a new batch id after the failure takes the photos (it used to
    upload nothing: '12 already held by earlier batches')."""
    root, _ = landing
    ingest(root, storage, "2025-01-01")  # ... and then its features job failed: no commit
    report = ingest(root, storage, "2025-01-02")
    assert (report["files"], report["uploaded"], report["already_held"]) == (12, 12, 0)


def test_a_batch_whose_photos_a_new_batch_took_can_never_publish_them_too(ingest, storage, landing):
    """Its run was killed before it committed (SIGKILL: nothing of it could act); the next batch takes
    the photos and revokes its lease, so its job's late commit publishes nothing: each photo in one
    published batch."""
    root, _ = landing
    ingest(root, storage, "bx-1")
    lease_of_killed_run = leases.read_lease(storage, "bx-1")  # what its job read at its start
    report = ingest(root, storage, "bx-2")
    assert report["uploaded"] == 12 and leases.read_lease(storage, "bx-1")["token"] is None
    publish(storage, "bx-2")
    publish(storage, "bx-1", lease_of_killed_run)  # the late commit, after bx-2's ingest
    assert published.is_published(storage, "bx-2") and not published.is_published(storage, "bx-1")
    assert ingest(root, storage, "bx-3")["already_held_by"] == {"bx-2": 12}


def test_a_new_run_of_a_batch_fences_the_earlier_runs_commit_and_a_published_batch_keeps_its_lease(
    ingest, storage, landing
):
    root, _ = landing
    ingest(root, storage, "b")
    first_lease = leases.read_lease(storage, "b")
    ingest(root, storage, "b")  # a new run of the same, unpublished batch: a new token
    publish(storage, "b", first_lease)  # the first run's job, finishing late
    assert not published.is_published(storage, "b")
    publish(storage, "b")  # the new run's job
    assert published.is_published(storage, "b")
    ingest(root, storage, "b")  # the same batch again once published: its lease stays
    assert published.is_published(storage, "b")


def test_new_photos_never_merge_into_a_published_batch(ingest, storage, landing):
    root, _ = landing
    ingest(root, storage, "2025-01-01")
    publish(storage, "2025-01-01")
    assert ingest(root, storage, "2025-01-01")["uploaded"] == 0  # a re-run with nothing new is fine
    extra = root / "Training" / "Kiwi" / "late.jpg"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_bytes(b"\xff\xd8 a second folder landed the same day")
    with pytest.raises(IngestRefused, match="already published with 12 photo.*Leave batch_id empty"):
        ingest(root, storage, "2025-01-01")
    assert len(manifest(storage, "2025-01-01")["files"]) == 12
    assert len(raw_objects(storage, "2025-01-01")) == 12


def test_the_manifest_never_lists_fewer_files_than_the_batch_holds(ingest, storage, landing, tmp_path):
    root, _ = landing
    ingest(root, storage, "2025-01-01")
    other = tmp_path / "second-folder" / "Plum"
    other.mkdir(parents=True)
    (other / "p.jpg").write_bytes(b"\xff\xd8 another photo")
    report = ingest(tmp_path / "second-folder", storage, "2025-01-01")  # same batch, other folder
    assert (
        report["files"]
        == 13
        == len(manifest(storage, "2025-01-01")["files"])
        == len(raw_objects(storage, "2025-01-01"))
    )


def test_a_file_changed_after_an_interrupted_upload_is_sent_again(ingest, form, storage, landing):
    root, _ = landing
    with pytest.raises(ConnectionError):
        ingest(root, CrashingStorage(storage, uploads=5 if form == contract.LOOSE else 1), "2025-01-01")
    sent = sorted(raw_objects(storage, "2025-01-01"))[0][len("raw/batch_id=2025-01-01/") :]
    photo = root / sent
    data = bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # same size, other content
    photo.write_bytes(bytes(data))
    report = ingest(root, storage, "2025-01-01")
    # one object per photo: the changed one goes again; packed: the shard holding it
    assert report["uploaded"] + report["already_uploaded"] == 12 and report["uploaded"] >= 8
    entry = next(e for e in manifest(storage, "2025-01-01")["files"] if e["path"] == sent)
    assert entry["sha256"] == hashlib.sha256(bytes(data)).hexdigest() == stored_sha256(storage, entry)
    assert len(raw_objects(storage, "2025-01-01")) == 12


def stored_sha256(storage, entry):
    """The sha256 of the bytes stored for a manifest entry: its object, or its row of its shard."""
    data = stored_bytes(storage, entry.get("shard") or entry["key"])
    if entry.get("shard"):
        data = packing.read_photo(io.BytesIO(data), entry["path"])
    return hashlib.sha256(data).hexdigest()


def test_links_odd_files_and_unreadable_entries_are_skipped_with_a_reason(tmp_path):
    root = tmp_path / "landing"
    make_landing(root, bad=False)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    banana = root / "Training" / "Banana"
    (banana / "passwd.jpg").symlink_to(outside)
    (banana / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (banana / "inside.jpg").symlink_to(banana / "1_100.jpg")  # same content: a duplicate, said so
    (root / "Training" / "Loop").symlink_to(root / "Training")
    os.mkfifo(banana / "pipe.jpg")
    long_name = banana / ("x" * 246 + ".jpg")  # 250 bytes: the temp name must still fit in 255
    long_name.write_bytes(b"\xff\xd8 long name")
    locked = root / "Training" / "Locked"
    locked.mkdir()
    (locked / "a.jpg").write_bytes(b"\xff\xd8")
    locked.chmod(0)
    try:
        # one object per photo: the long name's temporary copy must fit the file system's limit
        report = ingest_module.ingest(root, LocalStorage(tmp_path / "lake"), "b1", form=contract.LOOSE)
    finally:
        locked.chmod(0o755)
    reasons = {e["path"]: e["reason"] for e in manifest(LocalStorage(tmp_path / "lake"), "b1")["skipped"]}
    assert "outside the landing folder" in reasons["Training/Banana/passwd.jpg"]
    assert "dangling" in reasons["Training/Banana/dangling.jpg"]
    assert reasons["Training/Banana/inside.jpg"].startswith("same content as")
    assert "not followed" in reasons["Training/Loop"]
    assert "not a regular file" in reasons["Training/Banana/pipe.jpg"]
    if os.geteuid() != 0:  # root reads anything: the permission case only exists for others
        assert "unreadable" in reasons["Training/Locked"]
    assert report["files"] == 10 + 1 + (1 if os.geteuid() == 0 else 0)
    assert (tmp_path / "lake" / "raw" / "batch_id=b1" / long_name.relative_to(root)).is_file()


def test_a_date_named_run_after_a_published_batch_gets_the_next_free_id(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    assert next_free_batch_id(storage, "2026-01-01") == "2026-01-01"
    publish(storage, "2026-01-01")
    assert next_free_batch_id(storage, "2026-01-01") == "2026-01-01.2"
    publish(storage, "2026-01-01.2")
    assert next_free_batch_id(storage, "2026-01-01") == "2026-01-01.3"


def test_an_entry_whose_link_cannot_even_be_read_is_skipped_not_fatal(tmp_path, monkeypatch):
    """As in /proc (landing_dir "/" walked it): os.readlink raised PermissionError and ingest died."""
    from fruits.lake.ingest import walk_landing

    (tmp_path / "Apple").mkdir()
    (tmp_path / "Apple" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "readlink", refused)  # what the kernel answers there
    files, skipped = walk_landing(tmp_path)
    assert files == [] and skipped == [
        {"path": "Apple/gone.jpg", "reason": "dangling or looping symbolic link (unreadable: Permission denied)"}
    ]


@pytest.mark.parametrize("damaged", ["manifest", "batch file", "catalog", "piece"])
def test_a_damaged_manifest_is_named_and_fails_the_task_without_a_retry(tmp_path, landing, damaged):
    """A truncated manifest made ingest fail with a bare JSONDecodeError, twice (retries=1). The same
    for each file of the held-photo index: named, with what to do."""
    from airflow.exceptions import AirflowFailException

    from fruits import pipeline
    from fruits.config.run import LocalConfig, RunConfig
    from fruits.lake import held_index

    root, _ = landing
    storage = LocalStorage(tmp_path / "lake")
    ingest_module.ingest(root, storage, "b1")
    if damaged in ("manifest", "batch file"):  # a lake ingested before the held-photo catalog
        shutil.rmtree(storage.root / layout.HELD_INDEX)
    if damaged == "manifest":  # ... and before the batches' held-photo files: ingest reads the manifest
        (storage.root / layout.held_index_key("b1")).unlink()
    key = {
        "manifest": layout.manifest_key("b1"),
        "batch file": layout.held_index_key("b1"),
        "catalog": layout.held_catalog_key(),
        "piece": (held_index.read_catalog(storage) or {"pieces": [{}]})["pieces"][0].get("key", "none"),
    }[damaged]
    (storage.root / key).write_bytes((storage.root / key).read_bytes()[:40])  # cut short, as a full disk leaves it
    cfg = RunConfig(
        batch_id="b2",
        landing_dir=str(root),
        backend="local",
        pca_k=None,
        pca_variance=0.9,
        weights="random",
        bucket="fruits-local",
        root=f"{storage.root}/",
        local=LocalConfig(lake=str(storage.root), storage="lake", spark_master="local[1]"),
    )
    rebuild = r"delete manifests/held/ \(catalog and pieces\): the next ingest rebuilds them"
    expected = {
        "manifest": r"manifests/batch_id=b1.json is damaged \(not JSON.*restore it",
        "batch file": r"batch_id=b1.held.parquet is damaged .*delete it: ingest then reads the batch's manifest",
        "catalog": r"manifests/held/catalog.json is not a held-photo catalog .*" + rebuild,
        "piece": r"manifests/held/pieces/\w+.parquet is damaged .*" + rebuild,
    }[damaged]
    with pytest.raises(AirflowFailException, match=expected):
        pipeline.ingest_batch(cfg.to_dict())


def answer_from_manifests(storage, batch_id, among=None):
    """(held, listed) as ingest found them before any index: every manifest parsed."""
    published_now = published.published_runs(storage)
    held, listed = {}, {}
    for key in sorted(storage.sizes(layout.MANIFESTS)):
        other = layout.batch_of_manifest(key)
        if other is None or other == batch_id:
            continue
        for sha in ingest_module.manifest_hashes(ingest_module.parse_manifest(storage, key)):
            if among is not None and sha not in among:
                continue
            if other in published_now:
                held.setdefault(sha, other)
            else:
                listed.setdefault(sha, set()).add(other)
    return held, listed


def answer_from_index(storage, batch_id, among=None):
    from fruits.lake import held_index

    published_now = published.published_runs(storage)
    catalog = ingest_module.held_catalog(storage, published_now)
    return ingest_module.other_batches(held_index.lookup(storage, catalog, among), published_now, batch_id)


def test_the_held_photo_index_answers_as_the_manifests_do(storage, tmp_path):
    """Published, unpublished and revoked batches of both forms: the same (held, listed) answer from
    the tiered held-photo index as from parsing every manifest (what ingest did before it); and from
    the catalog a lake ingested before it (no catalog, no per-batch files) gets at its next ingest."""
    for n, (batch, form) in enumerate([("p1", contract.PACKED), ("p2", contract.LOOSE), ("u1", contract.PACKED)]):
        root = tmp_path / f"landing-{batch}"
        make_landing(root, n_good=6, seed=n)
        ingest_module.ingest(root, storage, batch, form=form)
        if batch.startswith("p"):
            publish(storage, batch)
    make_landing(tmp_path / "landing-u2", n_good=6, seed=2)  # u1's photos again: u1 loses its lease
    ingest_module.ingest(tmp_path / "landing-u2", storage, "u2")
    some = set(manifest_hashes_of(storage, "p1")[:3] + manifest_hashes_of(storage, "u2")[:2] + ["00" * 32])

    expected = [answer_from_manifests(storage, "new"), answer_from_manifests(storage, "new", some)]
    assert len(expected[0][0]) == 12 + 2 and expected[1][0] and expected[1][1]  # not vacuous
    assert [answer_from_index(storage, "new"), answer_from_index(storage, "new", some)] == expected
    for key in storage.sizes(layout.MANIFESTS):  # a lake ingested before both indexes
        if key.startswith(layout.HELD_INDEX) or key.endswith(".held.parquet"):
            delete(storage, key)
    assert [answer_from_index(storage, "new"), answer_from_index(storage, "new", some)] == expected
    assert layout.held_catalog_key() in storage.sizes(layout.MANIFESTS)  # built once, kept


def manifest_hashes_of(storage, batch):
    return sorted(e["sha256"] for e in manifest(storage, batch)["files"])


def delete(storage, key):
    if isinstance(storage, LocalStorage):
        (storage.root / key).unlink()
    else:
        import boto3

        boto3.client("s3").delete_object(Bucket=BUCKET, Key=key)


def test_the_progress_line_says_files_megabytes_rate_and_time_left():
    from fruits.lake.transfer import MB, rate_line

    assert rate_line("ingest upload", (3, 8), (30 * MB, 120 * MB), 10.0) == (
        "ingest upload: 3/8 files, 30.0/120.0 MB, 3.0 MB/s, ~30 s left"
    )
    assert rate_line("up", (0, 1), (0, MB), 0.0).endswith("0.0 MB/s, time left unknown yet")


class CountingStorage(LocalStorage):
    """A folder lake that remembers the keys it read."""

    def __init__(self, root):
        super().__init__(root)
        self.read = []

    def read_bytes(self, key):
        self.read.append(key)
        return super().read_bytes(key)


def test_the_held_photo_index_stays_a_handful_of_files_and_exact_as_batches_pile_up(tmp_path):
    """Forty daily batches, some ingested again under their id with other photos (their run never
    published) and some sharing photos: after each, the catalog holds every batch at its current
    version, in at most floor(log2 n) + 1 pieces that ingest reads whole (plus the catalog), and the
    lookup answers exactly what the batches list now: no stale batch list hides or doubles a photo."""
    import math
    import random

    from fruits.lake import held_index

    storage = CountingStorage(tmp_path / "lake")
    rng = random.Random(7)
    lists: dict[str, list[str]] = {}
    hashes_of = functools.partial(ingest_module.batch_hashes, storage)
    for day in range(1, 41):
        batch = f"d{day - 1:03d}" if day % 9 == 0 else f"d{day:03d}"  # every 9th day: yesterday's id again
        photos = [f"{rng.getrandbits(256):064x}" for _ in range(5)]
        if lists and day % 4 == 0:
            photos.append(rng.choice(sorted(lists.values()))[0])  # a photo another batch lists too
        lists[batch] = photos
        catalog = ingest_module.held_catalog(storage, {})
        catalog = held_index.record(storage, catalog, batch, photos, hashes_of)
        assert held_index.members(catalog) == {b: held_index.version(h) for b, h in lists.items()}
        assert len(catalog["pieces"]) <= math.floor(math.log2(len(lists))) + 1
        storage.read.clear()
        found = held_index.lookup(storage, held_index.read_catalog(storage), None)
        assert len(storage.read) <= math.floor(math.log2(len(lists))) + 2  # the catalog, then its pieces
        expected: dict[str, set[str]] = {}
        for b, listed in lists.items():
            for sha in listed:
                expected.setdefault(sha, set()).add(b)
        assert found == {sha: sorted(bs) for sha, bs in expected.items()}
    pieces = storage.sizes(layout.HELD_PIECES)
    assert 1 < len(pieces) <= 2 * (math.floor(math.log2(len(lists))) + 1)  # retired pieces go a switch later
