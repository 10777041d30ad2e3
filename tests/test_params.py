"""The trigger form's params: what the form shows, what it refuses, and the first task's own check of
the same schemas (plus what a schema cannot say)."""

import copy

import pytest
from airflow.exceptions import ParamValidationError

from fruits.config import params
from fruits.config.params import InvalidParam


def form_conf(**overrides):
    """The form's defaults, with overrides: what a trigger's conf holds."""
    conf = {k: v.value for k, v in params.build_params().items()}
    conf.update(overrides)
    return conf


def test_params_form(pipeline_dag):
    p = pipeline_dag.params
    assert list(p.keys()) == [
        "batch_id",
        "landing_dir",
        "backend",
        "pca_k",
        "pca_variance",
        "pca_refit",
        "weights",
        "precision",
        "change_extractor",
        "rerun",
        "instance_type",
        "core_count",
        "task_spot_count",
    ]
    assert p.get_param("backend").schema["enum"] == ["emr", "emr_serverless", "local"]
    assert p["backend"] == "local"  # the embedded default: no cloud needed
    assert p["batch_id"] is None and p["pca_k"] is None and p["pca_variance"] == 0.95
    assert p["pca_refit"] == "auto" and p.get_param("pca_refit").schema["enum"] == ["auto", "always", "never"]
    for name in p.keys():
        assert p.get_param(name).description, name
    # EMR-only fields in their own section of the form; the batch-id rule in words
    assert {n for n in p.keys() if p.get_param(n).schema.get("section")} == {
        "instance_type",
        "core_count",
        "task_spot_count",
    }
    assert "letters, digits" in p.get_param("batch_id").description


@pytest.mark.parametrize(
    "name,value",
    [
        ("backend", "gcp"),
        ("pca_k", 0),
        ("pca_k", "ten"),
        ("pca_k", 1281),
        ("pca_variance", 1.5),
        ("pca_variance", 0),
        ("core_count", 0),
        ("task_spot_count", -1),
        ("instance_type", "huge"),
        ("batch_id", "a/b"),
        ("pca_refit", "sometimes"),
        ("pca_refit", None),
    ],
)
def test_the_form_rejects_bad_values(pipeline_dag, name, value):
    form = copy.deepcopy(pipeline_dag.params)
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {name}:"):
        form[name] = value  # what the trigger form and the API do with a conf value


@pytest.mark.parametrize(
    "itype",
    [
        "m5.2xlarge",
        "m6i.2xlarge",
        "c7i-flex.large",
        "g4dn.xlarge",
        "m5zn.large",
        "x2iedn.xlarge",
        "r5dn.large",
        "m7a.xlarge",
    ],
)
def test_x86_types_pass(itype):
    assert params.validate(form_conf(instance_type=itype))["instance_type"] == itype


@pytest.mark.parametrize(
    "name,value",
    [
        ("batch_id", "b1\n"),
        ("instance_type", "m5.large\n"),
        ("pca_variance", float("nan")),
        ("surprise", 1),
        ("pca_k", True),
        ("core_count", 2.5),
        ("backend", "emr-ish"),
        ("pca_refit", "Auto"),
    ],
)
def test_the_first_task_refuses_what_the_schema_lets_through_or_the_form_never_sent(name, value):
    """A schema's pattern is a search ('$' matches before a trailing newline), NaN passes every bound,
    and a dag.test or API conf may hold keys the form does not have."""
    with pytest.raises(InvalidParam, match=f"invalid param '{name}'"):
        params.validate(form_conf(**{name: value}))


def test_an_empty_batch_id_means_the_runs_date_as_the_form_says(pipeline_dag):
    form = copy.deepcopy(pipeline_dag.params)
    form["batch_id"] = ""  # what the form sends for a field left empty: accepted
    assert params.validate(form_conf(batch_id=""))["batch_id"] is None
    assert "Empty: the run's date" in pipeline_dag.params.get_param("batch_id").description


def test_the_first_task_says_the_rule_in_words_and_normalises_numbers():
    with pytest.raises(InvalidParam, match="letters, digits"):
        params.validate(form_conf(batch_id="a/b"))
    checked = params.validate(form_conf(core_count=3.0, pca_variance=1))
    assert checked["core_count"] == 3 and isinstance(checked["core_count"], int)
    assert checked["pca_variance"] == 1.0 and isinstance(checked["pca_variance"], float)


@pytest.mark.parametrize("value", ["auto", "always", "never"])
def test_every_refit_choice_passes_the_first_task(value):
    assert params.validate(form_conf(pca_refit=value))["pca_refit"] == value
