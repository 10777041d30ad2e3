"""The run report's figures from EMR's answers (fruits/run_report.py): pure, no AWS needed."""

from datetime import UTC, datetime, timedelta

from fruits.backends import run_report
from fruits.backends.emr import report as emr_report

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PRICES = {
    "source": {"ec2": "ec2 page", "emr": "emr page"},
    "as_of": "2025-06",
    "regions": {"eu-west-1": {"m5.xlarge": {"ec2": 0.2, "emr": 0.05}, "m5.2xlarge": {"ec2": 0.4, "emr": 0.1}}},
}


def group(role, kind, count, market="ON_DEMAND"):
    return {"InstanceGroupType": role, "InstanceType": kind, "RequestedInstanceCount": count, "Market": market}


def step(name, start_min, end_min, state="COMPLETED"):
    return {
        "Name": name,
        "Status": {
            "State": state,
            "Timeline": {
                "StartDateTime": T0 + timedelta(minutes=start_min),
                "EndDateTime": T0 + timedelta(minutes=end_min),
            },
        },
    }


CLUSTER = {
    "Id": "j-1",
    "ReleaseLabel": "emr-7.12.0",
    "NormalizedInstanceHours": 40,
    "Status": {
        "Timeline": {
            "CreationDateTime": T0,
            "ReadyDateTime": T0 + timedelta(minutes=12),
            "EndDateTime": T0 + timedelta(minutes=60),
        }
    },
}
NAMES = {"extract_features": "extract_features b1", "reduce_dimensions": "reduce_dimensions b1"}


def test_an_emr_run_is_timed_priced_and_counted_from_the_clusters_own_timeline():
    groups = [group("CORE", "m5.2xlarge", 4), group("MASTER", "m5.xlarge", 1), group("TASK", "m5.2xlarge", 2, "SPOT")]
    # newest first, with an older failed try of the features step that the report must not time
    steps = [
        step("reduce_dimensions b1", 42, 44),
        step("extract_features b1", 12, 42),
        step("extract_features b1", 12, 13, "FAILED"),
    ]
    report = emr_report.emr_report(
        CLUSTER,
        groups,
        steps,
        NAMES,
        {"extract_features": 90_000, "reduce_dimensions": 89_000},
        PRICES,
        "eu-west-1",
        now=T0 + timedelta(hours=5),
    )
    assert [n["role"] for n in report["instances"]] == ["MASTER", "CORE", "TASK"]
    assert report["wall_s"] == {
        "boot_and_bootstrap": 720.0,
        "extract_features": 1800.0,
        "reduce_dimensions": 120.0,
        "cluster": 3600.0,
    }  # the cluster's EndDateTime, not `now`
    assert report["images_per_s"] == {"extract_features": 50.0, "reduce_dimensions": 741.7}
    # one hour of 1 x 0.25 + 6 x 0.5 $/h; spot counted at the on-demand price (an upper bound, said so)
    assert report["cost"]["run_usd"] == 3.25 and report["cost"]["spot_at_on_demand_price"] is True
    assert report["cost"]["per_1000_images_usd"] == round(3250 / 90_000, 4)
    assert report["normalized_instance_hours"] == 40
    text = run_report.format_report(report, emr_report.emr_lines(report))
    assert "$3.25 per run" in text and "2 x m5.2xlarge task (spot)" in text


def test_a_cluster_still_ending_is_counted_until_now_and_an_unpriced_type_says_which_row_to_add():
    cluster = {**CLUSTER, "Status": {"Timeline": {"CreationDateTime": T0}}}  # not ready, no end yet
    report = emr_report.emr_report(
        cluster, [group("MASTER", "c7i.xlarge", 1)], [], NAMES, {}, PRICES, "eu-west-1", now=T0 + timedelta(minutes=30)
    )
    assert report["wall_s"] == {
        "boot_and_bootstrap": None,
        "extract_features": None,
        "reduce_dimensions": None,
        "cluster": 1800.0,
    }
    assert report["cost"]["run_usd"] is None
    assert report["cost"]["missing"] == "no price for c7i.xlarge in eu-west-1 in emr_prices.json: add the row"
    assert "add the row" in run_report.format_report(report, emr_report.emr_lines(report))


def test_the_price_table_names_its_source_and_date_and_prices_the_default_types():
    from fruits.config.params import build_params
    from fruits.config.settings import DEFAULTS

    prices = emr_report.load_prices()
    assert prices["source"]["ec2"].startswith("https://aws.amazon.com/ec2/pricing") and prices["as_of"]
    for region, table in prices["regions"].items():
        for kind in (DEFAULTS["primary_instance_type"], build_params()["instance_type"].value):
            assert table[kind]["ec2"] > 0 and table[kind]["emr"] > 0, (region, kind)


def test_a_local_run_reports_wall_time_and_images_per_second():
    report = run_report.local_report(
        [{"job": "extract_features", "wall_s": 40.0}, {"job": "reduce_dimensions", "wall_s": 8.0}],
        {"extract_features": 3000, "reduce_dimensions": 2990},
    )
    assert report == {
        "backend": "local",
        "wall_s": {"extract_features": 40.0, "reduce_dimensions": 8.0, "total": 48.0},
        "images_per_s": {"extract_features": 75.0, "reduce_dimensions": 373.8},
    }
