"""Step 1 on real local Spark: labels, splits, counts, vectors, idempotent re-runs, bad inputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruits_jobs import commits, contract, features, layout, tables

from conftest import REPO, make_jpeg

pytestmark = pytest.mark.spark


def run_job(spark, images, out, batch_id, weights="random", **extra):
    argv = [
        "--images",
        str(images),
        "--features",
        str(out / "features"),
        "--rejects",
        str(out / "rejects"),
        "--batch-id",
        batch_id,
        "--weights",
        str(weights),
        "--image-size",
        "96",
    ]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return features.run(spark, features.parse_args(argv))


def read_batch(spark, out, output, batch_id):
    """A batch's current features or rejects, read as readers must: through the table's log."""
    df = commits.read_current(spark, str(out / output), [batch_id])
    return [] if df is None else df.collect()


def counts_by_batch(spark, out, output="features"):
    df = commits.read_current(spark, str(out / output))
    return {} if df is None else {r["batch_id"]: r["count"] for r in df.groupBy("batch_id").count().collect()}


def test_sample_labels_splits_and_counts(sample_features, sample_dir):
    summary, rows, _ = sample_features
    jpgs = sorted(sample_dir.rglob("*.jpg"))
    assert summary["featurized"] == len(jpgs) == len(rows)
    # SOURCES.md sits at the top, outside any class folder: read, and rejected with that reason
    assert summary["rejects_by_reason"] == {"no_class_folder": 1}
    assert summary["read"] == summary["featurized"] + summary["rejected"]
    by_path = {r["path"].replace("file:", "", 1): r for r in rows}
    for jpg in jpgs:
        row = by_path[str(jpg)]
        assert row["label"] == jpg.parent.name and row["split"] == jpg.parent.parent.name
    labels = {r["label"] for r in rows}
    assert len(labels) == 131 and "Apple Braeburn" in labels  # names with spaces intact
    assert {r["split"] for r in rows} == {"Training", "Test"}


def test_sample_vectors_are_real_imagenet_features(sample_features):
    _, rows, _ = sample_features
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    assert x.shape == (len(rows), 1280) and np.isfinite(x).all()
    assert (x >= 0).all() and x.std() > 0.1  # ReLU6 outputs, averaged: non-negative, not constant
    # Real features separate fruit: nearest Training centroid classifies Test photos (~0.83 here).
    labels = np.array([r["label"] for r in rows])
    train = np.array([r["split"] == "Training" for r in rows])
    classes = sorted(set(labels))
    centroids = np.stack([x[train & (labels == c)].mean(axis=0) for c in classes])
    dists = ((x[~train][:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = (np.array(classes)[dists.argmin(1)] == labels[~train]).mean()
    assert accuracy > 0.75


def test_sample_summary_is_the_batch_s_run_record_and_the_table_names_its_run(sample_features):
    summary, _, out = sample_features
    record = out / "batch_runs" / "batch_id=sample" / f"{summary['run']}.json"
    assert summary["record"].endswith(str(record))
    stored = json.loads(record.read_text())
    assert stored["features"].startswith("features/batch_id=sample/run=")  # relative to its lake
    root = summary["features"][: -len(stored["features"])]
    written_after = ("record", "table_versions")  # where it went, and the tables' commits that followed
    assert layout.resolve_record(stored, root) == {k: v for k, v in summary.items() if k not in written_after}
    assert tables.current_runs(str(out / "features")) == {"sample": summary["run"]}


def test_the_batch_s_moments_are_folded_in_its_model_pass_and_equal_its_published_features(sample_features):
    # Folded where the vectors are born, in blocks of MODEL_PASS_ROWS (the model pass reads Arrow
    # batches of 8): no second pass over the staged vectors, and each vector counted once.
    from fruits_jobs.moments import MODEL_PASS_ROWS, BatchMoments, half_of

    summary, rows, _ = sample_features
    timings = summary["timings"]
    assert "fold_s" not in timings and timings["fold_worker_s"] > 0
    tasks = features.task_count(summary["read"], timings["cores"])
    assert 1 <= timings["fold_blocks"] <= summary["featurized"] // MODEL_PASS_ROWS + tasks
    stored = BatchMoments.from_bytes(Path(summary["moments"].removeprefix("file:")).read_bytes())
    x = np.array([r["features"] for r in rows], dtype=np.float32).astype(np.float64)
    assert stored.moments.n == summary["featurized"] == len(x)
    np.testing.assert_allclose(stored.moments.mean, x.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stored.moments.m2 / (len(x) - 1), np.cov(x, rowvar=False), rtol=1e-6, atol=1e-9)
    half = np.array([half_of(r["path"]) for r in rows])
    assert [h.n for h in stored.halves] == [int((half == 0).sum()), int((half == 1).sum())]
    test_apples = [i for i, r in enumerate(rows) if r["split"] == "Test" and r["label"] == "Apple Braeburn"]
    np.testing.assert_allclose(stored.class_means("Test")["Apple Braeburn"], x[test_apples].mean(axis=0), rtol=1e-9)
    assert sum(n for n, _ in stored.classes.values()) == len(x)


def test_same_image_same_vector_across_runs_and_folders_and_from_the_kept_export(spark, tmp_path, capfd):
    from fruits_jobs import model as mobilenet

    src = make_jpeg(tmp_path / "in" / "Apple" / "a.jpg", (180, 40, 40))
    shutil.copy(src, tmp_path / "in" / "Apple" / "copy.jpg")
    make_jpeg(tmp_path / "in" / "Lemon" / "b.jpg", (230, 220, 60))
    cache = tmp_path / "models"
    run_job(spark, tmp_path / "in", tmp_path / "o1", "b1", model_cache=cache)
    # random's export is kept too, named by its seed: the next spark-submit on the lake skips TensorFlow
    (kept,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert kept.name == mobilenet.onnx_cache_name("random:seed-1234", 96) and "random-seed-1234_96px" in kept.name
    capfd.readouterr()
    run_job(spark, tmp_path / "in", tmp_path / "o2", "b1", model_cache=cache)
    assert f"model: the ONNX export of random from {kept}" in capfd.readouterr().err
    first = {r["path"]: r for r in read_batch(spark, tmp_path / "o1", "features", "b1")}
    second = {r["path"]: r for r in read_batch(spark, tmp_path / "o2", "features", "b1")}
    assert first.keys() == second.keys() and len(first) == 3
    for path in first:
        np.testing.assert_allclose(first[path]["features"], second[path]["features"], rtol=1e-5, atol=1e-6)
    a, copy = (first[p] for p in sorted(first) if "/Apple/" in p)
    assert a["sha256"] == copy["sha256"]
    np.testing.assert_allclose(a["features"], copy["features"], rtol=1e-5, atol=1e-6)
    lemon = next(r for r in first.values() if r["label"] == "Lemon")
    assert not np.allclose(lemon["features"], a["features"], rtol=1e-2, atol=0)  # random weights: tiny values


def test_each_batch_s_record_moments_and_commit_carry_the_extractor_that_made_its_features(spark, tmp_path):
    from fruits_jobs import extractors, model
    from fruits_jobs.moments import BatchMoments

    make_jpeg(tmp_path / "in" / "Apple" / "a.jpg", (180, 40, 40))
    summary = run_job(spark, tmp_path / "in", tmp_path / "o", "b1")
    made_by = summary["extractor"]
    assert made_by == extractors.extractor(
        f"random:seed-{extractors.RANDOM_SEED}", 96, "onnxruntime", "fp32", model.export_name("onnxruntime", False)
    )
    record = json.loads((tmp_path / "o" / "batch_runs" / "batch_id=b1" / f"{summary['run']}.json").read_text())
    assert record["extractor"] == made_by
    assert BatchMoments.extractor_of(Path(summary["moments"].removeprefix("file:")).read_bytes()) == made_by
    commit = tables.open_table(str(tmp_path / "o" / "features")).history(1)[0]
    assert commit["extractor"] == made_by["id"]
    other = run_job(spark, tmp_path / "in", tmp_path / "o", "b1", image_size=64)["extractor"]
    assert other["id"] != made_by["id"] and extractors.differences(made_by, other) == ["image_size: 96 -> 64"]


def test_int8_is_made_once_per_weights_size_and_calibration_set_and_stays_close_to_fp32(
    spark, weights_file, sample_dir, tmp_path, capfd
):
    from fruits_jobs import model

    calibration, photos = tmp_path / "calibration", tmp_path / "in"
    for jpg in sorted((sample_dir / "Training").rglob("*.jpg"))[::25]:
        (calibration / "Training" / jpg.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(jpg, calibration / "Training" / jpg.parent.name / jpg.name)
    (calibration / "Test").mkdir()
    shutil.copy(next((sample_dir / "Test").rglob("*.jpg")), calibration / "Test" / "never-calibrates.jpg")
    for jpg in sorted((sample_dir / "Test").rglob("*.jpg"))[::40]:
        (photos / jpg.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(jpg, photos / jpg.parent.name / jpg.name)
    cache = tmp_path / "models"
    common = {"weights": weights_file, "model_cache": cache}
    fp32 = run_job(spark, photos, tmp_path / "fp32", "b1", **common)
    int8 = run_job(spark, photos, tmp_path / "int8", "b1", precision="int8", calibration=calibration, **common)
    err = capfd.readouterr().err
    assert "quantized to INT8 on 42 calibration photos" in err  # the Training ones only
    assert int8["extractor"]["precision"] == "int8" and "+int8-qdq" in int8["extractor"]["export"]
    assert (
        int8["extractor"]["weights"] == fp32["extractor"]["weights"]
        and int8["extractor"]["id"] != fp32["extractor"]["id"]
    )
    (kept,) = [p for p in cache.iterdir() if "_int8-" in p.name and not p.name.startswith(".")]
    again = run_job(spark, photos, tmp_path / "again", "b1", precision="int8", calibration=calibration, **common)
    assert f"the INT8 graph from {kept}" in capfd.readouterr().err and again["extractor"] == int8["extractor"]
    a, b = (
        {r["path"]: r["features"] for r in read_batch(spark, tmp_path / o, "features", "b1")} for o in ("fp32", "int8")
    )
    assert a.keys() == b.keys() and len(a) > 5
    paths = sorted(a)
    assert model.cosines(np.array([b[p] for p in paths]), np.array([a[p] for p in paths])).mean() > 0.9
    with pytest.raises(features.UsageError, match="--precision int8 needs --calibration"):
        run_job(spark, photos, tmp_path / "none", "b1", precision="int8", **common)


def test_refeaturize_published_switches_every_batch_in_one_commit_of_each_table(spark, tmp_path):
    from deltalake import DeltaTable

    lake = tmp_path / "lake"

    def store(batch, colour, broken=True):  # a batch's photos as ingest stores them, and its manifest
        make_jpeg(lake / "raw" / f"batch_id={batch}" / "Apple" / "a.jpg", colour)
        files = [{"path": "Apple/a.jpg"}]
        if broken:
            (lake / "raw" / f"batch_id={batch}" / "Apple" / "broken.jpg").write_bytes(b"not a photo")
            files.append({"path": "Apple/broken.jpg"})
        manifest = lake / "manifests" / f"batch_id={batch}.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"files": files}))
        return lake / "raw" / f"batch_id={batch}", manifest

    for batch, colour in (("d1", (180, 40, 40)), ("d2", (40, 180, 40))):
        images, manifest = store(batch, colour)
        run_job(spark, images, lake, batch, manifest=manifest)
    old_runs = tables.current_runs(str(lake / "features"))
    versions = {name: DeltaTable(str(lake / name)).version() for name in ("features", "rejects")}
    images, manifest = store("d3", (230, 220, 60), broken=False)
    switch = run_job(spark, images, lake, "d3", manifest=manifest, image_size=64, refeaturize_published=lake)
    assert switch["batch_id"] == "d3" and switch["refeaturized"]["batches"] == ["d3", "d1", "d2"]
    assert (switch["refeaturized"]["read"], switch["refeaturized"]["featurized"]) == (5, 3)
    # One commit of each table switched the three batches: no version shows a mix of extractors.
    assert {name: DeltaTable(str(lake / name)).version() for name in ("features", "rejects")} == {
        name: v + 1 for name, v in versions.items()
    }
    assert tables.current_runs(str(lake / "features")) == dict.fromkeys(("d1", "d2", "d3"), switch["run"])
    for batch in ("d1", "d2"):
        record = json.loads((lake / "batch_runs" / f"batch_id={batch}" / f"{switch['run']}.json").read_text())
        assert record["extractor"]["image_size"] == 64 and record["token"] is None and record["read"] == 2
        assert [r["reason"] for r in read_batch(spark, lake, "rejects", batch)] == ["not_an_image"]
        assert old_runs[batch] != switch["run"]
    # With no batch of the day: every published batch again, and nothing else.
    common = ["--features", str(lake / "features"), "--rejects", str(lake / "rejects"), "--weights", "random"]
    alone = features.run(spark, features.parse_args([*common, "--refeaturize-published", str(lake)]))
    assert "batch_id" not in alone and alone["refeaturized"]["batches"] == ["d1", "d2", "d3"]
    assert tables.current_runs(str(lake / "features")) == dict.fromkeys(("d1", "d2", "d3"), alone["run"])
    with pytest.raises(features.UsageError, match="--images and --batch-id are required"):
        features.parse_args(common)
    local = "spark.sql.sources.parallelPartitionDiscovery.threshold"  # the session main() builds for it
    assert local in features.spark_conf(features.parse_args([*common, "--refeaturize-published", str(lake)]))
    assert local not in features.spark_conf(features.parse_args([*common, "--refeaturize-published", "s3://b/"]))


def two_landings(root: Path) -> None:
    """root/a: 3 Kiwi photos and a broken file; root/b: 2 Plum photos (two days' landing folders)."""
    for i in range(3):
        make_jpeg(root / "a" / "Kiwi" / f"{i}.jpg", (100 + 40 * i, 90, 50))
    for i in range(2):
        make_jpeg(root / "b" / "Plum" / f"{i}.jpg", (90, 30, 100 + 50 * i))
    (root / "a" / "Kiwi" / "bad.jpg").write_bytes(b"garbage")


def test_rerun_replaces_only_its_batch(spark, tmp_path):
    two_landings(tmp_path)
    out = tmp_path / "out"
    run_job(spark, tmp_path / "a", out, "day1")
    run_job(spark, tmp_path / "b", out, "day2")
    run_job(spark, tmp_path / "a", out, "day1")  # the same batch again: no duplicates
    assert counts_by_batch(spark, out) == {"day1": 3, "day2": 2}
    assert counts_by_batch(spark, out, "rejects") == {"day1": 1}

    # the previous current run stays for readers mid-read: its features and its rejects alike (the
    # rejects' folder has no commits of its own: the features' commits decide for both)
    def runs(dataset):
        return sorted(p.name for p in (out / dataset / "batch_id=day1").glob("run=*"))

    assert runs("rejects") == runs("features") and len(runs("features")) == 2
    # the batch shrinks and loses its bad file: both partitions follow, day2 untouched
    (tmp_path / "a" / "Kiwi" / "bad.jpg").unlink()
    (tmp_path / "a" / "Kiwi" / "2.jpg").unlink()
    summary = run_job(spark, tmp_path / "a", out, "day1")
    assert (summary["featurized"], summary["rejected"]) == (2, 0)
    assert counts_by_batch(spark, out) == {"day1": 2, "day2": 2}
    assert counts_by_batch(spark, out, "rejects") == {}


def test_a_run_without_its_commit_is_never_read_and_a_vacuum_past_the_retention_removes_it(spark, tmp_path):
    """Killed between writing its features and its rejects (or before the table's commit), a run must
    change nothing readers see: its folders exist but no log names them. A later run's vacuum deletes
    them once they are older than the retention (here 0 hours), never before."""
    for i in range(2):
        make_jpeg(tmp_path / "in" / "Fig" / f"{i}.jpg", (120, 60 + 60 * i, 90))
    out = tmp_path / "out"
    first = run_job(spark, tmp_path / "in", out, "b1")
    killed = commits.new_run_id()
    orphan = out / "features" / "batch_id=b1" / f"run={killed}"
    spark.createDataFrame(
        [("file:/x/Fig/9.jpg", "Fig", None, "h", [0.0])],
        "path string, label string, split string, sha256 string, features array<float>",
    ).write.parquet(str(orphan))
    (out / "batch_runs" / "_staging" / killed).mkdir(parents=True)
    assert sorted(r["path"] for r in read_batch(spark, out, "features", "b1")) == sorted(
        r["path"] for r in spark.read.parquet(first["features"]).collect()
    )
    second = run_job(spark, tmp_path / "in", out, "b1")  # the default retention: a week
    assert second["run"] > killed > first["run"]
    assert orphan.exists() and (out / "batch_runs" / "_staging" / killed).exists()
    assert len(read_batch(spark, out, "features", "b1")) == 2
    run_job(spark, tmp_path / "in", out, "b1", retention_hours=0)
    assert not orphan.exists() and not (out / "batch_runs" / "_staging" / killed).exists()
    assert len(read_batch(spark, out, "features", "b1")) == 2
    assert len(list((out / "features" / "batch_id=b1").glob("run=*"))) == 1  # the replaced runs' too


def test_every_bad_input_kind_is_a_reasoned_reject_and_counts_add_up(spark, tmp_path):
    root = tmp_path / "in"
    make_jpeg(root / "Training" / "Pear" / "ok.jpg", (200, 200, 50))
    Image.new("RGBA", (80, 80), (0, 200, 0, 128)).save(root / "Training" / "Pear" / "ok_rgba.png")
    bad = root / "Training" / "Pear"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not a photo")
    (bad / "truncated.jpg").write_bytes((root / "Training" / "Pear" / "ok.jpg").read_bytes()[:300])
    Image.new("L", (1200, 1200)).save(bad / "bomb.png")  # > --max-pixels below
    (bad / "huge.jpg").write_bytes(b"\xff\xd8" + b"\x00" * 3_000_000)  # > --max-file-bytes below
    Image.new("RGB", (32, 32)).save(bad / "icon.ico")
    (bad / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    make_jpeg(bad / "._ok.jpg")  # macOS AppleDouble twin
    make_jpeg(root / "_private" / "x.jpg")  # a folder Spark would skip silently
    make_jpeg(root / "loose.jpg")  # no class folder
    summary = run_job(spark, root, tmp_path / "out", "odd", max_pixels=1_000_000, max_file_bytes=1_000_000)
    rejects = {Path(r["path"]).name: r["reason"] for r in read_batch(spark, tmp_path / "out", "rejects", "odd")}
    assert rejects == {
        "empty.jpg": "empty_file",
        "notes.txt": "not_an_image",
        "truncated.jpg": "truncated",
        "bomb.png": "decompression_bomb",
        "huge.jpg": "file_too_large",
        "icon.ico": "unsupported_format",
        ".DS_Store": "hidden_file",
        "._ok.jpg": "hidden_file",
        "x.jpg": "hidden_file",
        "loose.jpg": "no_class_folder",
    }
    all_files = [p for p in root.rglob("*") if p.is_file()]
    assert summary["read"] == len(all_files) == summary["featurized"] + summary["rejected"]
    assert summary["featurized"] == 2
    assert sum(summary["rejects_by_reason"].values()) == summary["rejected"] == len(rejects)


@pytest.mark.parametrize(
    "files, cores, expected",
    [
        (42, 2, 2),  # a small batch still uses every core
        (3_144, 2, 2),  # the benchmark: one long task per core, not Spark's ~100 small ones
        (10_001, 2, 6),  # then ~2,000 images per task
        (10_001, 64, 64),  # a big cluster: at least one task per core
    ],
)
def test_the_model_pass_runs_few_large_tasks_and_uses_every_core(files, cores, expected):
    assert features.task_count(files, cores) == expected


def test_bad_arguments_are_refused_before_any_work():
    for argv, needle in [
        (["--batch-id", "../etc"], "--batch-id"),
        (["--batch-id", "_x"], "--batch-id"),
        (["--batch-id", "ok", "--image-size", "5"], "--image-size"),
    ]:
        with pytest.raises(features.UsageError, match=needle):
            features.parse_args(["--images", "x", "--features", "y", "--rejects", "z", "--weights", "random"] + argv)


def spark_submit_cmd(*args):
    spark_submit = Path(sys.executable).with_name("spark-submit")
    return [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false", *map(str, args)]


def test_cli_contract_prints_json_last_and_exits_cleanly_on_bad_weights(tmp_path, random_export):
    make_jpeg(tmp_path / "in" / "Fig" / "1.jpg")
    common = [
        "--images",
        tmp_path / "in",
        "--features",
        tmp_path / "f",
        "--rejects",
        tmp_path / "r",
        "--batch-id",
        "cli",
    ]
    ok = subprocess.run(
        spark_submit_cmd(
            REPO / "spark_jobs" / "extract_features.py",
            *common,
            "--weights",
            "random",
            "--model-cache",
            random_export.parent,
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    last = json.loads(ok.stdout.strip().splitlines()[-1])
    assert (last["read"], last["featurized"], last["batch_id"]) == (1, 1, "cli")
    bad = subprocess.run(
        spark_submit_cmd(
            REPO / "spark_jobs" / "extract_features.py", *common, "--weights", tmp_path / "missing.weights.h5"
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    # spark-submit's PythonRunner merges the driver's stderr into stdout when they are pipes
    assert bad.returncode == 3 and "error: weights file not found" in bad.stdout + bad.stderr


def test_a_killed_run_leaves_the_published_partition_intact(spark, tmp_path, random_export):
    """Publish happens only after the one model pass is staged; kill the job during that pass."""
    src = tmp_path / "in"
    for i in range(2):
        make_jpeg(src / "Fig" / f"{i}.jpg", (120, 60 + 60 * i, 90))
    out = tmp_path / "out"
    run_job(spark, src, out, "b1")
    before = sorted(r["path"] for r in read_batch(spark, out, "features", "b1"))
    for i in range(2, 300):
        make_jpeg(src / "Fig" / f"{i}.jpg", (i % 255, 60, 90))
    proc = subprocess.Popen(
        spark_submit_cmd(
            REPO / "spark_jobs" / "extract_features.py",
            "--images",
            src,
            "--features",
            out / "features",
            "--rejects",
            out / "rejects",
            "--batch-id",
            "b1",
            "--weights",
            "random",
            "--batch-size",
            "4",
            "--model-cache",  # its export made already: the kill lands in the model pass all the same
            random_export.parent,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        staging = out / "batch_runs" / "_staging"
        # the model pass has started writing once a task's temporary output appears
        while time.time() < deadline and not any(p.name.startswith("part-") for p in staging.rglob("*")):
            assert proc.poll() is None, "the job ended before it could be interrupted"
            time.sleep(0.2)
        assert time.time() < deadline, "the staging write never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    after = sorted(r["path"] for r in read_batch(spark, out, "features", "b1"))
    assert after == before
    # the next run commits; what the killed one left stays unread until it is older than the retention
    run_job(spark, src, out, "b1")
    assert len(read_batch(spark, out, "features", "b1")) == 300
    runs = sorted(p.name for p in (out / "features" / "batch_id=b1").glob("run=*"))
    assert len(runs) == 2  # the previous current one (kept for readers mid-read), the current
    assert [p.name for p in (out / "batch_runs" / "_staging").iterdir()]  # the killed run's, until the retention
    third = run_job(spark, src, out, "b1", retention_hours=0)
    runs = sorted(p.name for p in (out / "features" / "batch_id=b1").glob("run=*"))
    assert runs == [f"run={third['run']}"]
    assert [p.name for p in (out / "batch_runs" / "_staging").iterdir()] == []


def test_with_a_manifest_the_job_reads_exactly_the_files_it_lists(spark, tmp_path):
    """An object under the batch's prefix that the manifest does not list belongs to no batch (it
    used to be featurized, duplicating photos across batches); one it lists but storage lacks is
    a reject, so read == the manifest's count."""
    root = tmp_path / "raw"
    for name in ("a.jpg", "b.jpg", "stray.jpg"):
        make_jpeg(root / "Fig" / name, (40 * len(name), 90, 60))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [{"path": "Fig/a.jpg"}, {"path": "Fig/b.jpg"}, {"path": "Fig/gone.jpg"}]}))
    summary = run_job(spark, root, tmp_path / "out", "m1", manifest=manifest)
    assert (summary["read"], summary["featurized"], summary["rejects_by_reason"]) == (3, 2, {"not_found": 1})
    assert summary["not_in_manifest"] == 1 and summary["not_in_manifest_examples"][0].endswith("Fig/stray.jpg")
    assert sorted(Path(r["path"]).name for r in read_batch(spark, tmp_path / "out", "features", "m1")) == [
        "a.jpg",
        "b.jpg",
    ]


def test_the_job_on_onnx_runtime_gives_the_tensorflow_paths_features(
    spark, sample_features, sample_dir, weights_file, tmp_path
):
    """End to end on the real sample: the default engine (ONNX Runtime) against the previous
    TensorFlow path (--engine tensorflow), per photo, cosine >= 0.9999, on a photo of each class and
    split (TensorFlow is the slow path: the whole sample took it 40 s more and found nothing more)."""
    summary, rows, _ = sample_features
    assert summary["engine"] == "onnxruntime"
    first = {}
    for path in sorted(p.relative_to(sample_dir).as_posix() for p in sample_dir.rglob("*.jpg")):
        first.setdefault(path.rsplit("/", 1)[0], path)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [{"path": path} for path in first.values()]}))
    tf_summary = features.run(
        spark,
        features.parse_args(
            [
                "--images",
                str(sample_dir),
                "--features",
                str(tmp_path / "features"),
                "--rejects",
                str(tmp_path / "rejects"),
                "--batch-id",
                "sample",
                "--weights",
                str(weights_file),
                "--engine",
                "tensorflow",
                "--manifest",
                str(manifest),
            ]
        ),
    )
    assert tf_summary["featurized"] == len(first) > 200  # every class's folder in both splits
    reference = {r["path"]: np.array(r["features"]) for r in read_batch(spark, tmp_path, "features", "sample")}
    got = np.array([r["features"] for r in rows if r["path"] in reference])
    expected = np.array([reference[r["path"]] for r in rows if r["path"] in reference])
    assert len(got) == len(first)
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.9999, cosine.min()


def test_the_export_is_kept_by_content_and_reused_and_an_onnx_file_can_be_the_weights(
    spark, weights_file, tmp_path, capfd
):
    from fruits_jobs import model as mobilenet
    from fruits_jobs.digests import file_digests

    make_jpeg(tmp_path / "in" / "Apple" / "a.jpg", (180, 40, 40))
    make_jpeg(tmp_path / "in" / "Lemon" / "b.jpg", (230, 220, 60))
    cache = tmp_path / "models"
    run_job(spark, tmp_path / "in", tmp_path / "o1", "b1", weights=weights_file, model_cache=cache)
    (kept,) = [p for p in cache.iterdir() if not p.name.startswith(".")]  # renamed; named by content
    assert not [p for p in cache.iterdir() if p.name.endswith(".onnx") and p != kept]  # no temporary left
    assert kept.name == mobilenet.onnx_cache_name("sha256:" + file_digests(weights_file, "sha256")[0], 96)
    err = capfd.readouterr().err
    assert "exported to ONNX" in err or "made earlier by this process" in err  # (or by an earlier test)
    # progress while the model pass runs: on stderr (the task log) and beside the features (the EMR sensor)
    assert "Spark UI: " in err and "progress: 2/2 images (100.0 %)" in err
    assert json.loads((tmp_path / "o1" / "batch_runs" / "_progress" / "batch_id=b1.json").read_text())["done"] == 2
    mtime = kept.stat().st_mtime_ns
    run_job(spark, tmp_path / "in", tmp_path / "o2", "b1", weights=weights_file, model_cache=cache)
    assert f"from {cache}/{kept.name}" in capfd.readouterr().err and kept.stat().st_mtime_ns == mtime
    run_job(spark, tmp_path / "in", tmp_path / "o3", "b1", weights=kept)  # the export itself as --weights
    vectors = [
        {r["path"]: r["features"] for r in read_batch(spark, tmp_path / o, "features", "b1")}
        for o in ("o1", "o2", "o3")
    ]
    assert vectors[0].keys() == vectors[1].keys() == vectors[2].keys() and len(vectors[0]) == 2
    for path in vectors[0]:
        np.testing.assert_allclose(vectors[1][path], vectors[0][path], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(vectors[2][path], vectors[0][path], rtol=1e-6, atol=1e-7)
    with pytest.raises(features.UsageError, match="--engine onnxruntime only"):
        run_job(spark, tmp_path / "in", tmp_path / "o4", "b1", weights=kept, engine="tensorflow")


def test_workers_count_their_images_where_the_driver_reads_them(tmp_path):
    """Local mode: each Python worker's count moves with every batch, not only when its task ends."""
    from fruits_jobs import progress

    counter = progress.WorkerCounter(str(tmp_path))  # outside Spark: named by the process
    counter.add(8)
    assert progress.counted_by_workers(str(tmp_path)) == 8
    counter._written = 0.0  # the next write is due
    counter.add(8)
    other = progress.WorkerCounter(str(tmp_path))
    other.path = str(tmp_path / "other.json")
    other.add(3)
    assert progress.counted_by_workers(str(tmp_path)) == 19
    assert progress.WorkerCounter(str(tmp_path / "not-on-this-machine")).path is None
    line = progress.describe(done=500, total=2000, elapsed_s=10)
    assert progress.format_line(line) == "progress: 500/2000 images (25.0 %), 50.0 images/s, ~30 s left"


def odd_landing(root):
    """Photos and every odd file ingest uploads (it skips OS junk and hidden names itself)."""
    make_jpeg(root / "Training" / "Pear" / "ok.jpg", (200, 200, 50))
    make_jpeg(root / "Test" / "Fig" / "ok 2.jpg", (20, 100, 50))  # a space: the path stays as landed
    Image.new("RGBA", (80, 80), (0, 200, 0, 128)).save(root / "Training" / "Pear" / "ok_rgba.png")
    bad = root / "Training" / "Pear"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not a photo")
    (bad / "truncated.jpg").write_bytes((root / "Training" / "Pear" / "ok.jpg").read_bytes()[:300])
    Image.new("L", (1200, 1200)).save(bad / "bomb.png")  # > --max-pixels below
    (bad / "huge.jpg").write_bytes(b"\xff\xd8" + b"\x00" * 3_000_000)  # > the job's --max-file-bytes below
    with open(bad / "giant.jpg", "wb") as f:  # > ingest's (and the job's default) limit: never packed
        f.truncate(contract.DEFAULT_MAX_FILE_BYTES + 1)
    Image.new("RGB", (32, 32)).save(bad / "icon.ico")


def test_packed_and_loose_batches_end_the_same_every_photo_counted_once(spark, tmp_path):
    """The same landing folder ingested as shards and as one object per photo (a batch of before
    shards): the same outcome for every photo, under the same logical path, and read == listed."""
    from fruits.lake.ingest import ingest
    from fruits.lake.storage import LocalStorage

    odd_landing(tmp_path / "landing")
    outcomes = {}
    for form in (contract.PACKED, contract.LOOSE):
        lake = tmp_path / form
        ingest(tmp_path / "landing", LocalStorage(lake), "b1", form=form, shard_bytes=3000)
        summary = run_job(
            spark,
            lake / "raw" / "batch_id=b1",
            lake,
            "b1",
            manifest=lake / "manifests" / "batch_id=b1.json",
            lease=lake / "manifests" / "batch_id=b1.lease",
            max_pixels=1_000_000,
            max_file_bytes=1_000_000,
        )
        listed = json.loads((lake / "manifests" / "batch_id=b1.json").read_text())["files"]
        assert summary["read"] == len(listed) == 10 == summary["featurized"] + summary["rejected"]
        assert summary["not_in_manifest"] == 0
        prefix = f"file:{lake}/raw/batch_id=b1/"
        rows = read_batch(spark, lake, "features", "b1") + read_batch(spark, lake, "rejects", "b1")
        paths = [r["path"] for r in rows]
        assert len(paths) == len(set(paths)) == 10 and all(p.startswith(prefix) for p in paths)
        outcomes[form] = {
            r["path"][len(prefix) :]: (r["label"], r["split"], r["reason"] if "reason" in r else None) for r in rows
        }
    if len(list((tmp_path / contract.PACKED / "raw" / "batch_id=b1").iterdir())) < 2:
        pytest.fail("the packed batch should span several shards here")
    assert outcomes[contract.PACKED] == outcomes[contract.LOOSE]
    assert outcomes[contract.PACKED]["Training/Pear/giant.jpg"][2] == "file_too_large"
    assert outcomes[contract.PACKED]["Test/Fig/ok 2.jpg"] == ("Fig", "Test", None)


def test_shards_are_read_in_tasks_of_about_one_row_group():
    """A day's 100,000 photos of ~5 KB: ~2,000 photos (one row group) per task, not one task per shard."""
    assert features.split_bytes(500_000_000, 100_000, 8) == 10_000_000  # 50 tasks
    assert features.split_bytes(1_000, 10, 2) == 1 << 20  # a tiny batch: no split below 1 MB
