"""Who may publish a batch: its lease, `manifests/batch_id=<id>.lease`, beside its manifest.

Each run's ingest issues a fresh lease (a token, the next `generation`) for a batch that is not
published yet; the features job reads it at its start. Each new lease of a batch (issued or revoked)
is recorded in the features and rejects tables' logs as the batch's Delta transaction version
(fence_tables, tables.fence_table), and a job commits there only under the generation it started
with (tables.commit_actions): a run given up on cannot publish, even mid-commit. The Airflow side
revokes the lease when it gives up on a run: ingest, when another batch takes the photos of an
unpublished one; on EMR, the features sensor when it is killed and the teardown when that sensor
did not succeed. (The token lets the job see it was given up before it even tries: commits.is_live.)
"""

import json
import uuid
from datetime import UTC, datetime

from fruits.lake.storage import Storage
from fruits_jobs import commits, layout, tables


def read_lease(storage: Storage, batch_id: str) -> dict | None:
    key = layout.lease_key(batch_id)
    if key not in storage.sizes(key):
        return None
    fix = 'revoke it by hand ({"token": null}) and re-run the batch: its run\'s ingest issues a new one'
    return commits.parse_record(storage.read_text(key), storage.name + key, ("token",), fix)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def next_generation(storage: Storage, batch_id: str) -> tuple[int, bool]:
    """The generation of the batch's next lease, and whether it had one (else nothing to fence)."""
    try:
        lease = read_lease(storage, batch_id)
    except commits.DamagedLake:
        lease = {}  # a damaged lease is replaced; fence anyway
    return int((lease or {}).get("generation") or 0) + 1, lease is not None


def fence_tables(storage: Storage, batch_id: str, generation: int, why: str) -> None:
    """Record the new generation in the logs of the tables a features run publishes to (creating
    them when the lake has none yet: a fence is never lost)."""
    for folder in tables.BATCH_TABLES:
        tables.fence_table(
            storage.name + folder, tables.SCHEMAS[folder], batch_id, generation, {"lease": why}, storage.delta_options()
        )


def issue(storage: Storage, batch_id: str) -> str:
    """A new token for the batch's next run: any earlier run's commit stops being publishable."""
    token = uuid.uuid4().hex
    generation, had_one = next_generation(storage, batch_id)
    lease = {"batch_id": batch_id, "token": token, "generation": generation, "issued_at": _now()}
    storage.put_bytes(json.dumps(lease).encode(), layout.lease_key(batch_id))
    if had_one:
        fence_tables(storage, batch_id, generation, "issued")
    return token


def revoked(reason: str, generation: int) -> bytes:
    """A lease that no commit matches: the batch stays unpublished until a new run's ingest."""
    return json.dumps({"token": None, "generation": generation, "revoked": reason, "revoked_at": _now()}).encode()


def revoke(storage: Storage, batch_id: str, reason: str) -> None:
    generation, _ = next_generation(storage, batch_id)
    storage.put_bytes(revoked(reason, generation), layout.lease_key(batch_id))
    fence_tables(storage, batch_id, generation, f"revoked: {reason}")
