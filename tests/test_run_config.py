"""One RunConfig per run, resolved from the params and the deployment's settings in the first task:
defaults, weights per backend, the EMR and local sections, and what each run looks up."""

import hashlib
from pathlib import Path

import pytest

from fruits.backends import backend_named
from fruits.config import params
from fruits.config import run as config
from fruits.config import settings as settings_module
from fruits.config.params import InvalidParam

from test_params import form_conf as _conf


def resolve(conf, settings, run_date):
    """config.resolve with this deployment's backends, as the first task calls it."""
    return config.resolve(conf, settings, run_date, backend_named)


def _settings(tmp_path, **overrides):
    s = {**config.DEFAULTS, "local_lake": str(tmp_path.with_name(tmp_path.name + "-lake"))}  # beside, not under
    s.update(overrides)
    return s


@pytest.mark.parametrize(
    "name,value",
    [
        ("backend", "emr-ish"),
        ("pca_k", True),
        ("pca_k", -3),
        ("pca_k", 1281),
        ("pca_variance", float("nan")),
        ("pca_variance", "0.9"),
        ("core_count", 2.5),
        ("task_spot_count", 99),
        ("instance_type", "M5 large"),
        ("batch_id", "../etc"),
        ("landing_dir", "/no/such/folder"),
        ("weights", "model.bin"),
        ("weights", "/no/such/file.weights.h5"),
        ("surprise", 1),
    ],
)
def test_first_task_names_the_bad_param(tmp_path, name, value):
    with pytest.raises(InvalidParam, match=f"'{name}'"):
        resolve(_conf(**{"landing_dir": str(tmp_path), name: value}), _settings(tmp_path), "2025-01-02")


def test_emr_needs_a_bucket_and_weights_it_can_reach(tmp_path):
    with pytest.raises(InvalidParam, match="fruits_bucket"):
        resolve(_conf(landing_dir=str(tmp_path), backend="emr"), _settings(tmp_path), "2025-01-02")
    with pytest.raises(InvalidParam, match="'weights'.*file not found"):
        resolve(
            _conf(landing_dir=str(tmp_path), backend="emr", weights=str(tmp_path / "w.weights.h5")),
            _settings(tmp_path, bucket="b"),
            "2025-01-02",
        )


@pytest.mark.parametrize("backend", ["local", "emr"])
def test_a_weights_file_that_is_not_keras_weights_fails_the_first_task(tmp_path, backend):
    """Before ingest (and before any cluster): a .weights.h5 that is no HDF5 file cannot be loaded."""
    bogus = tmp_path / "w.weights.h5"
    bogus.write_bytes(b"<html>a download page</html>")
    with pytest.raises(InvalidParam, match="'weights'.*not an HDF5 file"):
        resolve(
            _conf(landing_dir=str(tmp_path), backend=backend, weights=str(bogus)),
            _settings(tmp_path, bucket="b"),
            "2025-01-02",
        )


def test_a_local_run_defaults_to_the_shared_weights_like_make_run(tmp_path, monkeypatch):
    from fruits_jobs.layout import DEFAULT_WEIGHTS_FILE

    (tmp_path / "shared" / "models").mkdir(parents=True)
    genuine = tmp_path / "shared" / "models" / DEFAULT_WEIGHTS_FILE
    genuine.write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setenv("FRUITS_SHARED_DIR", str(tmp_path / "shared"))
    assert resolve(_conf(landing_dir=str(tmp_path)), _settings(tmp_path), "2025-01-02").weights == str(genuine)
    monkeypatch.setenv("FRUITS_SHARED_DIR", str(tmp_path / "none"))
    assert resolve(_conf(landing_dir=str(tmp_path)), _settings(tmp_path), "2025-01-02").weights == "imagenet"


def test_a_local_weights_file_is_staged_by_content_for_emr(tmp_path):
    """A cluster cannot read this machine's disk: the file goes to models/<sha256>.weights.h5
    (stage_code uploads it), and the job reads it there."""
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n and the rest")
    cfg = resolve(
        _conf(landing_dir=str(tmp_path), backend="emr", weights=str(weights)),
        _settings(tmp_path, bucket="b"),
        "2025-01-02",
    )
    assert cfg.weights == f"s3://b/models/{hashlib.sha256(weights.read_bytes()).hexdigest()}.weights.h5"
    assert cfg.emr.weights_file == str(weights)
    local = resolve(_conf(landing_dir=str(tmp_path), weights=str(weights)), _settings(tmp_path), "2025-01-02")
    assert (local.weights, local.emr) == (str(weights), None)  # a local run reads it where it is
    exported = tmp_path / "mobilenet.onnx"  # an ONNX export the job made keeps its kind when staged
    exported.write_bytes(b"onnx bytes")
    cfg = resolve(
        _conf(landing_dir=str(tmp_path), backend="emr", weights=str(exported)),
        _settings(tmp_path, bucket="b"),
        "2025-01-02",
    )
    assert cfg.weights == f"s3://b/models/{hashlib.sha256(b'onnx bytes').hexdigest()}.onnx"


def test_emr_serverless_needs_the_stack_s_application_and_role_and_stages_a_local_weights_file(tmp_path):
    """backend=emr_serverless (issue 30): the two stack outputs as settings, each named when missing; the
    image this checkout expects; a weights file of this machine staged by content, as for emr."""
    from fruits.backends.emr_serverless.image import image_tag

    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n and the rest")
    conf = _conf(landing_dir=str(tmp_path), backend="emr_serverless", weights=str(weights))
    outputs = {"serverless_application_id": "00app", "serverless_job_role_arn": "arn:aws:iam::1:role/r"}
    for missing in outputs:
        with pytest.raises(InvalidParam, match=f"fruits_{missing}"):
            resolve(conf, _settings(tmp_path, bucket="b", **{**outputs, missing: None}), "2025-01-02")
    with pytest.raises(InvalidParam, match="emr_serverless needs a bucket"):
        resolve(conf, _settings(tmp_path, **outputs), "2025-01-02")
    cfg = resolve(conf, _settings(tmp_path, bucket="b", **outputs), "2025-01-02")
    assert cfg.emr_serverless == config.ServerlessConfig("00app", "arn:aws:iam::1:role/r", image_tag(), str(weights))
    assert cfg.weights == f"s3://b/models/{hashlib.sha256(weights.read_bytes()).hexdigest()}.weights.h5"
    assert (cfg.emr, cfg.local, cfg.root) == (None, None, "s3://b/")
    assert config.RunConfig.from_dict(cfg.to_dict()) == cfg  # as XCom carries it


@pytest.mark.parametrize(
    "itype",
    [
        "m7g.2xlarge",
        "c6gn.4xlarge",
        "r8g.xlarge",
        "t4g.large",
        "im4gn.xlarge",
        "x2gd.xlarge",
        "m6gd.2xlarge",
        "is4gen.xlarge",
        "g5g.xlarge",
        "a1.xlarge",
    ],
)
def test_graviton_types_are_refused_with_an_x86_suggestion(tmp_path, itype):
    """Blocker 5: tensorflow-cpu has no aarch64 wheel, so an arm64 node would fail its bootstrap."""
    with pytest.raises(InvalidParam, match=r"'instance_type'.*Graviton.*x86_64.*m5\.2xlarge"):
        params.validate(_conf(instance_type=itype))
    with pytest.raises(InvalidParam, match=r"'fruits_primary_instance_type'.*Graviton.*x86_64"):
        resolve(
            _conf(landing_dir=str(tmp_path), backend="emr", weights="s3://b/w.weights.h5"),
            _settings(tmp_path, bucket="b", primary_instance_type=itype),
            "2025-01-02",
        )


def test_defaults_resolve_from_settings_and_run_date(tmp_path):
    from fruits.config.settings import shared_weights

    cfg = resolve(_conf(), _settings(tmp_path, landing_dir=str(tmp_path), bucket="fruits-prod"), "2025-01-02")
    assert (cfg.batch_id, cfg.backend, cfg.weights, cfg.landing_dir) == (
        "2025-01-02",
        "local",
        shared_weights() or "imagenet",
        str(tmp_path),
    )
    emr = resolve(
        _conf(backend="emr", batch_id="b1", pca_k=7),
        _settings(tmp_path, landing_dir=str(tmp_path), bucket="fruits-prod"),
        "2025-01-02",
    )
    assert emr.weights == "s3://fruits-prod/models/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
    assert (emr.batch_id, emr.pca_k) == ("b1", 7)
    assert config.RunConfig.from_dict(emr.to_dict()) == emr
    assert (emr.emr.core_count, emr.local, emr.root) == (2, None, "s3://fruits-prod/")


def test_a_run_looks_up_only_the_settings_it_needs(tmp_path):
    """Every unset Variable looked up is an ERROR line in Airflow 3.1's log: `make run` (local,
    landing and weights given) must look up none, an EMR run only the EMR ones."""
    looked_up = []
    settings = config.LazySettings(lambda name: looked_up.append(name) or _settings(tmp_path, bucket="b")[name])
    resolve(_conf(landing_dir=str(tmp_path), weights="random"), settings, "2025-01-02")
    expected = {"local_storage", "local_lake", "spark_master", "table_retention_hours", "precision"}
    assert set(looked_up) == expected <= settings_module.ENV_ONLY
    looked_up.clear()
    emr = resolve(
        _conf(landing_dir=str(tmp_path), backend="emr", weights="s3://b/w.weights.h5"),
        config.LazySettings(lambda name: looked_up.append(name) or _settings(tmp_path, bucket="b")[name]),
        "2025-01-02",
    )
    assert "bucket" in looked_up and "subnet_id" in looked_up and "landing_dir" not in looked_up
    assert emr.emr.service_role == config.DEFAULTS["emr_service_role"]


@pytest.mark.parametrize("where", ["root", "inside the lake", "holding the lake"])
def test_a_landing_folder_that_overlaps_the_lake_or_is_a_root_is_refused(tmp_path, where):
    lake = tmp_path / "lake"
    (lake / "raw").mkdir(parents=True)
    landing = {"root": Path("/"), "inside the lake": lake / "raw", "holding the lake": tmp_path}[where]
    with pytest.raises(InvalidParam, match="'landing_dir'.*(filesystem root|overlap)"):
        resolve(_conf(landing_dir=str(landing)), _settings(tmp_path, local_lake=str(lake)), "2025-01-02")


def test_a_rerun_needs_no_landing_folder(tmp_path):
    """A re-run reads the batch's stored photos: on a machine without data/landing it must not fail
    validate_params with "not a folder" (it did); a new batch still needs one."""
    gone = tmp_path / "data" / "landing"
    settings = _settings(tmp_path, landing_dir=str(gone))
    cfg = resolve(_conf(batch_id="t-1", rerun=True, weights="random"), settings, "2025-01-02")
    assert cfg.rerun and cfg.batch_id == "t-1"
    with pytest.raises(InvalidParam, match="'landing_dir'.*not a folder"):
        resolve(_conf(batch_id="t-1", weights="random"), settings, "2025-01-02")


@pytest.mark.parametrize("value", ["5", "-1", "nan", "a week", ""])
def test_a_table_retention_shorter_than_the_longest_job_is_refused_naming_the_setting(value):
    """A vacuum shorter than a running job would delete its files before its commit names them."""
    with pytest.raises(
        ValueError,
        match=r"table_retention_hours=.*at least 6 \(the longest job's timeout\).*FRUITS_TABLE_RETENTION_HOURS",
    ):
        config.retention_hours(value)
    assert config.retention_hours("6") == 6.0 and config.retention_hours("168") == 168.0
