"""The feature extractor: the cheap model equals the seed's, and every weights source behaves."""

import subprocess
import sys

import numpy as np
import pytest

from fruits_jobs import model as mobilenet
from fruits_jobs.images import decode_many
from fruits_jobs.model import (
    FEATURE_DIM,
    WeightsError,
    build_model,
    featurize,
    freeze_model,
    load_model,
    worker_infer_fn,
)

pytestmark = pytest.mark.model


def test_no_top_avg_pooling_equals_the_seeds_include_top_penultimate_layer():
    """Seed notebook: MobileNetV2(include_top=True) cut at layers[-2]. Ours: include_top=False,
    pooling="avg", which skips the 1000-class head. Same weights in, same 1280 numbers out."""
    import keras

    keras.utils.set_random_seed(3)
    top = keras.applications.MobileNetV2(weights=None, include_top=True, input_shape=(224, 224, 3))
    seed_model = keras.Model(top.input, top.layers[-2].output)
    ours = build_model(224)
    ours.set_weights(top.get_weights()[:-2])  # everything but the classifier's kernel and bias
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 224, 224, 3)).astype("float32")
    expected = seed_model(x, training=False).numpy()
    got = ours(x, training=False).numpy()
    assert got.shape == expected.shape == (3, FEATURE_DIM)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert len(ours.layers) < len(top.layers)


def test_random_weights_are_seeded_and_say_so(capsys):
    first = load_model("random", 96).get_weights()
    second = load_model("random", 96).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert "NOT ImageNet" in capsys.readouterr().err


def test_genuine_weights_load_from_a_file(weights_file):
    weights = load_model(str(weights_file), 224).get_weights()
    also = load_model(f"file://{weights_file}", 224).get_weights()
    assert sum(w.size for w in weights) == 2_257_984  # the README's parameter count
    assert all(np.array_equal(a, b) for a, b in zip(weights, also, strict=True))


def test_imagenet_without_internet_fails_at_once_saying_what_to_pass(monkeypatch, tmp_path):
    import urllib.request

    # A dead proxy makes the download fail the same way wherever the test runs. urllib caches the
    # opener it builds from these variables process-wide: drop it afterwards (monkeypatch restores).
    monkeypatch.setattr(urllib.request, "_opener", None)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached copy either
    with pytest.raises(WeightsError) as exc:
        load_model("imagenet", 224)
    assert "--weights" in str(exc.value) and "weights.h5" in str(exc.value)


@pytest.mark.parametrize("source", ["/nonexistent/mobilenet.weights.h5", "s3://bucket/w.weights.h5"])
def test_unusable_sources_fail_with_the_how_to(source):
    with pytest.raises(WeightsError) as exc:
        load_model(source, 224)  # no fetcher for s3:// outside Spark
    assert "--weights" in str(exc.value)


def test_a_file_that_is_not_weights_is_refused(tmp_path):
    bogus = tmp_path / "model.weights.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError):
        load_model(str(bogus), 224)


def test_remote_sources_go_through_the_fetcher(tmp_path, weights_file):
    fetched = []

    def fetch(uri, local):
        fetched.append(uri)
        with open(local, "wb") as out:
            out.write(weights_file.read_bytes())

    weights = load_model("s3://models/mobilenet.weights.h5", 224, fetch=fetch).get_weights()
    assert fetched == ["s3://models/mobilenet.weights.h5"] and len(weights) == 260


def test_worker_model_is_built_once_and_batches_do_not_change_results():
    frozen = freeze_model(load_model("random", 96))
    calls = []

    def provider():
        calls.append(1)
        return frozen

    infer = worker_infer_fn("test-key", provider, cores=1)
    assert worker_infer_fn("test-key", provider, cores=1) is infer and len(calls) == 1
    images = np.random.default_rng(1).integers(0, 256, size=(5, 96, 96, 3), dtype=np.uint8)
    whole = featurize(infer, images, batch_size=5)
    chunks = featurize(infer, images, batch_size=2)
    assert whole.shape == (5, FEATURE_DIM) and np.isfinite(whole).all()
    np.testing.assert_allclose(whole, chunks, rtol=1e-4, atol=1e-5)


def test_the_frozen_graph_the_workers_run_equals_the_keras_model_with_preprocessing(weights_file):
    """Workers run the driver's frozen graph (weights folded in as constants), not Keras: it must
    give the Keras model's features for the same uint8 images, preprocess_input included."""
    import keras

    model = load_model(str(weights_file), 224)
    images = np.random.default_rng(2).integers(0, 256, size=(4, 224, 224, 3), dtype=np.uint8)
    scaled = keras.applications.mobilenet_v2.preprocess_input(images.astype("float32"))
    expected = model(scaled, training=False).numpy()
    got = featurize(worker_infer_fn("frozen-vs-keras", lambda: freeze_model(model), cores=2), images, 4)
    assert got.shape == (4, FEATURE_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def genuine(weights_file):
    """The Keras model with the genuine weights, and its ONNX export as the driver makes it."""
    keras_model = load_model(str(weights_file), 224)
    return keras_model, mobilenet.export_onnx(keras_model)


def test_the_onnx_engine_gives_the_keras_features_on_real_photos(genuine, sample_dir):
    """The workers' engine changes, the features do not: same decoded photos (decoded as the job
    decodes them), Keras with preprocess_input vs the ONNX export, cosine >= 0.9999 per image."""
    import keras

    keras_model, exported = genuine
    photos = sorted(sample_dir.rglob("*.jpg"))[::40][:40]  # across classes and both splits
    images, errors = decode_many(__import__("pandas").Series([p.read_bytes() for p in photos]), 224)
    assert not any(errors) and len(images) == len(photos)
    expected = keras_model(
        keras.applications.mobilenet_v2.preprocess_input(images.astype("float32")), training=False
    ).numpy()
    got = featurize(worker_infer_fn("onnx-vs-keras", lambda: exported, cores=2), images, batch_size=16)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert mobilenet.cosines(got, expected).min() >= 0.9999
    assert np.abs(got - expected).max() < 1e-3
    assert mobilenet.check_export(keras_model, exported) >= mobilenet.MIN_EXPORT_COSINE


def test_an_export_that_changes_the_features_fails_the_check(genuine):
    keras_model, _ = genuine
    other = mobilenet.export_onnx(load_model("random", 224))  # the right shape, other weights
    with pytest.raises(RuntimeError, match="differs from the Keras model.*--engine tensorflow"):
        mobilenet.check_export(keras_model, other)


def test_an_onnx_file_that_is_no_feature_extractor_for_the_size_is_refused_saying_why(genuine):
    _, exported = genuine
    with pytest.raises(WeightsError, match=r"--image-size 160 takes tensor\(uint8\) \[n, 160, 160, 3\]"):
        mobilenet.onnx_model(exported.graph, 160, "m.onnx")
    with pytest.raises(WeightsError, match="not an ONNX model.*--weights"):
        mobilenet.onnx_model(b"not onnx", 224, "m.onnx")


def test_workers_running_the_onnx_engine_never_import_tensorflow(genuine, tmp_path):
    """A fresh process, as a Python worker is: builds the session from the bytes and runs a batch."""
    _, exported = genuine
    (tmp_path / "model.onnx").write_bytes(exported.graph)
    code = f"""
import sys, numpy as np
from fruits_jobs.model import EngineModel, featurize, worker_infer_fn
graph = open({str(tmp_path / "model.onnx")!r}, "rb").read()
m = EngineModel("onnxruntime", graph, {exported.input_name!r}, {exported.output_name!r})
out = featurize(worker_infer_fn("k", lambda: m, cores=1), np.zeros((2, 224, 224, 3), np.uint8), 2)
assert out.shape == (2, 1280), out.shape
print(sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cache_name_holds_the_weights_size_and_exporter():
    name = mobilenet.onnx_cache_name("sha256:" + "ab" * 32, 192)
    assert name.startswith(f"mobilenet_v2_{'ab' * 32}_192px_tf2onnx-") and name.endswith(".onnx")
    assert f"opset-{mobilenet.ONNX_OPSET}_tf-2.19" in name and "_keras-3." in name
