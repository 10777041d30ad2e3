"""The local lake has two writers: Spark (Hadoop's local filesystem, which keeps a `.<name>.crc`
beside each file it writes and checks it on every read) and the Airflow side (LocalStorage, plain
files). A file stays with the side that wrote it: a rewrite by the other fails the next read's
checksum (issue 26: the run report rewrote the PCA job's metrics.json; the next day's PCA failed)."""

import json
import struct
import zlib
from pathlib import Path

import pytest

from fruits.lake import ingest
from fruits.lake.storage import LocalStorage
from fruits_jobs import commits, hadoop_fs, layout

from airflow_fixtures import make_landing

pytestmark = pytest.mark.spark


def crc_mismatches(folder: Path) -> list[str]:
    """The files under folder that no longer match the `.<name>.crc` Hadoop wrote beside them: header
    b"crc\\0", bytes per checksum (big-endian int), then a CRC32 per chunk (ChecksumFileSystem)."""
    changed = []
    for crc in folder.rglob(".*.crc"):
        data = crc.with_name(crc.name[1 : -len(".crc")]).read_bytes()
        raw = crc.read_bytes()
        assert raw[:4] == b"crc\0", crc
        chunk = struct.unpack(">i", raw[4:8])[0]
        stored = list(struct.unpack(f">{(len(raw) - 8) // 4}I", raw[8:]))
        if stored != [zlib.crc32(data[i : i + chunk]) for i in range(0, len(data), chunk)]:
            changed.append(str(crc.with_name(crc.name[1 : -len(".crc")])))
    return changed


def test_the_airflow_side_refuses_to_replace_a_file_spark_wrote(spark, tmp_path):
    lake = LocalStorage(tmp_path / "lake")
    key = "pca/spaces/s1/runs/r1/metrics.json"
    hadoop_fs.write_text(spark, f"file://{tmp_path}/lake/{key}", '{"k": 3}')
    assert (tmp_path / "lake" / "pca/spaces/s1/runs/r1/.metrics.json.crc").is_file()
    with pytest.raises(RuntimeError, match=r"metrics\.json was written by Spark"):
        lake.put_bytes(b'{"k": 3, "run_report": {}}', key)
    assert hadoop_fs.read_text(spark, f"file://{tmp_path}/lake/{key}") == '{"k": 3}'  # kept, still readable
    assert crc_mismatches(tmp_path / "lake") == []
    (tmp_path / "lake" / key).write_text('{"k": 4}')  # what the run report did to metrics.json
    assert crc_mismatches(tmp_path / "lake") == [str(tmp_path / "lake" / key)]
    lake.put_bytes(b"{}", layout.run_report_path(key))  # a file of its own: fine
    assert json.loads(lake.read_text("pca/spaces/s1/runs/r1/run_report.json")) == {}


def test_spark_reads_the_leases_manifests_and_shards_the_airflow_side_writes(spark, tmp_path):
    lake = LocalStorage(tmp_path / "lake")
    expected = make_landing(tmp_path / "landing")
    report = ingest.ingest(tmp_path / "landing", lake, "b1")
    assert report["uploaded"] == expected["uploaded"]
    root = f"file://{tmp_path}/lake/"
    written = sorted(p for p in (tmp_path / "lake").rglob("*") if p.is_file())
    assert written and not [p for p in written if p.name.endswith(".crc")]  # Python wrote them: no checksum
    lease = commits.read_lease(spark, root + layout.lease_key("b1"))
    assert lease is not None and lease["token"]
    manifest = json.loads(hadoop_fs.read_text(spark, root + layout.manifest_key("b1")))
    assert len(manifest["files"]) == expected["uploaded"]
    shards = spark.read.parquet(root + layout.raw_prefix("b1"))
    assert shards.count() == expected["uploaded"]
    assert spark.read.parquet(root + layout.held_index_key("b1")).count() == expected["uploaded"]
