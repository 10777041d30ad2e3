"""`fruits` (python -m fruits.tools.cli): batches, a batch's rejects and the nearest stored photos, read
from a real lake."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from space_fixtures import put_basis, put_commit, put_vectors, run_id, vectors_table

from fruits.lake import vector_index
from fruits.lake.published import published_record
from fruits.lake.storage import LocalStorage
from fruits.lake.summary import readable
from fruits.tools.cli import main
from fruits_jobs import features, layout, pca, spaces

pytestmark = pytest.mark.spark


def photo(path, color, seed):
    """A textured photo of that colour (flat images give random weights almost nothing to see)."""
    noise = np.random.default_rng(seed).integers(-25, 25, size=(100, 100, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(path, "PNG")
    return path


def a_space_of_the_features(spark, lake, k: int = 2) -> dict:
    """The current space of the lake's one batch, in the PCA job's format (issue 20), fitted here with
    numpy (uncentred projection on the centred covariance's axes), and its index pieces."""
    storage = LocalStorage(lake)
    published = published_record(storage, "b1")
    table = pq.read_table(readable(published["features"]), columns=["path", "label", "features"])
    stored = np.asarray(table.column("features").to_pylist(), dtype=np.float64)
    components = np.linalg.svd(stored - stored.mean(axis=0), full_matrices=False)[2][:k].T
    space = run_id(1)
    folder = put_vectors(
        storage,
        space,
        "b1",
        space,
        vectors_table("b1", stored @ components, table.column("path").to_pylist(), table.column("label").to_pylist()),
    )
    put_basis(storage, space, components)
    basis = spaces.Basis(components, np.full(stored.shape[1], 1.0 / stored.shape[1]), stored.mean(axis=0))
    pca.pca_model(spark, basis).write().save(str(lake / layout.space_folder(layout.PCA, space) / layout.PCA_MODEL_DIR))
    commit = put_commit(storage, space, space, {"b1": folder}, k, weights="random", image_size=96)
    vector_index.build_missing_pieces(storage, commit)
    return commit


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """A lake with one published batch, as the features job writes it (random weights: seeded), and
    the current embedding space of it with its index."""
    lake = tmp_path_factory.mktemp("lake")
    raw = lake / "raw" / "batch_id=b1"
    for i, (color, seed) in enumerate([((200, 30, 40), 0), ((190, 40, 40), 1), ((230, 220, 60), 2)]):
        photo(raw / "Training" / ("Apple" if i < 2 else "Lemon") / f"{i}.jpg", color, seed)
    (raw / "Training" / "Apple" / "notes.txt").write_text("not a photo")
    features.run(
        spark,
        features.parse_args(
            [
                "--images",
                str(raw),
                "--features",
                str(lake / "features"),
                "--rejects",
                str(lake / "rejects"),
                "--batch-id",
                "b1",
                "--weights",
                "random",
                "--image-size",
                "96",
                "--model-cache",
                str(lake / "models"),
            ]
        ),
    )
    a_space_of_the_features(spark, lake)
    return lake


def run(capsys, *argv):
    assert main(["--lake", str(argv[0]), *argv[1:]]) == 0
    return capsys.readouterr().out.splitlines()


def test_batches_lists_each_published_batch_with_its_counts(lake, capsys):
    header, row = run(capsys, lake, "batches")
    assert header.split() == ["batch", "read", "featurized", "rejected", "k", "variance"]
    assert row.split() == ["b1", "4", "3", "1", "2", "0.900"]  # in the space: its k and variance
    header, row = run(capsys, lake, "batches", "--check")
    assert header.split()[-1] == "health" and row.split() == ["b1", "4", "3", "1", "2", "0.900", "ok"]


class ListingStorage(LocalStorage):
    """A folder lake that remembers what it was asked to list and read."""

    def __init__(self, root):
        super().__init__(root)
        self.listed, self.read = [], []

    def sizes(self, prefix):
        self.listed.append(prefix)
        return super().sizes(prefix)

    def read_text(self, key):
        self.read.append(key)
        return super().read_text(key)


def test_batches_reads_the_tables_logs_and_the_space_not_a_listing_or_record_per_batch(lake):
    """`fruits batches` listed every batch's folders and read each batch's record (and the space once
    a batch) for its counts: work that grew with the lake. Now the tables' logs (their files'
    statistics) and the space's record, once; the same counts."""
    from fruits.tools.cli import batches_table

    storage = ListingStorage(lake)
    assert batches_table(storage)[1].split() == ["b1", "4", "3", "1", "2", "0.900"]
    space_record = [key for key in storage.read if key.endswith("metrics.json")]
    assert len(space_record) == 1 and storage.read == space_record  # no batch's record
    assert storage.listed == space_record  # a listing of the space record's own key, nothing else


def test_rejects_shows_the_path_in_the_landing_folder_with_reason_and_detail(lake, capsys):
    assert run(capsys, lake, "rejects", "b1") == ["Training/Apple/notes.txt\tnot_an_image\tnot a decodable image"]
    with pytest.raises(SystemExit, match="no published batch 'nope'"):
        main(["--lake", str(lake), "rejects", "nope"])


def test_similar_finds_the_photo_itself_first_then_its_class(lake, capsys, tmp_path):
    query = photo(tmp_path / "query.png", (200, 30, 40), 0)  # the same pixels as Apple/0.jpg
    lines = run(capsys, lake, "similar", str(query), "--k", "2")
    ranks = [line.split("\t") for line in lines]
    assert [r[0] for r in ranks] == ["1", "2"]
    assert ranks[0][3].endswith("Training/Apple/0.jpg") and float(ranks[0][1]) > 0.9999
    assert ranks[1][2] == "Apple"  # the other red photo, before the lemon


def test_similar_reads_an_s3_lake_with_boto3s_default_credentials(lake, capsys, tmp_path, monkeypatch, moto_server):
    """The same lake in a bucket (moto): the same photos, each named in the bucket."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)  # boto3 and delta-rs alike reach the same buckets
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the pieces are kept
    query = photo(tmp_path / "query.png", (200, 30, 40), 0)
    local = [line.split("\t") for line in run(capsys, lake, "similar", str(query), "--k", "3")]
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="fruits-lake")
        for path in lake.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "fruits-lake", path.relative_to(lake).as_posix())
        assert main(["--lake", "s3://fruits-lake", "similar", str(query), "--k", "3"]) == 0
        out = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line[:2] in ("1\t", "2\t", "3\t")]
    assert [row[:3] for row in out] == [row[:3] for row in local]
    assert [row[3] for row in out] == [row[3].replace(f"{lake}/", "s3://fruits-lake/") for row in local]
    assert len(list((tmp_path / "cache" / "fruits" / "index" / "fruits-lake").rglob("*.usearch"))) == 1


@pytest.mark.parametrize("content", [b"", b"just some notes\n"])
def test_similar_answers_a_bad_photo_in_one_line(lake, capsys, tmp_path, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    assert main(["--lake", str(lake), "similar", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be read as a photo" in err and "Traceback" not in err


@pytest.mark.parametrize("k", ["0", "-3", "two"])
def test_similar_refuses_k_below_one(lake, capsys, tmp_path, k):
    query = photo(tmp_path / "query.png", (200, 30, 40), 0)
    with pytest.raises(SystemExit) as exit_:
        main(["--lake", str(lake), "similar", str(query), "--k", k])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_the_console_script_is_installed(lake):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [str(Path(sys.executable).with_name("fruits")), "--lake", str(lake), "batches"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[1].split()[0] == "b1"


def test_a_copied_lake_reads_and_runs_on_its_own_and_never_touches_the_original(lake, spark, capsys, tmp_path):
    """`cp -a lake1 lakeM`: the copy's commits used to send `fruits similar` and the PCA into lake1
    (and an operator following them deleted lake1's run folder). With lake1 present or moved away,
    the copy answers, takes a new run, and lake1 stays byte for byte as it was."""
    import shutil

    def snapshot(root):
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}

    copy = tmp_path / "lakeM"
    shutil.copytree(lake, copy)
    before = snapshot(lake)
    away = lake.with_name(lake.name + "-away")
    query = photo(tmp_path / "query.png", (200, 30, 40), 0)
    try:
        lake.rename(away)  # the original moved away: the copy must not need it
        assert run(capsys, copy, "batches")[1].split()[:2] == ["b1", "4"]  # 3 photos and a note
        assert run(capsys, copy, "similar", str(query), "--k", "1")[0].split("\t")[3].startswith(str(copy))
        shutil.rmtree(copy / "vectors")  # the fixture's space is no job's: the copy fits its own
        metrics = pca.run(
            spark,
            pca.parse_args(
                ["--features", str(copy / "features"), "--output", str(copy / "pca"), "--k", "2", "--refit", "always"]
            ),
        )
        assert metrics["n_images"] == 3 and all(v.startswith(f"file:{copy}") for v in metrics["vectors"].values())
    finally:
        away.rename(lake)
    run(capsys, copy, "batches")  # and with the original back in place
    assert snapshot(lake) == before


def test_a_batch_whose_outputs_vanished_is_shown_damaged_and_a_damaged_record_is_named(lake, capsys, tmp_path):
    """Deleting the run folder a record names left `fruits batches` reporting the batch as fine."""
    import shutil

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    (rejects,) = (copy / "rejects" / "batch_id=b1").glob("run=*/*.parquet")
    rejects.write_bytes(rejects.read_bytes()[:-20])  # cut short: its footer is gone
    assert main(["--lake", str(copy), "check"]) == 1
    assert "b1: DAMAGED: rejects:" in capsys.readouterr().out
    (run_folder,) = (copy / "features" / "batch_id=b1").glob("run=*")
    shutil.rmtree(run_folder)
    assert main(["--lake", str(copy), "check"]) == 1
    out = capsys.readouterr().out
    assert f"b1: DAMAGED: features: {run_folder} is missing" in out and "re-run the batch" in out
    assert run(capsys, copy, "batches", "--check")[1].endswith("DAMAGED (fruits check)")
    (record,) = (copy / "batch_runs" / "batch_id=b1").glob("*.json")
    record.write_text(record.read_text()[:30])  # truncated
    assert main(["--lake", str(copy), "rejects", "b1"]) == 1  # its rejects file, cut short above: one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "table rejects:" in err and "re-run batch b1" in err and "Traceback" not in err
    assert main(["--lake", str(copy), "check"]) == 1
    out = capsys.readouterr().out
    assert f"b1: DAMAGED: {record} is damaged" in out and "re-run batch b1" in out and "Traceback" not in out
    assert run(capsys, copy, "batches", "--check")[1].endswith("DAMAGED (fruits check)")


def test_photo_gives_back_a_stored_photo_byte_for_byte_from_either_form(tmp_path, capsysbinary):
    """Packed (several shards, a path with a space) and one object per photo; what ingest did not
    store says why, on stderr."""
    from fruits.lake.ingest import ingest
    from fruits.lake.storage import LocalStorage
    from fruits_jobs import contract

    landing = tmp_path / "landing"
    originals = {
        f"Training/Red Apple/{i}.png": photo(landing / "Training" / "Red Apple" / f"{i}.png", (200, 30, 40), i)
        for i in range(5)
    }
    (landing / "Training" / "Red Apple" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    for form in (contract.PACKED, contract.LOOSE):
        lake = tmp_path / form
        ingest(landing, LocalStorage(lake), "b1", form=form, shard_bytes=50_000)
        for rel, original in originals.items():
            assert main(["--lake", str(lake), "photo", "b1", rel]) == 0
            assert capsysbinary.readouterr().out == original.read_bytes()
    assert len(list((tmp_path / contract.PACKED / "raw" / "batch_id=b1").iterdir())) > 1  # several shards
    assert main(["--lake", str(lake), "photo", "b1", "Training/Red Apple/.DS_Store"]) == 1
    refused = capsysbinary.readouterr()
    assert refused.out == b"" and b"ingest skipped it: OS metadata file" in refused.err


def test_batches_counts_the_published_run_when_a_later_run_committed_only_its_rejects(lake, capsys, tmp_path):
    """The features job commits the rejects table, then the features table: killed between the two,
    the rejects table holds a later run's rows the features table never published. Its count must not
    mix into the published run's: the record of the run the features table names says."""
    import io
    import shutil

    from fruits_jobs import commits, layout, tables

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    storage = LocalStorage(copy)
    later = commits.new_run_id()
    folder = layout.run_folder(layout.batch_folder(layout.REJECTS, "b1"), later)
    schema = tables.REJECTS_SCHEMA.remove(tables.REJECTS_SCHEMA.get_field_index(layout.PARTITION_COLUMN))
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    storage.put_bytes(sink.getvalue(), f"{folder}/part-00000.snappy.parquet")
    tables.publish(
        storage.name + layout.REJECTS,
        tables.REJECTS_SCHEMA,
        [layout.PARTITION_COLUMN],
        {("b1",): [(f"{storage.name}{folder}/part-00000.snappy.parquet", len(sink.getvalue()), 7)]},
        lambda partition: partition.get(layout.PARTITION_COLUMN) == "b1",
        {"run": later},
        None,
        None,
    )
    assert run(capsys, copy, "batches")[1].split()[:4] == ["b1", "4", "3", "1"]  # not 3 + 7
