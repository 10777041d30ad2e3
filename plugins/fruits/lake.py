"""The local lake: a folder that stands for the bucket when backend=local.

`s3://<bucket>/<key>` maps to `<lake>/<key>`, so the step arguments EMR would run can be executed
locally unchanged apart from this mapping. The lake is `./data/lake` of the repository unless the
environment variable FRUITS_LOCAL_LAKE says otherwise.
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def default_lake() -> Path:
    return Path(os.environ.get("FRUITS_LOCAL_LAKE") or REPO / "data" / "lake").resolve()


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def to_local(uri: str, lake: Path) -> str:
    """s3://bucket/key -> <lake>/key (keeping a trailing slash); anything else is returned as is."""
    if not uri.startswith("s3://"):
        return uri
    _, key = split_s3(uri)
    local = str(Path(lake) / key) if key else str(lake)
    return local + "/" if key.endswith("/") else local
