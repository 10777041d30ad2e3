"""The local lake: a folder that stands for the bucket when backend=local.

`s3://<bucket>/<key>` is `<lake>/<key>` (the setting local_lake, env FRUITS_LOCAL_LAKE).
"""
from pathlib import Path

from fruits.settings import setting_from_env


def default_lake() -> Path:
    return Path(setting_from_env("local_lake")).expanduser().resolve()


S3_NOT_FOUND = ("NoSuchKey", "404")  # GetObject's and HeadObject's codes for a missing key


def aws_error_code(error) -> str:
    """The error code of a botocore ClientError ("" when it has none)."""
    return error.response.get("Error", {}).get("Code", "")


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
