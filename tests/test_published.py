"""The Airflow side reads the lake as the jobs publish it: through the features table's log and the
PCA's commits, never through files alone."""

import pytest
from space_fixtures import put_commit, put_published

from fruits.lake import published
from fruits.lake.storage import LocalStorage
from fruits_jobs import layout
from fruits_jobs.commits import DamagedLake


def put(root, key, data=b"x"):
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


publish = put_published


def space_commit(storage, run: str, space: str, features_runs: dict[str, str], added=None, k_rule=None) -> dict:
    """The PCA commit naming `space` current, holding the batches' features runs (issue 20)."""
    vectors = {b: layout.vectors_folder(layout.PCA, space, b, run) for b in features_runs}
    extra = {"features_runs": features_runs, "k_rule": k_rule or {"k": 3, "variance": None}}
    return put_commit(storage, run, space, vectors, k=3, **({"added": added} if added is not None else {}), **extra)


F1, F2, P1, P2, P3 = (f"2026010{d}T000000000Z-{t}" for d, t in ((1, "f1"), (2, "f2"), (3, "a"), (4, "b"), (5, "c")))


def test_a_batch_is_processed_only_once_the_current_space_commits_its_version(tmp_path):
    """A PCA run killed mid-write leaves a space's metrics, vectors and model: that is not 'processed'.
    Nor is a batch whose published version is not the one the current space holds."""
    storage = LocalStorage(tmp_path)
    publish(storage, "b1", F1)
    put(tmp_path, f"pca/spaces/{P3}/runs/{P3}/metrics.json", b'{"k": 3}')  # a PCA run killed before its commit
    put(tmp_path, f"vectors/{P3}/b1/{P3}/part-0.parquet")
    assert published.current_space(storage) is None
    assert not published.is_processed(storage, "b1")
    space_commit(storage, P1, P1, {"b1": F1})
    assert published.is_processed(storage, "b1")
    assert not published.is_processed(storage, "b2")  # no features commit of its own: never processed
    publish(storage, "b1", F2)  # re-published: the space still holds F1's vectors
    assert not published.is_processed(storage, "b1")
    space_commit(storage, P2, P1, {"b1": F2})
    assert published.is_processed(storage, "b1")


def test_a_batch_is_published_once_the_features_table_names_its_files(tmp_path):
    """A run's files and record without the features table's commit (a run killed before it, or one
    whose commit the log refused) publish nothing; the commit publishes the run its files' folder names."""
    storage = LocalStorage(tmp_path)
    put(tmp_path, f"features/batch_id=b1/run={F2}/part-00000.snappy.parquet")
    put(tmp_path, f"batch_runs/batch_id=b1/{F2}.json", b'{"features": "f", "read": 3}')
    assert not published.is_published(storage, "b1") and published.published_record(storage, "b1") is None
    publish(storage, "b1", F1, read=5)
    assert published.published_runs(storage) == {"b1": F1}
    record = published.published_record(storage, "b1")
    assert record["read"] == 5 and record["run"] == F1
    assert record["record"] == f"{tmp_path}/batch_runs/batch_id=b1/{F1}.json"
    assert record["features"] == f"{tmp_path}/features/batch_id=b1/run={F1}"  # resolved in this lake


def test_a_published_batch_whose_record_is_missing_or_damaged_is_named(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(storage, "b1", F1)
    (tmp_path / f"batch_runs/batch_id=b1/{F1}.json").write_text('{"features": "f", "re')  # truncated
    with pytest.raises(DamagedLake, match=rf"batch_runs/batch_id=b1/{F1}.json is damaged.*re-run batch b1"):
        published.published_record(storage, "b1")
    (tmp_path / f"batch_runs/batch_id=b1/{F1}.json").unlink()
    with pytest.raises(DamagedLake, match=rf"{F1}.json is missing \(the features table names run {F1} of batch b1\)"):
        published.published_record(storage, "b1")


def test_the_newest_commit_is_current_and_names_the_latest_processed_batch(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(storage, "b1", F1)
    publish(storage, "b2", F2)
    space_commit(storage, P1, P1, {"b1": F1}, added=["b1"])
    assert published.latest_processed_batch(storage) == "b1"
    space_commit(storage, P2, P1, {"b1": F1, "b2": F2}, added=["b2"])
    current = published.current_space(storage)
    assert current["space"] == P1 and current["record"] == f"{tmp_path}/pca/spaces/{P1}/runs/{P2}/metrics.json"
    # its references resolved in this lake
    assert current["vectors"]["b2"] == f"{tmp_path}/vectors/{P1}/b2/{P2}"
    assert published.latest_processed_batch(storage) == "b2"
    # a refit re-projects every batch and adds none: the last one the space took in is the newest
    space_commit(storage, P3, P3, {"b1": F1, "b2": F2}, added=[])
    assert published.current_space(storage)["space"] == P3
    assert published.latest_processed_batch(storage) == "b2"
    assert published.latest_processed_batch(LocalStorage(tmp_path / "empty")) is None


def test_the_pca_has_work_when_a_published_batch_is_not_in_the_space_or_a_refit_is_asked(tmp_path):
    storage = LocalStorage(tmp_path)
    rule = {"k": 3, "variance": None}
    assert published.pca_pending(storage, "auto", rule) == []  # an empty lake: nothing to do
    publish(storage, "b1", F1)
    assert published.pca_pending(storage, "auto", rule) == ["published batches not in the current space: b1"]
    space_commit(storage, P1, P1, {"b1": F1})
    assert published.pca_pending(storage, "auto", rule) == []
    assert published.pca_pending(storage, "never", rule) == []
    assert published.pca_pending(storage, "always", rule) == ["pca_refit=always"]
    assert published.pca_pending(storage, "auto", {"k": None, "variance": 0.9}) == [
        "a new k rule {'k': None, 'variance': 0.9} (the space's: {'k': 3, 'variance': None})"
    ]
    publish(storage, "b1", F2)  # re-published, and a new batch: both are behind
    publish(storage, "b2", F2)
    assert published.pca_pending(storage, "auto", rule) == ["published batches not in the current space: b1, b2"]


def test_a_space_whose_record_is_damaged_or_missing_is_named(tmp_path):
    """The vectors table names the run; its record (metrics.json) is what readers need of the space."""
    storage = LocalStorage(tmp_path)
    space_commit(storage, P1, P1, {"b1": F1})
    record = tmp_path / f"pca/spaces/{P1}/runs/{P1}/metrics.json"
    record.write_text('{"space": "s", "model": "m"}')  # no metrics, vectors, k
    with pytest.raises(DamagedLake, match=rf"runs/{P1}/metrics.json is damaged \(no metrics, vectors, k\)"):
        published.current_space(storage)
    record.unlink()
    with pytest.raises(DamagedLake, match=rf"metrics.json is missing \(the vectors table names run {P1}"):
        published.current_space(storage)
