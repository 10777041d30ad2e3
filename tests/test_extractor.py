"""One extractor per space, named before anything runs: how weights are named, the extractor's
digest, and the first task refusing a run whose features the current space could not take."""

import hashlib
from pathlib import Path

import pytest
from test_run_config import _settings, resolve

from fruits import pipeline
from fruits.backends import jobs
from fruits.config.params import InvalidParam
from fruits.lake.extractor import weights_sha256
from fruits.lake.storage import S3Storage
from fruits_jobs import extractors, layout

from airflow_fixtures import BUCKET
from test_params import form_conf

HDF5 = b"\x89HDF\r\n\x1a\n"


def test_weights_are_named_by_content_keras_file_or_seed_never_by_path():
    assert extractors.weights_name("/any/path/w.weights.h5", 224, "ab" * 32) == "sha256:" + "ab" * 32
    assert extractors.weights_name("s3://b/models/w.onnx", 224, "cd" * 32) == "sha256:" + "cd" * 32
    # Keras downloads one file per size it has ImageNet weights for, and the 224 px one otherwise.
    assert extractors.weights_name("imagenet", 128, None).endswith("_1.0_128_no_top.h5")
    assert extractors.weights_name("imagenet", 200, None).endswith("_1.0_224_no_top.h5")
    assert extractors.weights_name("random", 224, None) == f"random:seed-{extractors.RANDOM_SEED}"
    with pytest.raises(ValueError, match="sha256 of its bytes"):
        extractors.weights_name("/a/file.weights.h5", 224, None)


def test_the_extractor_s_id_changes_with_each_of_its_fields_and_only_with_them():
    base = extractors.extractor("sha256:" + "a" * 64, 224, "onnxruntime", "fp32", "onnx_x")
    assert base["id"] == extractors.extractor("sha256:" + "a" * 64, 224, "onnxruntime", "fp32", "onnx_x")["id"]
    changed = [
        extractors.extractor("sha256:" + "b" * 64, 224, "onnxruntime", "fp32", "onnx_x"),
        extractors.extractor("sha256:" + "a" * 64, 128, "onnxruntime", "fp32", "onnx_x"),
        extractors.extractor("sha256:" + "a" * 64, 224, "tensorflow", "fp32", "onnx_x"),
        extractors.extractor("sha256:" + "a" * 64, 224, "onnxruntime", "int8", "onnx_x"),
        extractors.extractor("sha256:" + "a" * 64, 224, "onnxruntime", "fp32", "onnx_y"),
    ]
    assert len({base["id"], *(c["id"] for c in changed)}) == 6
    assert extractors.differences(base, changed[1]) == ["image_size: 224 -> 128"]


def weights(tmp_path, content: bytes, name="w.weights.h5"):
    path = tmp_path / name
    path.write_bytes(HDF5 + content)
    return path


def space_of(path, precision="fp32") -> dict:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"space": "s-1", "extractor": extractors.extractor(f"sha256:{sha}", 224, "onnxruntime", precision, "x")}


def resolved(tmp_path, **conf):
    return resolve(form_conf(landing_dir=str(tmp_path), **conf), _settings(tmp_path), "2026-12-07")


def test_the_first_task_refuses_a_run_the_current_space_could_not_take_naming_the_param(tmp_path):
    mine = weights(tmp_path, b"the space's")
    space = space_of(mine)
    pipeline.check_extractor(resolved(tmp_path, weights=str(mine)), space)  # the same: fine
    copy = tmp_path / "elsewhere" / "copy.weights.h5"
    copy.parent.mkdir()
    copy.write_bytes(mine.read_bytes())
    pipeline.check_extractor(resolved(tmp_path, weights=str(copy)), space)  # by content, not by path

    with pytest.raises(InvalidParam, match=r"'precision': .*precision: fp32 -> int8.*change_extractor"):
        pipeline.check_extractor(resolved(tmp_path, weights=str(mine), precision="int8"), space)
    other = weights(tmp_path, b"other", "other.weights.h5")
    with pytest.raises(InvalidParam, match=r"'weights': .*current space s-1 .*weights: sha256:"):
        pipeline.check_extractor(resolved(tmp_path, weights=str(other)), space)
    with pytest.raises(InvalidParam, match="'weights': .*keras:mobilenet_v2"):
        pipeline.check_extractor(resolved(tmp_path, weights="imagenet"), space)
    # Asked for: the run goes on (every batch is featurized again, then a new space).
    pipeline.check_extractor(resolved(tmp_path, weights=str(other), change_extractor=True), space)
    with pytest.raises(InvalidParam, match="'change_extractor': .*nothing to change"):
        pipeline.check_extractor(resolved(tmp_path, weights=str(mine), change_extractor=True), space)


def test_without_a_recorded_extractor_nothing_is_compared_and_the_weights_are_not_read(tmp_path):
    gone = weights(tmp_path, b"x")
    cfg = resolved(tmp_path, weights=str(gone), precision="int8")
    gone.unlink()  # would fail the digest
    pipeline.check_extractor(cfg, None)
    pipeline.check_extractor(cfg, {"space": "s-0"})  # a space from before extractors were recorded


def test_the_precision_setting_is_the_param_s_default_and_checked_as_it_is(tmp_path):
    assert resolved(tmp_path, weights="random").precision == "fp32"
    settings = _settings(tmp_path, precision="int8")
    cfg = resolve(form_conf(landing_dir=str(tmp_path), weights="random"), settings, "2026-12-07")
    assert cfg.precision == "int8"
    with pytest.raises(ValueError, match="setting precision='fp16'.*FRUITS_PRECISION"):
        resolve(form_conf(landing_dir=str(tmp_path), weights="random"), _settings(tmp_path, precision="fp16"), "x")


def test_a_weights_object_in_the_lake_s_bucket_is_named_by_its_bytes(aws):
    import boto3

    data = HDF5 + b"weights in the bucket"
    boto3.client("s3").put_object(Bucket=BUCKET, Key="models/mine.weights.h5", Body=data)
    storage = S3Storage(BUCKET, "aws_default")
    root = f"s3://{BUCKET}/"
    assert weights_sha256(f"{root}models/mine.weights.h5", None, storage, root) == hashlib.sha256(data).hexdigest()
    assert weights_sha256("s3://another-bucket/models/w.weights.h5", None, storage, root) is None
    assert weights_sha256("imagenet", None, storage, root) is None


def test_int8_is_refused_before_anything_runs_without_calibration_photos_in_the_lake(tmp_path):
    cfg = resolved(tmp_path, weights="random", precision="int8")
    with pytest.raises(InvalidParam, match=r"'precision': int8 calibrates on Training photos in .*models/calibration/"):
        pipeline.check_calibration(cfg)
    photo = Path(cfg.uri(layout.CALIBRATION)) / "Training" / "Kiwi" / "1.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a photo")
    pipeline.check_calibration(cfg)
    assert jobs.features_args(cfg)[jobs.features_args(cfg).index("--calibration") + 1] == cfg.uri(layout.CALIBRATION)
    assert "--calibration" not in jobs.features_args(resolved(tmp_path, weights="random"))


def test_an_int8_extractor_names_its_calibration_set_so_fruits_similar_finds_the_kept_graph():
    from fruits_jobs import model

    export = model.int8_export_name("onnx_tf2onnx-1_opset-17", "0123456789ab")
    assert model.calibration_of(export) == "0123456789ab" and model.calibration_of("onnx_tf2onnx-1") is None
    weights = "sha256:" + "ab" * 32
    name = model.int8_cache_name(weights, 224, "0123456789ab")
    assert name.startswith(model.onnx_cache_name(weights, 224).removesuffix(".onnx")) and "_int8-0123456789ab_" in name
    assert name.startswith(f"mobilenet_v2_{'ab' * 32}_224px_")  # a file's: by its digest alone, as before


def test_the_calibration_set_is_training_photos_spread_over_the_paths_and_named_by_them():
    from fruits_jobs import model

    files = [(f"s3://b/cal/Training/C{c}/{i}.jpg", 1000 + i) for c in range(10) for i in range(100)]
    files += [
        ("s3://b/cal/Test/C0/t.jpg", 5),
        ("s3://b/cal/Training/C0/.DS_Store", 9),
        ("s3://b/cal/Training/C1/e.jpg", 0),
    ]
    uris, name = model.calibration_sample(sorted(files), "s3://b/cal", count=300)
    assert len(uris) == 300 and not [u for u in uris if "/Test/" in u or "DS_Store" in u or u.endswith("/e.jpg")]
    assert len({u.split("/")[-2] for u in uris}) == 10  # spread over the classes
    assert model.calibration_sample(sorted(files), "s3://b/cal", count=300)[1] == name  # by the listing alone
    more = sorted([*files, ("s3://b/cal/Training/C9/new.jpg", 7)])
    assert model.calibration_sample(more, "s3://b/cal", count=300)[1] != name  # another set, another name
