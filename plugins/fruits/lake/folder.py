"""The local lake: a folder that stands for the bucket when backend=local.

`s3://<bucket>/<key>` is `<lake>/<key>` (the setting local_lake, env FRUITS_LOCAL_LAKE).
"""

from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from fruits.config.settings import setting_from_env


def default_lake() -> Path:
    return Path(str(setting_from_env("local_lake"))).expanduser().resolve()


def to_local(uri: str, lake: Path) -> str:
    """s3://bucket/key -> <lake>/key (keeping a trailing slash); anything else is returned as is."""
    if not uri.startswith("s3://"):
        return uri
    _, key = S3Hook.parse_s3_url(uri)
    local = str(Path(lake) / key) if key else str(lake)
    return local + "/" if key.endswith("/") else local
