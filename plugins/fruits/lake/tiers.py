"""The merge rule both tiered indexes share (vector_index: the space's pieces; held_index: the
photos the lake's batches hold): a catalog of pieces, each covering some members (batch -> version),
merged in tiers so that n members stay at most floor(log2 n) + 1 pieces.

A piece's tier is floor(log2(its members)); the new members form one piece; while two pieces share a
tier they become one, smallest first. A member is rebuilt about log2 n times in its life, and the
largest piece holds 2^floor(log2 n) members. A piece holding a member whose version is no longer
wanted (re-published, re-ingested, withdrawn) is dropped: its still-wanted members are rebuilt with
the new ones, so a stale entry is never read. What to build is decided here (pure functions), the
building is each index's own; read_catalog reads either index's catalog.
"""

import hashlib
import json

from fruits.lake.storage import Storage
from fruits_jobs import commits


def tier(members: int) -> int:
    return max(members, 1).bit_length() - 1


def plan(pieces: list[dict[str, str]], wanted: dict[str, str]) -> list[dict[str, str]]:
    """The pieces (their members, batch -> version) the index should have for `wanted`, given the
    pieces it has: stale pieces dropped, their still-wanted members and the new ones in one piece,
    then, smallest first, two pieces of one tier become one until every tier has at most one."""
    kept = [p for p in pieces if p and all(wanted.get(b) == v for b, v in p.items())]
    held = {b for p in kept for b in p}
    loose = {b: v for b, v in wanted.items() if b not in held}
    planned = kept + ([loose] if loose else [])
    while True:
        planned.sort(key=lambda p: (len(p), sorted(p)))
        by_tier: dict[int, int] = {}
        for i, piece in enumerate(planned):
            other = by_tier.setdefault(tier(len(piece)), i)
            if other != i:
                merged = {**planned[other], **piece}
                planned = [p for j, p in enumerate(planned) if j not in (i, other)] + [merged]
                break
        else:
            return planned


def digest(members: dict[str, str]) -> str:
    """A piece's name: the digest of its members, so the same members are the same files."""
    return hashlib.sha256("\n".join(f"{b}={v}" for b, v in sorted(members.items())).encode()).hexdigest()[:20]


def composed_of(members: dict[str, str], have: list[dict]) -> list[dict]:
    """The catalog entries of `have` a planned piece can be built from as they are: those whose members
    all lie in it with the same versions (plan() only ever merges whole kept pieces)."""
    return [p for p in have if p["members"] and all(members.get(b) == v for b, v in p["members"].items())]


def read_catalog(storage: Storage, key: str, fields: set[str], kind: str, fix: str) -> dict | None:
    """A catalog ({"pieces": [...]}, each piece with `fields`), or None when there is none; DamagedLake
    naming it and `fix` when it cannot be read."""
    if key not in storage.sizes(key):  # a listing, not a GET that may answer 403 for a missing key
        return None
    try:
        catalog = json.loads(storage.read_bytes(key))
        if any(not fields <= set(piece) for piece in catalog["pieces"]):
            raise KeyError(f"a piece without its {', '.join(sorted(fields))}")
    except (ValueError, KeyError, TypeError) as exc:
        raise commits.DamagedLake(f"{storage.name}{key} is not {kind} ({type(exc).__name__}: {exc}); {fix}") from None
    return catalog
