"""The Airflow side reads the lake as the jobs publish it: through commits, never through files alone."""

import json

from fruits.lake import published
from fruits.lake.storage import LocalStorage


def put(root, key, data=b"x"):
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def pca_commit(k: int) -> bytes:
    return json.dumps({"k": k, "output": "o", "n_images": 10}).encode()


def test_a_run_is_processed_only_once_its_commit_exists(tmp_path):
    """A PCA re-run killed mid-write leaves metrics/reduced/model files: that is not 'processed'."""
    storage = LocalStorage(tmp_path)
    put(
        tmp_path, "features/batch_id=b1/_commits/20260101T000000000Z-f.json", b'{"features": "f"}'
    )  # published (no lease: legacy)
    put(tmp_path, "pca/batch_id=b1/run=20260101T000000000Z-a/metrics.json", b'{"k": 3}')
    put(tmp_path, "pca/batch_id=b1/_commits/.20260101T000000000Z-a.json.tmp", b'{"k": 3')  # being written
    assert not published.is_processed(storage, "b1")
    put(tmp_path, "pca/batch_id=b1/_commits/20260101T000000000Z-a.json", pca_commit(3))
    assert published.is_processed(storage, "b1")
    assert not published.is_processed(storage, "b2")  # no features commit of its own: never processed


def test_a_commit_publishes_only_under_the_token_its_lease_holds(tmp_path):
    storage = LocalStorage(tmp_path)
    put(tmp_path, "features/batch_id=b1/_commits/20260101T000000000Z-f.json", b'{"features": "f", "token": "t1"}')
    assert not published.is_published(storage, "b1")  # a token, but no lease issued it
    put(tmp_path, "manifests/batch_id=b1.lease", b'{"token": "t1"}')
    assert published.is_published(storage, "b1")
    put(tmp_path, "manifests/batch_id=b1.lease", b'{"token": null, "revoked": "given up"}')
    assert not published.is_published(storage, "b1") and published.published_commit(storage, "b1") is None


def test_the_newest_commit_is_current_and_names_the_latest_processed_batch(tmp_path):
    storage = LocalStorage(tmp_path)
    for batch_id, run, k in [
        ("b1", "20260101T000000000Z-a", 3),
        ("b1", "20260301T000000000Z-c", 5),
        ("b2", "20260201T000000000Z-b", 4),
    ]:
        put(tmp_path, f"features/batch_id={batch_id}/_commits/{run}.json", b'{"features": "f"}')
        put(tmp_path, f"pca/batch_id={batch_id}/_commits/{run}.json", pca_commit(k))
    current = published.current_commit(storage, "pca/", "b1")
    assert current["k"] == 5 and current["commit"].endswith("pca/batch_id=b1/_commits/20260301T000000000Z-c.json")
    assert published.latest_processed_batch(storage) == "b1"
    assert published.latest_processed_batch(LocalStorage(tmp_path / "empty")) is None


def test_only_files_named_by_a_run_id_are_commits_and_a_damaged_one_is_named(tmp_path, caplog):
    """A note saved in _commits/ sorted after the run ids and became "the current commit": as text,
    everything failed with a bare JSONDecodeError; as JSON without a `features` key, the batch
    silently fell out of the PCA. Now it is ignored, with a warning naming it."""
    import pytest

    from fruits_jobs.commits import DamagedLake

    storage = LocalStorage(tmp_path)
    put(tmp_path, "features/batch_id=b1/_commits/20260101T000000000Z-a.json", b'{"features": "f", "read": 8}')
    put(tmp_path, "features/batch_id=b1/_commits/notes.json", b'{"todo": "ask about b1"}')
    assert published.current_commit(storage, "features/", "b1")["read"] == 8
    assert "_commits/notes.json: not a commit" in caplog.text
    put(tmp_path, "features/batch_id=b1/_commits/20260102T000000000Z-b.json", b'{"features": "f", "re')  # truncated
    with pytest.raises(DamagedLake, match=r"batch_id=b1/_commits/20260102T000000000Z-b.json is damaged.*move it"):
        published.is_published(storage, "b1")
