"""The lake's path grammar (fruits_jobs/layout.py), one module for keys (the Airflow side) and URIs
(the jobs): what one side builds, the other finds and parses back."""

import json

import pytest

from fruits_jobs import commits, layout


@pytest.mark.parametrize("root", ["", "s3://bucket/", "/lake/", "file:/tmp/lake/"])
def test_a_commit_built_under_any_root_is_the_key_the_airflow_side_lists(root):
    folder = layout.batch_folder(root + layout.FEATURES, "2026-12-01.2")
    path, data = commits.commit_file(folder, "20261201T101010123Z-abcd1234", {"features": "x"})
    key = path[len(root) :]
    assert key.startswith(layout.commits_prefix(layout.FEATURES, "2026-12-01.2"))
    assert layout.parse_commit_key(key, layout.FEATURES) == ("2026-12-01.2", "20261201T101010123Z-abcd1234")
    assert b'"run": "20261201T101010123Z-abcd1234"' in data


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
    assert layout.progress_key("b1") == "features/_progress/batch_id=b1.json"
    assert layout.batch_of_manifest(layout.manifest_key("b.1-x")) == "b.1-x"


def test_a_commit_names_its_outputs_relative_to_its_lake_and_a_reader_resolves_them_in_its_own():
    folder = layout.batch_folder("file:/data/lake1/" + layout.FEATURES, "b1")
    outputs = {
        "features": "file:/data/lake1/features/batch_id=b1/run=r1",
        "read": 3,
        "images": "file:/data/lake1/raw/batch_id=b1/",
    }
    _, data = commits.commit_file(folder, "20261201T101010123Z-abcd1234", outputs)
    stored = json.loads(data)
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


def test_a_lake_never_cleans_outside_itself():
    with pytest.raises(ValueError, match="outside the lake"):
        commits.clean_superseded(None, "/lakeM/features/batch_id=b1", ["/lake1/features/batch_id=b1"], "r")
