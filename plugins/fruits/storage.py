"""The one interface ingest, staging and publishing use to reach "the bucket".

Two implementations, one code path above them: S3 through the amazon provider's S3Hook (the
`aws_default` connection carries region and credentials), and a local folder for backend=local.
"""
import os
import shutil
from pathlib import Path
from typing import Dict, Protocol


class Storage(Protocol):
    name: str  # where it points, for logs: s3://bucket/ or a folder

    def sizes(self, prefix: str) -> Dict[str, int]: ...  # key -> size of every object under prefix

    def upload_file(self, path: Path, key: str) -> None: ...

    def put_bytes(self, data: bytes, key: str) -> None: ...

    def read_text(self, key: str) -> str: ...


class S3Storage:
    def __init__(self, bucket: str, aws_conn_id: str):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        self.bucket = bucket
        self.name = f"s3://{bucket}/"
        self.hook = S3Hook(aws_conn_id=aws_conn_id)

    def sizes(self, prefix: str) -> Dict[str, int]:
        return {o["Key"]: o["Size"] for o in self.hook.iter_file_metadata(prefix=prefix, bucket_name=self.bucket)}

    def upload_file(self, path: Path, key: str) -> None:
        self.hook.load_file(filename=str(path), key=key, bucket_name=self.bucket, replace=True)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.hook.load_bytes(data, key=key, bucket_name=self.bucket, replace=True)

    def read_text(self, key: str) -> str:
        return self.hook.read_key(key=key, bucket_name=self.bucket)


class LocalStorage:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = f"{self.root}/"

    def sizes(self, prefix: str) -> Dict[str, int]:
        # Walk only the deepest folder the prefix names, then filter like S3's prefix match.
        base = self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return {}
        found = {}
        for path in base.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith(".in-progress."):
                found[key] = path.stat().st_size
        return found

    def _write(self, key: str, write) -> None:
        # Write beside, then rename: an interrupted copy never looks like a complete object, and
        # its leading '.' keeps Spark's file listing from reading a leftover.
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(".in-progress." + dest.name)
        write(tmp)
        os.replace(tmp, dest)

    def upload_file(self, path: Path, key: str) -> None:
        self._write(key, lambda tmp: shutil.copyfile(path, tmp))

    def put_bytes(self, data: bytes, key: str) -> None:
        self._write(key, lambda tmp: tmp.write_bytes(data))

    def read_text(self, key: str) -> str:
        return (self.root / key).read_text()
