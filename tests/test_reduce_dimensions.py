"""Step 2 on real local Spark: Spark's PCA agrees with numpy, k by variance, outputs a person reads."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruits_jobs import commits, extractors, hadoop_fs, layout, pca, spaces, tables
from fruits_jobs.common import UsageError, run_main
from fruits_jobs.moments import FOLD_ROWS, BatchMoments, Moments, MomentsBuilder, fold, half_of

pytestmark = pytest.mark.spark


def write_features(spark, root, batches, moments=True, extractor=None):
    """A features table as the features job publishes it, from given matrices: per batch, one run's
    folder, its moments (computed by the job's own fold, as the features job does) and record, then
    the table's commit. batches: {batch: (x, labels)} or {batch: (x, labels, splits)}; extractor: the
    record's (extractors.py), None as before extractors were recorded."""
    for batch_id, (x, labels, *rest) in batches.items():
        splits = rest[0] if rest else ["Training"] * len(x)
        rows = [
            (f"file:/img/{batch_id}/{label}/{i}.jpg", label, split, "h", [float(v) for v in vec])
            for i, (vec, label, split) in enumerate(zip(x, labels, splits, strict=True))
        ]
        run_id = commits.new_run_id()
        uri = layout.run_folder(layout.batch_folder(str(root), batch_id), run_id)
        spark.createDataFrame(
            rows, "path string, label string, split string, sha256 string, features array<float>"
        ).coalesce(1).write.parquet(uri)
        record = {"features": uri, "batch_id": batch_id, "featurized": len(rows), "extractor": extractor}
        if moments and rows:
            found = fold(spark.read.parquet(uri), len(x[0])).moments
            record["moments"] = layout.moments_path(layout.batch_runs_of(str(root)), batch_id, run_id)
            Path(record["moments"]).parent.mkdir(parents=True, exist_ok=True)
            Path(record["moments"]).write_bytes(found.to_bytes())
        commits.write_record(spark, str(root), batch_id, run_id, record)
        files = [f"{uri}/{name}" for name in hadoop_fs.data_files(spark, uri)]
        tables.publish_batch(str(root), tables.FEATURES_SCHEMA, batch_id, files, {"run": run_id})


def local(uri: str) -> Path:
    """A job's file: URI as a path."""
    return Path(uri.removeprefix("file:"))


def correlated(n, d, seed):
    rng = np.random.default_rng(seed)
    # a few strong directions + noise: a spectrum that decays like real features
    return (rng.normal(size=(n, 6)) * [9, 5, 3, 2, 1, 0.5]) @ rng.normal(size=(6, d)) + rng.normal(
        scale=0.3, size=(n, d)
    )


def run(spark, features, out, *extra):
    return pca.run(spark, pca.parse_args(["--features", str(features), "--output", str(out), *extra]))


def test_explained_variance_and_projection_match_numpy_svd(spark, tmp_path):
    x = correlated(60, 24, seed=1).astype(np.float32)
    labels = [f"class {i % 4}" for i in range(60)]
    write_features(spark, tmp_path / "features", {"b1": (x[:40], labels[:40]), "b2": (x[40:], labels[40:])})
    metrics = run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "0.9")

    xd = x.astype(np.float64)
    centred = xd - xd.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratios = s**2 / (s**2).sum()
    k = int(np.searchsorted(np.cumsum(ratios), 0.9) + 1)
    assert metrics["n_images"] == 60 and metrics["input_dim"] == 24  # both batches by default
    assert metrics["k"] == k
    np.testing.assert_allclose(metrics["explained_variance"], ratios[:k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["cumulative_explained_variance"], np.cumsum(ratios)[:k], rtol=1e-4, atol=1e-6)
    assert metrics["total_explained_variance"] >= 0.9 > np.cumsum(ratios)[k - 2]

    # Spark ML's PCA projects the raw (uncentred) vectors onto the components; signs are arbitrary.
    reduced = {r["path"]: r["pca"] for r in spark.read.parquet(metrics["vectors"]["b1"]).collect()}
    paths = [f"file:/img/b1/{labels[i]}/{i}.jpg" for i in range(40)]
    got = np.array([reduced[p] for p in paths])
    expected = xd[:40] @ vt[:k].T
    signs = np.sign((got * expected).sum(axis=0))
    np.testing.assert_allclose(got * signs, expected, rtol=1e-3, atol=1e-3)


def test_saved_model_is_the_k_component_model(spark, tmp_path):
    from pyspark.ml.feature import PCAModel

    x = correlated(30, 16, seed=2)
    write_features(spark, tmp_path / "features", {"b": (x, ["a", "b", "c"] * 10)})
    metrics = run(spark, tmp_path / "features", tmp_path / "pca", "--k", "3")
    model = PCAModel.load(metrics["model"])
    assert model.pc.numCols == 3 == metrics["k"] and model.pc.numRows == 16
    np.testing.assert_allclose(model.explainedVariance.toArray(), metrics["explained_variance"], rtol=1e-6)
    reduced = spark.read.parquet(metrics["vectors"]["b"])
    assert reduced.columns == ["path", "label", "split", "batch_id", "pca"]
    assert {len(r["pca"]) for r in reduced.collect()} == {3}


def test_metrics_and_plots_are_written(spark, tmp_path):
    x = correlated(40, 12, seed=3)
    write_features(spark, tmp_path / "features", {"b": (x, [f"Fruit {i % 5}" for i in range(40)])})
    metrics = run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "0.8")
    on_disk = json.loads(local(metrics["metrics"]).read_text())
    assert on_disk["k"] == metrics["k"] and on_disk["n_images"] == 40
    assert set(metrics["plots"]) == {"explained_variance", "scatter", "class_quality"}
    for path in metrics["plots"].values():
        with Image.open(local(path)) as img:
            assert img.format == "PNG" and img.size[0] >= 600


@pytest.mark.parametrize(
    "ratios,kwargs,expected",
    [
        ([0.5, 0.3, 0.1, 0.1], {"variance": 0.8}, 2),
        ([0.5, 0.3, 0.1, 0.1], {"variance": 0.81}, 3),
        ([0.5, 0.3, 0.1, 0.1], {"variance": 1.0}, 4),
        ([0.5, 0.3, 0.1, 0.0999999], {"variance": 1.0}, 4),  # float sums just under 1
        ([0.5, 0.3, 0.1, 0.1], {"k": 1}, 1),
    ],
)
def test_choose_k(ratios, kwargs, expected):
    assert spaces.choose_k(ratios, **kwargs) == expected


def test_choose_k_refuses_more_components_than_dimensions():
    with pytest.raises(spaces.SpaceError, match="--k"):
        spaces.choose_k([0.6, 0.4], k=3)


@pytest.mark.parametrize("argv,needle", [(["--k", "0"], "--k"), (["--variance", "1.5"], "--variance")])
def test_bad_arguments(argv, needle):
    with pytest.raises(UsageError, match=needle):
        pca.parse_args(["--features", "f", "--output", "o", *argv])


def test_real_sample_keeps_about_72_percent_with_50_components(spark, tmp_path, sample_features):
    """The seed's figure (73 % on the full Test set), reproduced on the shared sample's features."""
    summary, _, out = sample_features
    metrics = run(spark, out / "features", tmp_path / "pca", "--k", "50")
    assert metrics["n_images"] == summary["featurized"] == 1572
    assert 0.65 < metrics["total_explained_variance"] < 0.80


def test_moments_merged_in_any_split_equal_numpy_covariance():
    x = correlated(101, 9, seed=3)
    total = Moments.empty(9)
    for part in np.array_split(x, [1, 2, 40, 41, 90]):  # uneven parts, single rows among them
        total = total.merge(Moments.of(part))
    assert total.n == 101
    np.testing.assert_allclose(total.mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.m2 / 100, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)


def test_moments_built_in_blocks_equal_numpy_on_features_far_from_zero():
    # Features sit far from the origin (ReLU outputs): a scatter about zero would lose the small
    # eigenvalues; the builder's shift (the first block's mean) keeps them.
    x = correlated(5000, 16, seed=4) + 1000.0
    paths = [f"p{i}" for i in range(len(x))]
    builder = MomentsBuilder(16, block_rows=700)
    for part in np.array_split(np.arange(len(x)), 37):  # many small batches, as Arrow may hand them
        builder.add(x[part], ["Training"] * len(part), ["a" if i % 3 else "b" for i in part], [paths[i] for i in part])
    built = builder.result()
    assert builder.updates <= 5000 // 700 + 1  # blocks of at least 700 rows, not one update per batch (37)
    whole = built.moments
    np.testing.assert_allclose(whole.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(whole.m2 / 4999, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(built.class_means("Training")["b"], x[::3].mean(axis=0), rtol=1e-12)
    by_half = [x[[half_of(p) == h for p in paths]] for h in (0, 1)]
    np.testing.assert_allclose(built.halves[1].m2, Moments.of(by_half[1]).m2, rtol=1e-8, atol=1e-6)


def test_the_fold_reads_large_arrow_batches_whatever_the_session_s(spark):
    # The features job runs its model pass with Arrow batches of the model's size (8): the fold
    # must not inherit it (two d x d scatter merges per 8 rows cost 2.7 ms a row).
    x = correlated(5000, 8, seed=5)
    rows = [(f"file:/img/c/{i}.jpg", "c", "Training", [float(v) for v in vec], None) for i, vec in enumerate(x)]
    df = spark.createDataFrame(rows, "path string, label string, split string, features array<float>, reason string")
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
    try:
        folded = fold(df.coalesce(1), 8)
        assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "8"  # restored
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert folded.largest_batch == FOLD_ROWS
    assert folded.updates == 3  # 5000 rows in blocks of 2048
    assert folded.outcomes == {None: 5000}
    np.testing.assert_allclose(
        folded.moments.moments.m2 / 4999, np.cov(x.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-6
    )


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    "case,needle",
    [
        ("empty folder", "no committed features"),
        ("identical", "identical"),
        ("k above rank", "at most 4 principal components"),
        ("non-finite row", "b1/x/2.jpg does not hold 8 finite numbers"),
    ],
)
def test_degenerate_inputs_end_with_a_clear_message(spark, tmp_path, case, needle):
    features = tmp_path / "features"
    args = ["--variance", "0.9"]
    if case == "empty folder":
        features.mkdir()
    elif case == "identical":
        write_features(spark, features, {"b1": (np.ones((6, 8)), ["x"] * 6)})
    elif case == "k above rank":
        write_features(spark, features, {"b1": (correlated(5, 8, 1), ["x"] * 5)})
        args = ["--k", "5"]
    else:
        x = correlated(6, 8, 2)
        x[2, 3] = np.nan
        write_features(spark, features, {"b1": (x, ["x"] * 6)}, moments=False)  # the job checks as it folds
    with pytest.raises(UsageError, match=needle):
        run(spark, features, tmp_path / "pca", *args)
    assert not (tmp_path / "pca").exists()  # nothing written before the inputs are known good


def test_metrics_are_strict_json(spark, tmp_path):
    write_features(spark, tmp_path / "features", {"b1": (correlated(12, 8, 6), ["x"] * 12)})
    run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "1.0")
    metrics = strict_json(next((tmp_path / "pca").glob("spaces/*/runs/*/metrics.json")).read_text())
    assert metrics["k"] <= 11 and metrics["total_explained_variance"] == pytest.approx(1.0, abs=1e-6)


def test_real_sample_per_class_quality_is_in_the_metrics_and_a_figure(spark, tmp_path, sample_features):
    """131 classes: nearest Training centroid for each Test photo, per class, with the most
    confused pairs; the same figures in metrics.json and class_quality.png."""
    _, _, out = sample_features
    metrics = run(spark, out / "features", tmp_path / "pca", "--k", "50")
    q = metrics["class_quality"]
    assert q["centroids_from"] == "Training photos" and q["evaluated_on"].startswith("Test photos")
    assert q["n_classes"] == 131 and q["n_evaluated"] == 524
    assert 0.7 < q["overall_accuracy"] < 0.95  # 0.84 on the 1280-d features (bench/image_sizes.py)
    assert len(q["per_class_accuracy"]) == 131 and all(0 <= a <= 1 for a in q["per_class_accuracy"].values())
    worst = q["most_confused"][0]
    assert worst["photos"] >= q["most_confused"][-1]["photos"] and worst["class"] != worst["taken_for"]
    figure = Path(metrics["plots"]["class_quality"].replace("file:", "", 1))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((figure.parent / "metrics.json").read_text())["class_quality"] == q


# ---- Issue 20: one versioned space, updated in O(the new photos) --------------------------------


def classes_data(n_classes, per_class, d, seed, first_class=0):
    """Photos of classes whose centroids span directions of their own (as fruit features do), with
    Training/Test splits: a day of class c >= n_known brings variance the known classes lack."""
    directions = np.random.default_rng(7).normal(size=(200, d))
    x, labels, splits = [], [], []
    for c in range(first_class, first_class + n_classes):
        centre = directions[c] * 3
        x.append(centre + np.random.default_rng(seed * 1000 + c).normal(scale=1.0, size=(per_class, d)))
        labels += [f"class {c}"] * per_class
        splits += ["Training" if i % 3 else "Test" for i in range(per_class)]
    return np.vstack(x), labels, splits


def current_commit(pca_folder: Path) -> dict:
    """The current space's record, found as readers find it: the vectors table's newest run."""
    space, run, _ = tables.current_space(str(pca_folder.parent / "vectors"))
    return json.loads((pca_folder / "spaces" / space / "runs" / run / "metrics.json").read_text())


def test_stored_moments_merged_equal_numpy_spectrum_on_the_concatenated_features(spark, tmp_path):
    parts = {f"b{i}": (correlated(30 + 7 * i, 12, seed=i), [f"c{j % 3}" for j in range(30 + 7 * i)]) for i in range(3)}
    write_features(spark, tmp_path / "features", parts)
    stored = [
        BatchMoments.from_bytes(p.read_bytes()) for p in sorted((tmp_path / "batch_runs").glob("*/*.moments.npz"))
    ]
    total = BatchMoments.empty(12)
    for found in stored:
        total = total.merge(found)
    x = np.vstack([x for x, _ in parts.values()]).astype(np.float32).astype(np.float64)
    centred = x - x.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    spectrum, _ = spaces.spectrum_and_components(total.moments)
    assert total.moments.n == len(x)
    np.testing.assert_allclose(spectrum, s**2 / (s**2).sum(), rtol=1e-6, atol=1e-9)
    all_labels = [label for _, labels in parts.values() for label in labels]
    c1 = x[[i for i, label in enumerate(all_labels) if label == "c1"]]
    np.testing.assert_allclose(total.class_means(None)["c1"], c1.mean(axis=0), rtol=1e-6)


def test_a_day_adds_only_its_batch_and_every_batch_lives_in_one_space(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    x1, l1, s1 = classes_data(6, 30, 24, seed=1)
    write_features(spark, features, {"d1": (x1, l1, s1)})
    first = run(spark, features, out, "--k", "5")
    assert first["new_space"] and first["refit_reason"] == "the lake's first space"
    d1_files = {p: p.stat().st_mtime_ns for p in local(first["vectors"]["d1"]).rglob("*")}

    x2, l2, s2 = classes_data(6, 20, 24, seed=2)  # more photos of the same classes
    write_features(spark, features, {"d2": (x2, l2, s2)})
    second = run(spark, features, out, "--k", "5")
    assert not second["new_space"] and second["space"] == first["space"], second["drift"]
    assert second["added"] == ["d2"] and second["rows_read"] == second["rows_written"] == len(x2)
    assert set(second["vectors"]) == {"d1", "d2"} and second["vectors"]["d1"] == first["vectors"]["d1"]
    assert {p: p.stat().st_mtime_ns for p in local(first["vectors"]["d1"]).rglob("*")} == d1_files  # untouched
    assert second["n_images"] == len(x1) + len(x2)

    # One linear map from features to vectors fits every batch (Spark's uncentred projection).
    commit = current_commit(out)
    with np.load(out.parent / commit["basis"]) as z:
        components = z["components"]
    for batch, x in (("d1", x1), ("d2", x2)):
        got = {r["path"]: r["pca"] for r in spark.read.parquet(str(out.parent / commit["vectors"][batch])).collect()}
        expected = x.astype(np.float32).astype(np.float64) @ components
        ordered = np.array(
            [got[f"file:/img/{batch}/{label}/{i}.jpg"] for i, label in enumerate(l1 if batch == "d1" else l2)]
        )
        np.testing.assert_allclose(ordered, expected, rtol=1e-4, atol=1e-4)


def test_unseen_classes_start_a_new_space_and_every_batch_is_re_projected(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"d1": classes_data(6, 30, 24, seed=1)})
    first = run(spark, features, out, "--k", "5")
    x, labels, splits = classes_data(4, 30, 24, seed=3, first_class=20)  # classes the space never saw
    unlabelled = [None] * len(labels)  # the variance signal alone must see it (no labels to help)
    write_features(spark, features, {"d2": (x, unlabelled, splits)})
    second = run(spark, features, out, "--k", "5")
    assert second["new_space"] and second["space"] != first["space"], second["drift"]
    assert "lose" in second["refit_reason"] and second["drift"]["residual_ratio"] > spaces.RESIDUAL_RATIO_MAX
    assert sorted(second["added"]) == ["d1", "d2"] and second["rows_read"] == 180 + len(x)
    assert all(f"/vectors/{second['space']}/" in v for v in second["vectors"].values())


def test_refit_always_a_new_k_and_never(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"d1": classes_data(6, 30, 24, seed=1)})
    first = run(spark, features, out, "--k", "5")
    again = run(spark, features, out, "--k", "5", "--refit", "always")
    assert again["new_space"] and again["refit_reason"] == "pca_refit=always" and again["rows_read"] == 180
    new_k = run(spark, features, out, "--k", "4")
    assert new_k["new_space"] and new_k["k"] == 4 and "k=4 instead of the space's k=5" in new_k["refit_reason"]
    with pytest.raises(UsageError, match="pca_refit is 'never'"):
        run(spark, features, out, "--k", "6", "--refit", "never")
    kept = run(spark, features, out, "--k", "4", "--refit", "never", "--retention-hours", "0")
    assert not kept["new_space"] and kept["space"] == new_k["space"] and kept["rows_read"] == 0
    # Old spaces retire past the retention (here 0): the current and the previous one stay, older ones go.
    assert sorted(p.name for p in (out / "spaces").iterdir()) == sorted({new_k["space"], again["space"]})
    assert first["space"] not in {p.name for p in (out / "spaces").iterdir()}


def test_re_publishing_a_batch_counts_it_once(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    x1, l1, s1 = classes_data(6, 30, 24, seed=1)
    x2, l2, s2 = classes_data(6, 20, 24, seed=2)
    write_features(spark, features, {"d1": (x1, l1, s1), "d2": (x2, l2, s2)})
    run(spark, features, out, "--k", "5")
    write_features(spark, features, {"d2": (x2, l2, s2)})  # d2 re-published (a rerun): a new commit
    again = run(spark, features, out, "--k", "5", "--refit", "never")
    assert again["added"] == ["d2"] and again["n_images"] == len(x1) + len(x2)
    state = BatchMoments.from_bytes((out.parent / current_commit(out)["state"]).read_bytes())
    once = Moments.of(np.vstack([x1, x2]).astype(np.float32))
    assert state.moments.n == once.n
    np.testing.assert_allclose(state.moments.m2, once.m2, rtol=1e-6)
    assert sum(n for n, _ in state.classes.values()) == len(x1) + len(x2)


def test_a_lake_of_today_s_code_builds_its_first_space_from_every_published_batch(spark, tmp_path):
    """Features commits without moments, and per-batch PCA folders of the layout before spaces."""
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(
        spark, features, {"a": classes_data(3, 10, 16, seed=1), "b": classes_data(3, 10, 16, seed=2)}, moments=False
    )
    legacy = out / "batch_id=a" / "run=20250101T000000000Z-aa"
    legacy.mkdir(parents=True)
    metrics = run(spark, features, out, "--k", "3")
    assert metrics["new_space"] and sorted(metrics["vectors"]) == ["a", "b"] and metrics["n_images"] == 60
    assert not (out / "batch_id=a").exists()


def test_the_readme_snippet_reads_every_batch_once_in_one_space(spark, tmp_path):
    """The README's pyarrow snippet, run as written, on a lake of two days."""
    lake = tmp_path / "lake"
    write_features(spark, lake / "features", {"d1": classes_data(4, 12, 16, seed=1)})
    run(spark, lake / "features", lake / "pca", "--k", "3")
    write_features(spark, lake / "features", {"d2": classes_data(4, 9, 16, seed=2)})
    run(spark, lake / "features", lake / "pca", "--k", "3")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    snippet = readme.split("<!-- current-vectors -->")[1].split("```python")[1].split("```")[0]
    scope = {"LAKE": str(lake)}
    exec(snippet, scope)  # noqa: S102 - the README's own code, as a reader would run it
    table = scope["vectors"]
    assert table.num_rows == 48 + 36 and sorted(set(table.column("batch_id").to_pylist())) == ["d1", "d2"]
    assert table.column_names == ["path", "label", "split", "batch_id", "pca", "space"]
    assert len(set(table.column("space").to_pylist())) == 1
    assert len(set(table.column("path").to_pylist())) == 48 + 36


def test_hive_partitioned_readers_do_not_trip_on_the_space_folders(spark, tmp_path):
    import pyarrow.dataset as ds

    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"2026-12-01": classes_data(3, 10, 16, seed=1)})
    metrics = run(spark, features, out, "--k", "3")
    vectors = out.parent / "vectors" / metrics["space"]
    table = ds.dataset(vectors, format="parquet", partitioning="hive").to_table()
    assert table.column_names == ["path", "label", "split", "batch_id", "pca"]  # no partition column added
    assert spark.read.parquet(metrics["vectors"]["2026-12-01"]).columns == table.column_names


def test_real_sample_as_daily_batches_refits_on_unseen_fruit_only(spark, tmp_path, sample_features):
    """The shared sample's real features as five days: Training photos of 100 classes, two days of
    their Test photos, a day of the 31 other classes, and a day of pca_refit=always. Known days add
    without refit, the unseen day and the asked one start a new space, and the space's vectors cover
    every photo exactly once."""
    _, rows, _ = sample_features
    classes = sorted({r["label"] for r in rows})
    known = set(np.random.default_rng(1).permutation(classes)[:100])
    train = [r for r in rows if r["label"] in known and r["split"] == "Training"]
    test = [r for r in rows if r["label"] in known and r["split"] == "Test"]
    unseen = [r for r in rows if r["label"] not in known]
    days = {"d1": train, "d2": test[::2], "d3": test[1::2], "d4": unseen}

    def publish(batch, day_rows):
        x = np.array([r["features"] for r in day_rows])
        write_features(
            spark, tmp_path / "features", {batch: (x, [r["label"] for r in day_rows], [r["split"] for r in day_rows])}
        )

    refits = {}
    for batch, day_rows in days.items():
        publish(batch, day_rows)
        metrics = run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "0.9")
        refits[batch] = metrics["new_space"]
        if not metrics["new_space"]:
            assert metrics["rows_read"] == metrics["rows_written"] == len(day_rows)
    forced = run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "0.9", "--refit", "always")
    assert refits == {"d1": True, "d2": False, "d3": False, "d4": True} and forced["new_space"]
    assert forced["rows_read"] == len(rows)
    paths = [r["path"] for v in forced["vectors"].values() for r in spark.read.parquet(v).select("path").collect()]
    assert len(paths) == len(set(paths)) == len(rows)


def test_a_batch_with_no_featurized_photo_stays_in_the_space_with_a_vectors_file_without_rows(spark, tmp_path):
    """Its file names the run that added it in the vectors table, like any batch's: a run adding only
    such a batch is the space's current run all the same (tables.current_space)."""
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"d1": classes_data(4, 12, 16, seed=1)})
    write_features(spark, features, {"empty": (np.zeros((0, 16)), [])})  # every photo rejected: no row
    first = run(spark, features, out, "--k", "3")
    assert set(first["features_runs"]) == {"d1", "empty"} and set(first["vectors"]) == {"d1", "empty"}
    write_features(spark, features, {"d2": classes_data(4, 9, 16, seed=2)})
    second = run(spark, features, out, "--k", "3", "--refit", "never")
    assert second["added"] == ["d2"] and set(second["vectors"]) == {"d1", "empty", "d2"}
    write_features(spark, features, {"empty2": (np.zeros((0, 16)), [])})
    third = run(spark, features, out, "--k", "3", "--refit", "never")
    assert third["added"] == ["empty2"] and current_commit(out)["run"] == third["run"]
    assert vectors_by_space_and_batch(tmp_path / "vectors")[(first["space"], "d1")] == (48, 48)
    assert (first["space"], "empty2") not in vectors_by_space_and_batch(tmp_path / "vectors")  # no row


def vectors_by_space_and_batch(table_path, version=None) -> dict:
    """What a consumer reads: the vectors Delta table through its log, by DuckDB."""
    import duckdb
    from deltalake import DeltaTable

    rows = DeltaTable(str(table_path), version=version).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    found = duckdb.sql("SELECT space, batch_id, count(*), count(DISTINCT path) FROM rows GROUP BY ALL").fetchall()
    return {(space, batch): (n, distinct) for space, batch, n, distinct in found}


def test_the_vectors_table_holds_the_current_space_each_photo_once(spark, tmp_path):
    """Issue 27: a consumer reads the vectors of every published batch once, all in one space, with no
    code of ours: a kept space adds a day's partition; a re-published batch replaces its own; a new
    space replaces them all in one commit, and the version before still reads the old space."""
    from deltalake import DeltaTable

    features, out = tmp_path / "features", tmp_path / "pca"
    table = tmp_path / "vectors"
    write_features(spark, features, {"d1": classes_data(4, 10, 16, seed=1)})
    first = run(spark, features, out, "--k", "3")
    write_features(spark, features, {"d2": classes_data(4, 6, 16, seed=2)})
    second = run(spark, features, out, "--k", "3", "--refit", "never")
    space = first["space"]
    assert second["space"] == space
    assert vectors_by_space_and_batch(table) == {(space, "d1"): (40, 40), (space, "d2"): (24, 24)}
    write_features(spark, features, {"d2": classes_data(4, 5, 16, seed=3)})  # d2 re-published, smaller
    run(spark, features, out, "--k", "3", "--refit", "never")
    assert vectors_by_space_and_batch(table) == {(space, "d1"): (40, 40), (space, "d2"): (20, 20)}
    refit = run(spark, features, out, "--k", "3", "--refit", "always")
    assert vectors_by_space_and_batch(table) == {(refit["space"], "d1"): (40, 40), (refit["space"], "d2"): (20, 20)}
    before = DeltaTable(str(table)).version() - 1
    assert vectors_by_space_and_batch(table, before) == {(space, "d1"): (40, 40), (space, "d2"): (20, 20)}
    assert refit["vectors_version"] == before + 1


def test_a_space_from_before_the_vectors_table_gives_way_to_one_in_the_table(spark, tmp_path):
    """A lake whose space predates the vectors table has no space a reader can find (the table's log
    names it): the next run fits one from every published batch, into the table; the next adds its day."""
    import shutil

    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"d1": classes_data(4, 10, 16, seed=1)})
    first = run(spark, features, out, "--k", "3")
    shutil.rmtree(tmp_path / "vectors")  # as before the table
    write_features(spark, features, {"d2": classes_data(4, 6, 16, seed=2)})
    second = run(spark, features, out, "--k", "3", "--refit", "never")
    assert second["new_space"] and second["space"] != first["space"] and sorted(second["added"]) == ["d1", "d2"]
    assert vectors_by_space_and_batch(tmp_path / "vectors") == {
        (second["space"], "d1"): (40, 40),
        (second["space"], "d2"): (24, 24),
    }
    write_features(spark, features, {"d3": classes_data(4, 2, 16, seed=4)})
    third = run(spark, features, out, "--k", "3", "--refit", "never")
    assert third["added"] == ["d3"] and third["space"] == second["space"]


# ---- One extractor per space (extractors.py) -------------------------------------------------------

AT_224 = extractors.extractor("sha256:" + "a" * 64, 224, "onnxruntime", "fp32", "onnx_tf2onnx-x")
AT_128 = extractors.extractor("sha256:" + "a" * 64, 128, "onnxruntime", "fp32", "onnx_tf2onnx-x")


def test_a_batch_featurized_differently_never_joins_the_space_which_stays_as_it_was(spark, tmp_path):
    # The reproduced case: e-1 at 224 px in a space, e-2 (same classes) at 128 px, --refit auto again.
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"e-1": classes_data(6, 30, 24, seed=1)}, extractor=AT_224)
    first = run(spark, features, out, "--k", "5")
    assert first["extractor"] == AT_224
    version = tables.open_table(str(tmp_path / "vectors")).version()
    write_features(spark, features, {"e-2": classes_data(6, 30, 24, seed=2)}, extractor=AT_128)
    with pytest.raises(UsageError) as refused:
        run(spark, features, out, "--k", "5", "--refit", "auto")
    message = str(refused.value)
    assert "batch e-2" in message and "does not join" in message and "image_size: 224 -> 128" in message
    assert AT_224["id"] in message and AT_128["id"] in message and "change_extractor" in message
    assert tables.open_table(str(tmp_path / "vectors")).version() == version  # the space as it was
    assert current_commit(out)["run"] == first["run"] and set(current_commit(out)["vectors"]) == {"e-1"}
    argv = ["--features", str(features), "--output", str(out), "--k", "5"]
    assert run_main(lambda a: pca.run(spark, pca.parse_args(a)), argv) == 2  # the job's exit code


def test_a_new_extractor_s_space_starts_once_every_published_batch_has_its_features(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    d1, d2 = classes_data(6, 30, 24, seed=1), classes_data(6, 20, 24, seed=2)
    write_features(spark, features, {"d1": d1, "d2": d2}, extractor=AT_224)
    first = run(spark, features, out, "--k", "5")
    write_features(spark, features, {"d1": d1}, extractor=AT_128)  # re-featurized: d2 not yet
    with pytest.raises(UsageError, match=r"1 published batch\(es\) still have features .* \(e.g. d2\)"):
        run(spark, features, out, "--k", "5", "--change-extractor")
    assert current_commit(out)["run"] == first["run"]
    write_features(spark, features, {"d2": d2}, extractor=AT_128)
    switched = run(spark, features, out, "--k", "5", "--change-extractor")
    assert switched["new_space"] and switched["space"] != first["space"]
    assert switched["refit_reason"] == "extractor changed (image_size: 224 -> 128)"
    assert switched["extractor"] == AT_128 and sorted(switched["added"]) == ["d1", "d2"]
    assert switched["image_size"] == 128  # what `fruits similar` featurizes a query photo at
    assert current_commit(out)["extractor"] == AT_128
    again = run(spark, features, out, "--k", "5", "--refit", "never")  # the new space takes its own batches
    assert again["space"] == switched["space"] and again["added"] == []


def test_batches_featurized_differently_never_start_a_space_together(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"a": classes_data(6, 30, 24, seed=1)}, extractor=AT_224)
    write_features(spark, features, {"b": classes_data(6, 30, 24, seed=2)}, extractor=AT_128)
    with pytest.raises(UsageError, match="batches a and b were featurized differently"):
        run(spark, features, out, "--k", "5")
    assert not (tmp_path / "vectors").exists() or tables.current_space(str(tmp_path / "vectors")) is None


def test_a_space_from_before_extractors_takes_its_next_batches_extractor(spark, tmp_path):
    features, out = tmp_path / "features", tmp_path / "pca"
    write_features(spark, features, {"d1": classes_data(6, 30, 24, seed=1)})  # no extractor recorded
    assert run(spark, features, out, "--k", "5")["extractor"] is None
    write_features(spark, features, {"d2": classes_data(6, 20, 24, seed=2)}, extractor=AT_224)
    assert run(spark, features, out, "--k", "5", "--refit", "never")["extractor"] == AT_224
    write_features(spark, features, {"d3": classes_data(6, 20, 24, seed=3)}, extractor=AT_128)
    with pytest.raises(UsageError, match="does not join"):
        run(spark, features, out, "--k", "5")
    # A migrated lake's first space: batches from before the records with one that has one.
    features, out = tmp_path / "migrated" / "features", tmp_path / "migrated" / "pca"
    write_features(spark, features, {"old": classes_data(6, 30, 24, seed=1)})
    write_features(spark, features, {"new": classes_data(6, 20, 24, seed=2)}, extractor=AT_224)
    assert run(spark, features, out, "--k", "5")["extractor"] == AT_224
