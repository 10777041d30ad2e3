"""The lake's path grammar (fruits_jobs/layout.py), one module for keys (the Airflow side) and URIs
(the jobs): what one side builds, the other finds and parses back."""

import json

import pytest

from fruits_jobs import commits, layout


@pytest.mark.parametrize("root", ["", "s3://bucket/", "/lake/", "file:/tmp/lake/"])
def test_a_commit_of_the_layout_before_the_tables_is_found_under_any_root(root):
    """What `fruits migrate` lists: features/batch_id=<id>/_commits/<run>.json."""
    key = layout.commit_path(
        layout.batch_folder(root + layout.FEATURES, "2026-12-01.2"), "20261201T101010123Z-abcd1234"
    )
    key = key[len(root) :]
    assert key.startswith(layout.commits_prefix(layout.FEATURES, "2026-12-01.2"))
    assert layout.parse_commit_key(key, layout.FEATURES) == ("2026-12-01.2", "20261201T101010123Z-abcd1234")


@pytest.mark.parametrize(
    "key",
    [
        "features/batch_id=b/_commits/.r1.json",  # still being written
        "features/batch_id=b/run=r1/part-0.parquet",  # data, not a commit
        "features/_staging/r1/_commits/r1.json",  # not a batch folder
        "pca/batch_id=b/_commits/r1.json",  # another dataset
        "features/batch_id=b/_commits/r1.txt",
    ],
)
def test_what_is_not_a_commit_of_the_dataset_is_not_parsed_as_one(key):
    assert layout.parse_commit_key(key, layout.FEATURES) is None


def test_keys_and_uris_are_the_same_paths_under_different_roots():
    run = layout.run_folder(layout.batch_folder("s3://b/" + layout.REJECTS, "b1"), "r1")
    assert run == "s3://b/" + layout.batch_prefix(layout.REJECTS, "b1") + "run=r1"
    assert layout.progress_key("b1") == "batch_runs/_progress/batch_id=b1.json"
    assert (
        layout.batch_runs_of("s3://b/features") == "s3://b/batch_runs"
        and layout.batch_runs_of("features/") == "batch_runs"
    )
    assert layout.record_path("batch_runs", "b1", "r1") == "batch_runs/batch_id=b1/r1.json"
    assert layout.batch_of_manifest(layout.manifest_key("b.1-x")) == "b.1-x"


def test_a_record_names_its_outputs_relative_to_its_lake_and_a_reader_resolves_them_in_its_own():
    outputs = {
        "features": "file:/data/lake1/features/batch_id=b1/run=r1",
        "read": 3,
        "images": "file:/data/lake1/raw/batch_id=b1/",
    }
    data = commits.record_file("20261201T101010123Z-abcd1234", outputs, "file:/data/lake1/")
    stored = json.loads(data)
    assert stored["run"] == "20261201T101010123Z-abcd1234"
    assert stored["features"] == "features/batch_id=b1/run=r1" and stored["images"] == "raw/batch_id=b1/"
    copy = layout.resolve_record(stored, "/data/lakeM/")
    assert copy["features"] == "/data/lakeM/features/batch_id=b1/run=r1" and copy["read"] == 3


@pytest.mark.parametrize(
    "ref",
    [
        "file:/data/lake1/features/batch_id=b1/run=r1",
        "s3://old-bucket/features/batch_id=b1/run=r1",
        "/data/lake1/features/batch_id=b1/run=r1",
    ],
)
def test_an_absolute_reference_from_before_or_from_another_lake_is_rebased_never_followed(ref):
    assert layout.resolve(ref, "s3://new-bucket/") == "s3://new-bucket/features/batch_id=b1/run=r1"


def test_a_table_file_names_its_batch_and_run_and_nothing_else_does():
    """The features table's log is the publication point: the run= folder of a batch's files names its run."""
    assert layout.run_of_file("batch_id=b1/run=r1/part-0.parquet") == ("b1", "r1")
    assert layout.run_of_file("s3://b/features/batch_id=b.2/run=r2/part-0.parquet") == ("b.2", "r2")
    assert layout.run_of_file("batch_id=b1/part-0.parquet") is None
    assert layout.run_of_file("part-0.parquet") is None


def test_a_space_keeps_its_files_under_pca_spaces_and_its_vectors_in_the_table_without_key_value_names():
    """Issue 20: one embedding space per fit, every batch's vectors in it; no `key=value` folder for a
    hive-partitioned reader to turn into a column. Issue 27: the vectors inside the vectors table."""
    pca, space, run = "s3://b/" + layout.PCA, "20261201T000000000Z-s", "20261202T000000000Z-r"
    assert layout.space_folder(pca, space) == f"s3://b/pca/spaces/{space}"
    vectors = layout.vectors_folder(pca, space, "2026-12-02", run)
    assert vectors == f"s3://b/vectors/{space}/2026-12-02/{run}"
    assert "=" not in vectors
    assert layout.space_run_folder(layout.PCA, space, run) == f"pca/spaces/{space}/runs/{run}"
    assert layout.commit_path(pca, run) == f"s3://b/pca/_commits/{run}.json"
    assert layout.moments_path("/lake/batch_runs", "b1", "r1") == "/lake/batch_runs/batch_id=b1/r1.moments.npz"
    assert layout.confusion_path(vectors) == f"s3://b/pca/spaces/{space}/confusion/2026-12-02/{run}.json"


def test_a_space_record_names_its_folders_relative_to_its_lake():
    pca, space, run = "file:/data/lake1/pca", "20261201T000000000Z-5a", "20261202T000000000Z-7b"
    record = {
        "space": space,
        "model": f"{layout.space_folder(pca, space)}/model",
        "basis": f"{layout.space_folder(pca, space)}/basis.npz",
        "metrics": f"{layout.space_run_folder(pca, space, run)}/metrics.json",
        "vectors": {"b1": layout.vectors_folder(pca, space, "b1", run)},
        "k": 3,
    }
    assert layout.root_of_batch_folder(pca) == "file:/data/lake1/"
    stored = layout.refer_record(record, layout.root_of_batch_folder(pca))  # as the PCA job writes it
    assert layout.space_record_path(pca, space, run) == record["metrics"]
    file = f"{layout.vectors_folder(pca, space, 'b1', run)}/part-0.parquet"
    assert layout.vectors_of_file(file) == (space, "b1", run) and layout.vectors_of_file("b1/part-0.parquet") is None
    assert stored["vectors"] == {"b1": f"vectors/{space}/b1/{run}"}
    assert stored["model"] == f"pca/spaces/{space}/model" and stored["k"] == 3
    moved = layout.resolve_record(stored, "s3://new-bucket/")
    assert moved["metrics"] == f"s3://new-bucket/pca/spaces/{space}/runs/{run}/metrics.json"
    # an absolute reference into a space is rebased on the reader's lake, never followed
    assert layout.resolve(f"s3://old/pca/spaces/{space}/basis.npz", "/lakeM/") == f"/lakeM/pca/spaces/{space}/basis.npz"
