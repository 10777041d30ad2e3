"""The lake's path grammar (fruits_jobs/layout.py), one module for keys (the Airflow side) and URIs
(the jobs): what one side builds, the other finds and parses back."""

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
