"""Content digests of local files (standard library only): the one helper the jobs and the Airflow
side both use to name things by content."""

import hashlib


def file_digests(path, *algorithms: str) -> tuple[str, ...]:
    """Hex digests of a file's content, one per hashlib algorithm, in one read of the file."""
    digests = [hashlib.new(name, usedforsecurity=False) for name in algorithms]
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            for digest in digests:
                digest.update(block)
    return tuple(digest.hexdigest() for digest in digests)
