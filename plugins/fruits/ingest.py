"""Upload the landing folder's new photos as one batch, idempotently and resumably.

"New" means held by no earlier batch: content sha256 against the manifests of all other batches,
so a photo left in (or copied back into) the landing folder is never uploaded twice. Within the
batch, an object already present with the same key and size is not sent again, which is what makes
an interrupted run resume without duplicates or losses; the manifest is written last, after every
upload, so a batch has a manifest only once it is complete. A re-run of a batch rewrites the same
manifest and uploads nothing.

Non-image files: ingest does not judge content. It skips only what can never be a photo of the
dataset or what Spark could never see, each with a reason logged and listed in the manifest's
`skipped` (nothing silently dropped):
  - OS metadata (.DS_Store, Thumbs.db, desktop.ini) and AppleDouble `._*` files;
  - any name (file or folder) Spark's file listing ignores ('.'/'_' names), so they could be
    neither featurized nor rejected;
  - files outside a class folder (the label is the parent folder);
  - a second copy of the same content in this batch.
The name and label rules, and their reasons, are fruits_jobs/contract.py's (the job uses them too).
Everything else, including files that look broken or are not images at all, is uploaded, so the
features job rejects it with a reason row in rejects/ and the counts add up.
"""
import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

from fruits import layout
from fruits.storage import Storage
from fruits_jobs import contract

log = logging.getLogger(__name__)


def skip_reason(rel: Path) -> Optional[str]:
    """Why a landing file (path relative to the landing folder) is not uploaded; None to upload it."""
    for part in rel.parts:
        reason = contract.unreadable_name_reason(part)
        if reason:
            return reason
    if contract.label_and_split(rel.parts) is None:
        return contract.REJECT_REASONS["no_class_folder"]
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def held_hashes(storage: Storage, batch_id: str) -> Dict[str, str]:
    """sha256 -> batch id, for every file in the manifests of the other batches."""
    held = {}
    for key in sorted(storage.sizes(layout.MANIFESTS)):
        other = layout.batch_of_manifest(key)
        if other != batch_id:
            for entry in json.loads(storage.read_text(key))["files"]:
                held.setdefault(entry["sha256"], other)
    return held


def ingest(landing_dir: Path, storage: Storage, batch_id: str) -> dict:
    """Upload the batch; returns this run's report (the manifest's counts plus what was sent now)."""
    landing_dir = Path(landing_dir)
    held = held_hashes(storage, batch_id)
    prefix = layout.raw_prefix(batch_id)
    present = storage.sizes(prefix)

    files: List[dict] = []
    skipped: List[dict] = []
    seen: Dict[str, str] = {}
    already_held = 0
    for path in sorted(p for p in landing_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(landing_dir)
        reason = skip_reason(rel)
        if reason is None:
            digest = sha256_of(path)
            if digest in held:
                already_held += 1  # normal on daily runs over a folder that keeps old photos
                continue
            if digest in seen:
                reason = f"same content as {seen[digest]}"
            seen[digest] = rel.as_posix()
        if reason is not None:
            log.warning("ingest skips %s: %s", rel.as_posix(), reason)
            skipped.append({"path": rel.as_posix(), "reason": reason})
            continue
        files.append({"path": rel.as_posix(), "key": prefix + rel.as_posix(),
                      "size": path.stat().st_size, "sha256": digest})

    uploaded = resumed = 0
    for entry in files:
        if present.get(entry["key"]) == entry["size"]:
            resumed += 1  # sent by an earlier, interrupted or repeated, run of this batch
            continue
        storage.upload_file(landing_dir / entry["path"], entry["key"])
        uploaded += 1

    counts = {"files": len(files), "bytes": sum(f["size"] for f in files), "skipped": len(skipped),
              "already_held": already_held}
    manifest = {"batch_id": batch_id, "landing_dir": str(landing_dir),
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "counts": counts, "files": files, "skipped": skipped}
    storage.put_bytes(json.dumps(manifest, indent=1).encode(), layout.manifest_key(batch_id))
    report = {"batch_id": batch_id, **counts, "uploaded": uploaded, "already_uploaded": resumed,
              "manifest": storage.name + layout.manifest_key(batch_id)}
    log.info("ingest %s", json.dumps(report))
    return report
