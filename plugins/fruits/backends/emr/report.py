"""What an EMR run cost: the cluster, its wall times and an estimated cost from the on-demand price
table (emr_prices.json). Pure: the AWS answers are passed in."""

import json
from datetime import datetime
from pathlib import Path

from fruits.backends.run_report import per_second, seconds_between

PRICES_FILE = Path(__file__).with_name("emr_prices.json")


def load_prices(path: Path = PRICES_FILE) -> dict:
    return json.loads(Path(path).read_text())


def instances(groups: list[dict]) -> list[dict]:
    """ListInstanceGroups' groups as role, type, count and market (the count asked for: what is billed
    while the cluster lives, as long as EMR provides it)."""
    order = ["MASTER", "CORE", "TASK"]  # as the cluster is described, whatever order the API lists
    return [
        {
            "role": g["InstanceGroupType"],
            "type": g["InstanceType"],
            "count": g["RequestedInstanceCount"],
            "market": g.get("Market", "ON_DEMAND"),
        }
        for g in sorted(groups, key=lambda g: order.index(g["InstanceGroupType"]))
    ]


def estimate_cost(nodes: list[dict], hours: float, prices: dict, region: str, images: int | None) -> dict:
    """Every node at (EC2 on-demand + EMR) $/h for the cluster's whole life: EMR bills from the request
    to the termination, per second (Amazon EMR pricing). Spot nodes are counted at the on-demand price,
    so the figure is an upper bound when the run has any."""
    table = prices["regions"].get(region, {})
    missing = sorted({n["type"] for n in nodes if n["type"] not in table})
    basis = {
        "prices": f"{prices['source']['ec2']}; {prices['source']['emr']}; as of {prices['as_of']}",
        "region": region,
        "hours": round(hours, 3),
    }
    if missing:
        return {
            **basis,
            "run_usd": None,
            "per_1000_images_usd": None,
            "missing": f"no price for {', '.join(missing)} in {region} in {PRICES_FILE.name}: add the row",
        }
    hourly = sum(n["count"] * (table[n["type"]]["ec2"] + table[n["type"]]["emr"]) for n in nodes)
    run = hourly * hours
    return {
        **basis,
        "run_usd": round(run, 4),
        "per_1000_images_usd": round(1000 * run / images, 4) if images else None,
        "spot_at_on_demand_price": any(n["market"] == "SPOT" for n in nodes),
    }


def newest_step_of(steps: list[dict], name: str) -> dict | None:
    """The newest step of that name (ListSteps lists newest first; a retry may have added it again)."""
    return next((s for s in steps if s["Name"] == name), None)


def emr_report(
    cluster: dict,
    groups: list[dict],
    steps: list[dict],
    step_names: dict[str, str],
    images: dict[str, int],
    prices: dict,
    region: str,
    now: datetime,
) -> dict:
    """cluster: DescribeCluster's Cluster; groups: ListInstanceGroups'; steps: ListSteps' (newest
    first); step_names: job -> its step's name; images: job -> images it processed; now: the end of
    the run for a cluster not terminated yet."""
    timeline = cluster["Status"]["Timeline"]
    end = timeline.get("EndDateTime") or now
    nodes = instances(groups)
    total_s = seconds_between(timeline["CreationDateTime"], end)
    step_s = {}
    for job, name in step_names.items():
        step = newest_step_of(steps, name)
        step_s[job] = (
            seconds_between(*(step["Status"]["Timeline"].get(k) for k in ("StartDateTime", "EndDateTime")))
            if step
            else None
        )
    return {
        "backend": "emr",
        "cluster_id": cluster["Id"],
        "release": cluster.get("ReleaseLabel"),
        "instances": nodes,
        # EMR's API gives the request, ready (booted and bootstrapped) and end times: the boot and
        # the bootstrap are one figure here; the bootstrap's own log is under LogUri/<cluster>/node/.
        "wall_s": {
            "boot_and_bootstrap": seconds_between(timeline["CreationDateTime"], timeline.get("ReadyDateTime")),
            **step_s,
            "cluster": total_s,
        },
        "normalized_instance_hours": cluster.get("NormalizedInstanceHours"),
        "images_per_s": {job: per_second(images.get(job), step_s[job]) for job in step_names},
        "cost": estimate_cost(nodes, (total_s or 0) / 3600, prices, region, images.get(next(iter(step_names)))),
    }


def emr_lines(report: dict) -> list[str]:
    """The cluster line (first) and the cost line (after the wall times) of an EMR run's report."""
    cluster = f"  {'cluster':<15} {report['cluster_id']} ({report['release']}): " + ", ".join(
        f"{n['count']} x {n['type']} {n['role'].lower()}{' (spot)' if n['market'] == 'SPOT' else ''}"
        for n in report["instances"]
    )
    cost = report["cost"]
    return [
        cluster,
        f"  {'cost (est.)':<15} "
        + (
            f"${cost['run_usd']} per run, ${cost['per_1000_images_usd']} per 1,000 images "
            f"({cost['hours']} h, {cost['region']} on-demand; NormalizedInstanceHours "
            f"{report['normalized_instance_hours']})"
            if cost["run_usd"] is not None
            else cost["missing"]
        ),
    ]
