"""The feature extractor: the cheap model equals the seed's, and every weights source behaves."""
import numpy as np
import pytest

from fruits_jobs.model import (FEATURE_DIM, WeightsError, build_model, featurize, freeze_model,
                               load_model, worker_infer_fn)


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
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert "NOT ImageNet" in capsys.readouterr().err


def test_genuine_weights_load_from_a_file(weights_file):
    weights = load_model(str(weights_file), 224).get_weights()
    also = load_model(f"file://{weights_file}", 224).get_weights()
    assert sum(w.size for w in weights) == 2_257_984  # the README's parameter count
    assert all(np.array_equal(a, b) for a, b in zip(weights, also))


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
