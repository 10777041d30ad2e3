"""Upload the landing folder's new photos as one batch, idempotently and resumably.

"New" means held by no other *published* batch: content sha256 against the manifests of the batches
whose features were committed, so a photo left in (or copied back into) the landing folder is never
uploaded twice, and a batch whose run failed holds nothing (the held-photo index, held_index.py,
answers that in a handful of files however many batches the lake holds). A new batch is packed in
Parquet shards (packing.py): shards planned from sorted paths and fixed sizes, so an interrupted run
plans the same ones and skips a shard stored with the same sha256 (kept in its S3 metadata,
multipart or not). A batch ingested before shards keeps one object per photo: an object already
present with the same key, size and MD5 (S3's ETag) is not sent again. Either way an interrupted run
resumes without duplicates or losses, and a file changed since is sent again; the manifest is
written last, after every upload, and never lists fewer files than an earlier run of the batch did.
A published batch never changes: new photos for it are refused with a message (the DAG gives a
date-named run a new batch id instead, see pipeline.py).

Non-image files: ingest does not judge content. It skips only what can never be a photo of the
dataset or what Spark could never see, each with a reason in the manifest's `skipped` (nothing
silently dropped):
  - symbolic links out of the landing folder or to folders (never followed), dangling links,
    unreadable files and folders, devices, sockets and pipes;
  - photos already in a published batch (the reason names the batch);
  - OS metadata (.DS_Store, Thumbs.db, desktop.ini) and AppleDouble `._*` files;
  - any name (file or folder) Spark's file listing ignores ('.'/'_' names), so they could be
    neither featurized nor rejected;
  - files outside a class folder (the label is the parent folder);
  - a second copy of the same content in this batch.
The name and label rules, and their reasons, are fruits_jobs/contract.py's (the job uses them too).
Everything else, including files that look broken or are not images at all, is uploaded, so the
features job rejects it with a reason row in rejects/ and the counts add up.
"""

import functools
import hashlib
import io
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from fruits.lake import held_index, leases, packing, published
from fruits.lake.storage import Storage
from fruits.lake.transfer import Progress, Upload
from fruits_jobs import commits, contract, layout
from fruits_jobs.digests import file_digests

log = logging.getLogger(__name__)


def skip_reason(rel: Path) -> str | None:
    """Why a landing file (path relative to the landing folder) is not uploaded; None to upload it."""
    for part in rel.parts:
        reason = contract.unreadable_name_reason(part)
        if reason:
            return reason
    if contract.label_and_split(rel.parts) is None:
        return contract.REJECT_REASONS["no_class_folder"]
    return None


class IngestRefused(ValueError):
    """The batch cannot take this landing folder as it is; the message says what to do."""


def _link_reason(path: Path, landing: Path) -> str | None:
    """Why a symbolic link is not read (None: a link to a regular file inside the landing folder)."""
    try:
        target = path.resolve(strict=True)
    except (RuntimeError, OSError):
        try:
            pointed = os.readlink(path)
        except OSError as exc:  # /proc and friends: even the link's text may be unreadable
            pointed = f"unreadable: {exc.strerror or exc}"
        return f"dangling or looping symbolic link ({pointed})"
    if not target.is_relative_to(landing):
        return f"symbolic link to {target}, outside the landing folder: not followed"
    if not target.is_file():
        return "symbolic link to a folder: not followed"
    return None


def walk_landing(landing: Path) -> tuple[list[Path], list[dict]]:
    """The regular files under the landing folder, and what is not read, with the reason why.

    Links are never followed out of the folder (nor into folders: no loops, no second listing);
    unreadable folders, devices, sockets and pipes are reported, never fatal."""
    files: list[Path] = []
    skipped: list[dict] = []

    def skip(path: str, reason: str) -> None:
        skipped.append({"path": Path(path).relative_to(landing).as_posix(), "reason": reason})

    for folder, subfolders, names in os.walk(
        landing, onerror=lambda e: skip(e.filename, f"unreadable folder: {e.strerror}")
    ):
        for name in list(subfolders):
            if os.path.islink(os.path.join(folder, name)):
                subfolders.remove(name)  # os.walk would not descend; say so
                skip(os.path.join(folder, name), _link_reason(Path(folder, name), landing) or "symbolic link")
        for name in names:
            path = Path(folder, name)
            try:
                if path.is_symlink():
                    reason = _link_reason(path, landing)
                    if reason:
                        skip(str(path), reason)
                        continue
                elif not stat.S_ISREG(path.lstat().st_mode):
                    skip(str(path), "not a regular file (device, socket or pipe)")
                    continue
            except OSError as exc:  # never fatal: said, and the walk goes on
                skip(str(path), f"unreadable entry: {exc.strerror or exc}")
                continue
            files.append(path)
    return sorted(files), skipped


def held_catalog(storage: Storage, published_now: dict[str, str]) -> dict:
    """The held-photo index's catalog (held_index.py). A lake without one, or whose catalog lacks a
    published batch (ingested before it), gets one from a listing of manifests/: once."""
    catalog = held_index.read_catalog(storage)
    if catalog is not None and set(published_now) <= set(held_index.members(catalog)):
        return catalog
    ingested = sorted({b for b in map(layout.batch_of_manifest, storage.sizes(layout.MANIFESTS)) if b})
    hashes_of = functools.partial(batch_hashes, storage)
    wanted = held_index.members(catalog) if catalog else {}
    wanted.update({batch: held_index.version(hashes_of(batch)) for batch in ingested})
    log.info("ingest: the held-photo index is built from the files of %d batch(es), once", len(ingested))
    return held_index.switch(storage, catalog, wanted, hashes_of)


def batch_hashes(storage: Storage, batch_id: str) -> list[str]:
    """The sha256 of every photo a batch lists: its held-photo file, or its manifest when it has none
    (ingested before the files existed); DamagedLake naming what to do when it has neither."""
    key = layout.held_index_key(batch_id)
    if key in storage.sizes(key):
        return held_index.read_batch_file(storage, batch_id)
    if layout.manifest_key(batch_id) not in storage.sizes(layout.manifest_key(batch_id)):
        raise commits.DamagedLake(
            f"batch {batch_id} is in {storage.name}{layout.held_catalog_key()} but has neither "
            f"{layout.held_index_key(batch_id)} nor a manifest; {held_index.WHAT_TO_DO}"
        )
    return manifest_hashes(parse_manifest(storage, layout.manifest_key(batch_id)))


def manifest_hashes(manifest: dict) -> list[str]:
    """The sha256 of every photo a manifest lists: the held-photo file's fallback."""
    return [e["sha256"] for e in manifest["files"]]


def other_batches(
    listing: dict[str, list[str]], published_now: dict[str, str], batch_id: str
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Over the batches other than batch_id listing a photo (listing: held_index.lookup's sha256 ->
    batches): (sha256 -> the published batch holding it, sha256 -> the unpublished batches listing
    it). A batch that never published (its run failed or was killed) holds nothing: a new batch can
    take its photos, and then fences it (leases.revoke)."""
    held: dict[str, str] = {}
    listed: dict[str, set[str]] = {}
    for sha, batches in listing.items():
        for other in batches:
            if other == batch_id:
                continue
            if other in published_now:
                held.setdefault(sha, other)
            else:
                listed.setdefault(sha, set()).add(other)
    return held, listed


def next_free_batch_id(storage: Storage, base: str) -> str:
    """base, or base.2, base.3, ... : the first that is not published (for runs named by their date:
    a second folder landing the same day becomes a batch of its own, never part of a published one)."""
    candidate, n, published_now = base, 1, published.published_runs(storage)
    while candidate in published_now:
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def read_manifest(storage: Storage, batch_id: str) -> dict | None:
    key = layout.manifest_key(batch_id)
    return parse_manifest(storage, key) if key in storage.sizes(key) else None


def parse_manifest(storage: Storage, key: str) -> dict:
    """A manifest, or DamagedLake naming it and saying what to do."""
    fix = (
        "restore it from a backup, or move it and its batch's raw/ folder away and land the photos "
        "again (they then form a new batch)"
    )
    return commits.parse_record(storage.read_text(key), storage.name + key, ("files",), fix)


def landing_files(
    landing_dir: Path, algorithms: tuple[str, ...]
) -> tuple[list[tuple[Path, tuple[str, ...]]], list[dict]]:
    """The landing files ingest may take, with their digests (sha256 first), and those it skips
    (walk_landing's, and the names skip_reason refuses), each with its reason."""
    listed, skipped = walk_landing(landing_dir)
    found = []
    for path in listed:
        rel = path.relative_to(landing_dir)
        reason = skip_reason(rel)
        if reason is None:
            try:
                found.append((rel, file_digests(path, *algorithms)))
                continue
            except OSError as exc:
                reason = f"unreadable file: {exc.strerror or exc}"
        skipped.append({"path": rel.as_posix(), "reason": reason})
    return found, skipped


def ingest(
    landing_dir: Path,
    storage: Storage,
    batch_id: str,
    form: str = contract.PACKED,
    shard_bytes: int = packing.SHARD_BYTES,
) -> dict:
    """Upload the batch; returns this run's report (the manifest's counts plus what was sent now).

    form: how a new batch is stored (contract.PACKED shards, or LOOSE: one object per photo); a
    batch that has a manifest keeps the form its manifest says."""
    landing_dir = Path(landing_dir).resolve()
    prefix = layout.raw_prefix(batch_id)
    previous = read_manifest(storage, batch_id)
    form = previous.get("layout", contract.LOOSE) if previous else form
    packed = form == contract.PACKED
    # sha256 identifies a photo across batches; md5 is what S3 reports (ETag) for an object uploaded
    # in one part: it tells a resumed loose upload is the same file (shards keep their sha256)
    found, skipped = landing_files(landing_dir, ("sha256",) if packed else ("sha256", "md5"))
    present = storage.sizes(prefix) if packed else storage.fingerprints(prefix)
    published_now = published.published_runs(storage)
    catalog = held_catalog(storage, published_now)
    listing = held_index.lookup(storage, catalog, {digests[0] for _, digests in found})
    held, listed_elsewhere = other_batches(listing, published_now, batch_id)

    files: list[dict] = []
    md5s: dict[str, str] = {}
    seen: dict[str, str] = {}
    held_by: dict[str, int] = {}
    already_held: list[dict] = []  # skipped too, but normal on daily runs: counted and logged apart
    for rel, (sha, *md5) in found:
        if sha in held:
            held_by[held[sha]] = held_by.get(held[sha], 0) + 1
            already_held.append({"path": rel.as_posix(), "reason": f"already in batch {held[sha]}"})
            continue
        if sha in seen:
            skipped.append({"path": rel.as_posix(), "reason": f"same content as {seen[sha]}"})
            continue
        seen[sha] = rel.as_posix()
        if md5:
            md5s[rel.as_posix()] = md5[0]
        size = (landing_dir / rel).stat().st_size
        files.append({"path": rel.as_posix(), "key": prefix + rel.as_posix(), "size": size, "sha256": sha})
    for entry in skipped:
        log.warning("ingest skips %s: %s", entry["path"], entry["reason"])
    for other, count in sorted(held_by.items()):
        log.info("ingest: %d photo(s) of %s are already in published batch %s", count, landing_dir, other)

    files = merge_with_previous(files, previous, present)
    refuse_if_published(storage, batch_id, files, previous)
    shards = assign_shards(files, previous, batch_id, shard_bytes) if packed else []
    refuse_orphans(batch_id, files, present, previous)

    # Ingest decides what is new: the unpublished batches that listed these photos lose their lease,
    # so a job of theirs that is still running (or a late commit) can never publish them too.
    for other in sorted({b for entry in files for b in listed_elsewhere.get(entry["sha256"], ())}):
        leases.revoke(storage, other, f"its photos went to batch {batch_id}")
        log.warning("ingest: batch %s never published; its photos go to %s and its lease is revoked", other, batch_id)
    if not published.is_published(storage, batch_id):  # this run's token: an earlier run of the batch is fenced
        leases.issue(storage, batch_id)

    if packed:
        sent = upload_shards(storage, landing_dir, shards, set(present))
        too_large = sum(1 for f in files if f["shard"] is None)
        sent["resumed"] = len(files) - sent["uploaded"] - too_large  # this run's shards and earlier runs'
        shard_list = sorted(
            [s for s in (previous or {}).get("shards", []) if s["key"] not in sent["shards"]]
            + list(sent["shards"].values()),
            key=lambda s: s["key"],
        )
    else:
        sent = upload_loose(storage, landing_dir, files, md5s, present)
        shard_list = []

    counts = {
        "files": len(files),
        "bytes": sum(f["size"] for f in files),
        "skipped": len(skipped),
        "already_held": len(already_held),
    }
    manifest = {
        "batch_id": batch_id,
        "landing_dir": str(landing_dir),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "layout": form,
        **({"max_file_bytes": contract.DEFAULT_MAX_FILE_BYTES, "shards": shard_list} if packed else {}),
        "counts": counts,
        "already_held_by": held_by,
        "files": files,
        "skipped": sorted(skipped + already_held, key=lambda e: e["path"]),
    }
    # The held-photo index first: a manifest (ingest finished) is always in it.
    held_index.record(
        storage, catalog, batch_id, [f["sha256"] for f in files], functools.partial(batch_hashes, storage)
    )
    storage.put_bytes(json.dumps(manifest, indent=1).encode(), layout.manifest_key(batch_id))
    report = {
        "batch_id": batch_id,
        **counts,
        "already_held_by": held_by,
        "uploaded": sent["uploaded"],
        "already_uploaded": sent["resumed"],
        **(
            {"shards": len(shard_list), "shards_uploaded": sent["shards_uploaded"], "too_large": too_large}
            if packed
            else {}
        ),
        "manifest": storage.name + layout.manifest_key(batch_id),
    }
    log.info("ingest %s", json.dumps(report))
    return report


def upload_loose(storage: Storage, landing: Path, files: list[dict], md5s: dict, present: dict) -> dict:
    """One object per photo (batches ingested before shards): what is not stored byte for byte yet."""
    uploaded = resumed = 0
    for entry in files:
        md5 = md5s.get(entry["path"])
        if md5 is None or present.get(entry["key"]) == (entry["size"], md5):
            resumed += 1  # sent by an earlier run of this batch, byte for byte the same
            continue
        storage.upload_file(landing / entry["path"], entry["key"])
        uploaded += 1
    return {"uploaded": uploaded, "resumed": resumed}


def assign_shards(files: list[dict], previous: dict | None, batch_id: str, shard_bytes: int) -> list[list[dict]]:
    """Give this run's new photos their shard (entry["shard"]) and return the new shards' entries.

    New: not listed, with the same content, by the batch's manifest (whose shards stay as they are);
    numbered after them, sorted by path, cut at shard_bytes: an interrupted run plans the same
    shards again. A file over the job's size limit goes in no shard (shard None: file_too_large)."""
    before = {(e["key"], e["sha256"]): e for e in (previous or {}).get("files", [])}
    new = []
    for entry in files:
        kept = before.get((entry["key"], entry["sha256"]))
        if kept is not None:
            entry["shard"] = kept.get("shard")
        elif entry["size"] > contract.DEFAULT_MAX_FILE_BYTES:
            entry["shard"] = None
        else:
            new.append(entry)
    numbers = [layout.shard_index(s["key"]) for s in (previous or {}).get("shards", [])]
    first = max((n for n in numbers if n is not None), default=-1) + 1
    shards = packing.plan_shards(new, shard_bytes)
    for number, entries in enumerate(shards, first):
        for entry in entries:
            entry["shard"] = layout.shard_key(batch_id, number)
    return shards


def upload_shards(storage: Storage, landing: Path, shards: list[list[dict]], present: set[str]) -> dict:
    """Build each shard and upload it, several at a time, unless it is stored already with the same
    sha256 (an interrupted run's). Returns photos uploaded and resumed, and the shards' records."""
    sent: dict = {"uploaded": 0, "resumed": 0, "shards": {}, "shards_uploaded": 0}
    total = sum(e["size"] for entries in shards for e in entries)
    with (
        tempfile.TemporaryDirectory(prefix="fruits-shards-") as tmp,
        Progress("ingest upload", len(shards), total) as progress,
    ):
        storage.upload_files(built_shards(storage, landing, shards, present, Path(tmp), sent, progress), progress)
    return sent


def built_shards(
    storage: Storage, landing: Path, shards: list[list[dict]], present: set[str], tmp: Path, sent: dict, progress
) -> Iterator[Upload]:
    """Each shard written to tmp, one at a time as the uploader asks, but those already stored."""

    def finished(path: Path, photos: int) -> None:
        sent["uploaded"] += photos
        sent["shards_uploaded"] += 1
        path.unlink()

    for entries in shards:
        key = entries[0]["shard"]
        path = tmp / key.rpartition("/")[2]
        sha = packing.write_shard(entries, landing, path)
        sent["shards"][key] = {"key": key, "photos": len(entries), "size": path.stat().st_size, "sha256": sha}
        # S3 keeps an object's metadata whether it went up in one part or many (its ETag is an MD5
        # only for one part), and only once the upload completed: a match is a finished shard.
        if key in present and storage.stored_sha256(key) == sha:
            sent["resumed"] += len(entries)
            progress.skip(1, sum(e["size"] for e in entries))
            path.unlink()
            continue
        yield Upload(path, key, {"sha256": sha}, len(entries), functools.partial(finished, path, len(entries)))


def stored_batch(storage: Storage, batch_id: str) -> dict:
    """A re-run's ingest: the batch as its manifest lists it, every photo still in raw/ (the only
    source a re-run has), nothing uploaded; the batch's lease stays, so its old commit is current
    until the new one replaces it."""
    manifest = read_manifest(storage, batch_id)
    if manifest is None:
        raise IngestRefused(f"batch {batch_id} has no manifest ({layout.manifest_key(batch_id)}): nothing to re-run")
    present = storage.sizes(layout.raw_prefix(batch_id))
    missing = [key for key in (stored_in(e) for e in manifest["files"]) if key is not None and key not in present]
    if missing:
        raise IngestRefused(
            f"batch {batch_id}: {len(missing)} of its photos are gone from raw/ (e.g. {missing[0]}); a re-run "
            "reads only them: restore them, or land the photos again as a new batch"
        )
    report = {
        "batch_id": batch_id,
        **manifest["counts"],
        "already_held_by": {},
        "uploaded": 0,
        "already_uploaded": len(manifest["files"]),
        "manifest": storage.name + layout.manifest_key(batch_id),
    }
    log.info("re-run of batch %s: %s", batch_id, json.dumps(report))
    return report


class NotStored(LookupError):
    """The lake holds no such photo; the message says why."""


def stored_photo(storage: Storage, batch_id: str, path: str) -> bytes:
    """The bytes of one photo of a batch, by its path in the landing folder, as stored: from its
    shard (only the row group holding it is read from a folder) or its own object; checked against
    the sha256 its manifest lists."""
    manifest = read_manifest(storage, batch_id)
    if manifest is None:
        raise NotStored(f"no batch {batch_id!r} in {storage.name} (no {layout.manifest_key(batch_id)})")
    entry = next((e for e in manifest["files"] if e["path"] == path), None)
    if entry is None:
        skipped = next((e["reason"] for e in manifest["skipped"] if e["path"] == path), None)
        why = f"ingest skipped it: {skipped}" if skipped else "its manifest lists no such path"
        raise NotStored(f"batch {batch_id} holds no photo {path!r}: {why}")
    key = stored_in(entry)
    if key is None:
        raise NotStored(f"{path} ({entry['size']} bytes) is over the size limit: listed, never stored (file_too_large)")
    if "shard" not in entry:
        data = storage.read_bytes(key)
    else:
        local = getattr(storage, "root", None)  # a folder: pyarrow reads just the row group
        found = packing.read_photo(local / key if local else io.BytesIO(storage.read_bytes(key)), path)
        if found is None:
            raise commits.DamagedLake(f"{storage.name}{key} has no row for {path}, which the manifest places there")
        data = found
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise commits.DamagedLake(f"{storage.name}{key}: {path} is not the photo the manifest lists (sha256 differs)")
    return data


def stored_in(entry: dict) -> str | None:
    """The key of the object holding a manifest entry's photo: its shard, or itself (one object per
    photo); None for a packed batch's file over the size limit (stored nowhere, rejected)."""
    return entry["shard"] if "shard" in entry else entry["key"]


def merge_with_previous(files: list[dict], previous: dict | None, present: dict) -> list[dict]:
    """This run's files plus those an earlier run of the batch listed and uploaded that the landing
    folder no longer holds: a photo once in a batch stays in it (the manifest never shrinks)."""
    if previous is None:
        return files
    keys = {f["key"] for f in files}
    kept = [e for e in previous["files"] if e["key"] not in keys and (stored_in(e) is None or stored_in(e) in present)]
    return sorted(files + kept, key=lambda e: e["key"])


def refuse_if_published(storage: Storage, batch_id: str, files: list[dict], previous: dict | None) -> None:
    """A published batch never changes: new photos belong to a new batch."""
    if previous is None or not published.is_published(storage, batch_id):
        return
    before = {(e["key"], e["sha256"]) for e in previous["files"]}
    new = [e["path"] for e in files if (e["key"], e["sha256"]) not in before]
    if new:
        raise IngestRefused(
            f"batch {batch_id} is already published with {len(before)} photo(s); {len(new)} new or changed "
            f"photo(s) in the landing folder (e.g. {new[0]}) would change it. Leave batch_id empty to get "
            f"a new batch ({batch_id}.2, ...) or pass a batch_id that is not published yet."
        )


def refuse_orphans(batch_id: str, files: list[dict], present: dict, previous: dict | None = None) -> None:
    """raw/ objects that no manifest lists (an interrupted run whose photos then left the landing
    folder) would be neither featurized nor rejected: say so instead of hiding them. (A shard of the
    batch's manifest stays, even when newer shards now hold all its photos: the job reads each photo
    from the shard the manifest names.)"""
    listed = {stored_in(f) for f in files} | {s["key"] for s in (previous or {}).get("shards", [])}
    orphans = sorted(set(present) - listed)
    if orphans:
        raise IngestRefused(
            f"{len(orphans)} object(s) under {layout.raw_prefix(batch_id)} (e.g. {orphans[0]}) were uploaded by an "
            "interrupted run of this batch but are no longer in the landing folder: put those photos back, "
            "or use a new batch_id."
        )
