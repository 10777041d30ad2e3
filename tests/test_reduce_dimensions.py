"""Step 2 on real local Spark: Spark's PCA agrees with numpy, k by variance, outputs a person reads."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruits_jobs import commits, layout, pca
from fruits_jobs.common import UsageError

pytestmark = pytest.mark.spark


def write_features(spark, root, batches):
    """A features dataset as the features job publishes it, from given matrices: per batch, one
    run's folder and its commit."""
    for batch_id, (x, labels) in batches.items():
        rows = [
            (f"file:/img/{batch_id}/{label}/{i}.jpg", label, "Training", "h", [float(v) for v in vec])
            for i, (vec, label) in enumerate(zip(x, labels, strict=True))
        ]
        folder = layout.batch_folder(str(root), batch_id)
        run_id = commits.new_run_id()
        uri = layout.run_folder(folder, run_id)
        spark.createDataFrame(
            rows, "path string, label string, split string, sha256 string, features array<float>"
        ).write.parquet(uri)
        commits.write_commit(spark, folder, run_id, {"features": uri})


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
    reduced = {r["path"]: r["pca"] for r in spark.read.parquet(metrics["reduced"]).collect()}
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
    reduced = spark.read.parquet(metrics["reduced"])
    assert reduced.columns == ["path", "label", "split", "batch_id", "pca"]
    assert {len(r["pca"]) for r in reduced.collect()} == {3}


def test_metrics_and_plots_are_written(spark, tmp_path):
    x = correlated(40, 12, seed=3)
    write_features(spark, tmp_path / "features", {"b": (x, [f"Fruit {i % 5}" for i in range(40)])})
    metrics = run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "0.8")
    run_folder = tmp_path / "pca" / f"run={metrics['run']}"
    on_disk = json.loads((run_folder / "metrics.json").read_text())
    assert on_disk["k"] == metrics["k"] and on_disk["n_images"] == 40
    for name in ("explained_variance.png", "pca_scatter.png"):
        with Image.open(run_folder / name) as img:
            assert img.format == "PNG" and img.size[0] >= 600


def test_only_the_batches_asked_for(spark, tmp_path):
    write_features(
        spark, tmp_path / "features", {"b1": (correlated(10, 8, 4), ["x"] * 10), "b2": (correlated(7, 8, 5), ["y"] * 7)}
    )
    metrics = run(spark, tmp_path / "features", tmp_path / "pca", "--k", "2", "--batch-id", "b2")
    assert metrics["n_images"] == 7


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
    assert pca.choose_k(ratios, **kwargs) == expected


def test_choose_k_refuses_more_components_than_dimensions():
    with pytest.raises(UsageError, match="--k"):
        pca.choose_k([0.6, 0.4], k=3)


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
    total = pca.Moments(0, np.zeros(9), np.zeros((9, 9)))
    for part in np.array_split(x, [1, 2, 40, 41, 90]):  # uneven parts, single rows among them
        total = total.merge(pca.Moments.of(part))
    assert total.n == 101
    np.testing.assert_allclose(total.mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.m2 / 100, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)


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
        write_features(spark, features, {"b1": (x, ["x"] * 6)})
    with pytest.raises(UsageError, match=needle):
        run(spark, features, tmp_path / "pca", *args)
    assert not (tmp_path / "pca").exists()  # nothing written before the inputs are known good


def test_metrics_are_strict_json(spark, tmp_path):
    write_features(spark, tmp_path / "features", {"b1": (correlated(12, 8, 6), ["x"] * 12)})
    run(spark, tmp_path / "features", tmp_path / "pca", "--variance", "1.0")
    metrics = strict_json(next((tmp_path / "pca").glob("run=*/metrics.json")).read_text())
    assert metrics["k"] <= 11 and metrics["total_explained_variance"] == pytest.approx(1.0, abs=1e-6)


def test_real_sample_per_class_quality_is_in_the_metrics_and_a_figure(spark, tmp_path, sample_features):
    """131 classes: nearest Training centroid for each Test photo, per class, with the most
    confused pairs; the same figures in metrics.json and class_quality.png."""
    _, _, out = sample_features
    metrics = run(spark, out / "features", tmp_path / "pca", "--k", "50")
    q = metrics["class_quality"]
    assert (q["centroids_from"], q["evaluated_on"]) == ("Training photos", "Test photos")
    assert q["n_classes"] == 131 and q["n_evaluated"] == 524
    assert 0.7 < q["overall_accuracy"] < 0.95  # 0.84 on the 1280-d features (bench/image_sizes.py)
    assert len(q["per_class_accuracy"]) == 131 and all(0 <= a <= 1 for a in q["per_class_accuracy"].values())
    worst = q["most_confused"][0]
    assert worst["photos"] >= q["most_confused"][-1]["photos"] and worst["class"] != worst["taken_for"]
    figure = Path(metrics["plots"]["class_quality"].replace("file:", "", 1))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((figure.parent / "metrics.json").read_text())["class_quality"] == q
