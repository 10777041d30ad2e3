"""Who may publish a batch: its lease, `manifests/batch_id=<id>.lease`, beside its manifest.

Each run's ingest issues a fresh token for a batch that is not published yet; the features job
copies it into its commit; the commit publishes the batch only while the lease still holds that
token (fruits_jobs.commits.is_live, the one rule, which the jobs apply too). The Airflow side revokes
the lease when it gives up on a run: ingest, when another batch takes the photos of an unpublished
one; on EMR, the features sensor when it is killed and the teardown when that sensor did not
succeed. A job that outlives its run can still write its commit, never make it live.
"""

import json
import uuid
from datetime import UTC, datetime

from fruits.lake.storage import Storage
from fruits_jobs import commits, layout


def read_lease(storage: Storage, batch_id: str) -> dict | None:
    key = layout.lease_key(batch_id)
    if key not in storage.sizes(key):
        return None
    fix = 'revoke it by hand ({"token": null}) and re-run the batch: its run\'s ingest issues a new one'
    return commits.parse_record(storage.read_text(key), storage.name + key, ("token",), fix)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def issue(storage: Storage, batch_id: str) -> str:
    """A new token for the batch's next run: any earlier run's commit stops being publishable."""
    token = uuid.uuid4().hex
    storage.put_bytes(
        json.dumps({"batch_id": batch_id, "token": token, "issued_at": _now()}).encode(), layout.lease_key(batch_id)
    )
    return token


def revoked(reason: str) -> bytes:
    """A lease that no commit matches: the batch stays unpublished until a new run's ingest."""
    return json.dumps({"token": None, "revoked": reason, "revoked_at": _now()}).encode()


def revoke(storage: Storage, batch_id: str, reason: str) -> None:
    storage.put_bytes(revoked(reason), layout.lease_key(batch_id))
