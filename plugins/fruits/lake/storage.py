"""The one interface ingest, staging and publishing use to reach "the bucket".

Two implementations, one code path above them: S3 through the amazon provider's S3Hook (the
`aws_default` connection carries region and credentials; outside Airflow, aws_conn_id=None: boto3's
default credential chain, as the provider documents), and a local folder for backend=local.
"""

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from fruits.lake.transfer import RETRIES, Progress, Upload, s3_upload_all, transfer_config
from fruits_jobs.digests import file_digests

# S3's ETag is the object's MD5 for a single-part upload without SSE-KMS; otherwise it is something
# else (multipart: "<md5 of md5s>-<parts>"), and then no MD5 is known.
_MD5_ETAG = re.compile(r'"?([0-9a-f]{32})"?')


class Storage(Protocol):
    name: str  # where it points, for logs: s3://bucket/ or a folder

    def sizes(self, prefix: str) -> dict[str, int]: ...  # key -> size of every object under prefix

    # key -> (size, MD5 hex or None when the store cannot say) of every object under prefix
    def fingerprints(self, prefix: str) -> dict[str, tuple[int, str | None]]: ...

    def upload_file(self, path: Path, key: str) -> None: ...

    # Many files, several at a time where the store allows it; each upload's metadata goes with it
    # (S3 keeps it with the object, multipart or not); progress counts files and bytes.
    def upload_files(self, uploads: Iterable[Upload], progress: Progress) -> None: ...

    # The sha256 an object was stored with (upload_files' metadata "sha256"; a folder: computed), or None
    def stored_sha256(self, key: str) -> str | None: ...

    def put_bytes(self, data: bytes, key: str) -> None: ...

    def read_text(self, key: str) -> str: ...

    # A file on this machine holding the object: the folder's own file, or a download into scratch
    # (what readers that need a real file use: Parquet footers, memory-mapped index pieces).
    def local_file(self, key: str, scratch: Path) -> Path: ...

    def read_bytes(self, key: str) -> bytes: ...

    def delete(self, keys: list[str]) -> None: ...  # these objects gone (absent ones: nothing to do)

    # delta-rs's storage options for this store's Delta tables (None: its own defaults suffice)
    def delta_options(self) -> dict[str, str] | None: ...


class S3Storage:
    def __init__(self, bucket: str, aws_conn_id: str | None, transfer=None):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        self.bucket = bucket
        self.name = f"s3://{bucket}/"
        # adaptive: S3's SlowDown/503 also slow the client down, not only retry it
        self.hook = S3Hook(aws_conn_id=aws_conn_id, config=Config(retries=RETRIES))
        self.transfer = transfer or transfer_config()

    def sizes(self, prefix: str) -> dict[str, int]:
        return {o["Key"]: o["Size"] for o in self.hook.iter_file_metadata(prefix=prefix, bucket_name=self.bucket)}

    def fingerprints(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        found = {}
        for o in self.hook.iter_file_metadata(prefix=prefix, bucket_name=self.bucket):
            md5 = _MD5_ETAG.fullmatch(o.get("ETag", ""))
            found[o["Key"]] = (o["Size"], md5.group(1) if md5 else None)
        return found

    def upload_file(self, path: Path, key: str) -> None:
        self.hook.load_file(filename=str(path), key=key, bucket_name=self.bucket, replace=True)

    def upload_files(self, uploads: Iterable[Upload], progress: Progress) -> None:
        s3_upload_all(self.hook.get_conn(), self.bucket, uploads, progress, self.transfer)

    def stored_sha256(self, key: str) -> str | None:
        head = self.hook.get_conn().head_object(Bucket=self.bucket, Key=key)
        return head.get("Metadata", {}).get("sha256")

    def put_bytes(self, data: bytes, key: str) -> None:
        self.hook.load_bytes(data, key=key, bucket_name=self.bucket, replace=True)

    def read_text(self, key: str) -> str:
        return self.hook.read_key(key=key, bucket_name=self.bucket)

    def local_file(self, key: str, scratch: Path) -> Path:
        path = Path(scratch) / key.rsplit("/", 1)[-1]
        self.hook.get_conn().download_file(self.bucket, key, str(path))
        return path

    def read_bytes(self, key: str) -> bytes:
        return self.hook.get_conn().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def delete(self, keys: list[str]) -> None:
        # One DeleteObject a key: IAM authorises each key (a few per call here), and a bulk
        # DeleteObjects needs a Content-MD5 that some S3-compatible stores reject.
        client = self.hook.get_conn()
        for key in keys:
            client.delete_object(Bucket=self.bucket, Key=key)

    def delta_options(self) -> dict[str, str] | None:
        """The connection's credentials and region for delta-rs, which talks to S3 itself (not through
        boto3): the same identity as every other call of this store. Passed in memory, never logged."""
        credentials = self.hook.get_credentials()
        options = {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_REGION": self.hook.conn_region_name or "",
        }
        if credentials.token:
            options["AWS_SESSION_TOKEN"] = credentials.token
        # The connection's endpoint, else the one boto3 also takes from the environment (tests: moto's server)
        endpoint = self.hook.conn_config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            options["AWS_ENDPOINT_URL"] = endpoint
            options["AWS_ALLOW_HTTP"] = "true" if endpoint.startswith("http://") else "false"
        return {k: v for k, v in options.items() if v}


_IN_PROGRESS = ".in-progress."


class LocalStorage:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = f"{self.root}/"

    def sizes(self, prefix: str) -> dict[str, int]:
        # Walk only the deepest folder the prefix names, then filter like S3's prefix match.
        base = self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return {}
        found = {}
        for path in base.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith(_IN_PROGRESS):
                found[key] = path.stat().st_size
        return found

    def fingerprints(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        return {key: (size, file_digests(self.root / key, "md5")[0]) for key, size in self.sizes(prefix).items()}

    def _write(self, key: str, write) -> None:
        # Write beside, then rename: an interrupted copy never looks like a complete object, and
        # its leading '.' keeps Spark's file listing from reading a leftover. A short random name:
        # a prefix on a long file name could pass the file system's 255-byte limit.
        dest = self.root / key
        if dest.with_name(f".{dest.name}.crc").exists():
            # Hadoop's local filesystem wrote it: a new content would fail the checksum beside it the next
            # time a job reads it. Files the Airflow side writes are its alone (docs/lake.md, 'Publishing').
            raise RuntimeError(
                f"{dest} was written by Spark (Hadoop keeps .{dest.name}.crc beside it): the Airflow side "
                "never replaces a job's file; write to a file of its own instead"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{_IN_PROGRESS}{uuid.uuid4().hex}")
        write(tmp)
        os.replace(tmp, dest)

    def upload_file(self, path: Path, key: str) -> None:
        self._write(key, lambda tmp: shutil.copyfile(path, tmp))

    def upload_files(self, uploads: Iterable[Upload], progress: Progress) -> None:
        # One disk: one copy at a time. The metadata needs no keeping: stored_sha256 reads the file.
        for upload in uploads:
            self.upload_file(upload.path, upload.key)
            progress.add_bytes(upload.path.stat().st_size)
            progress.add_file()
            upload.done()

    def stored_sha256(self, key: str) -> str | None:
        path = self.root / key
        return file_digests(path, "sha256")[0] if path.is_file() else None

    def put_bytes(self, data: bytes, key: str) -> None:
        self._write(key, lambda tmp: tmp.write_bytes(data))

    def read_text(self, key: str) -> str:
        return (self.root / key).read_text()

    def local_file(self, key: str, scratch: Path) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)

    def delta_options(self) -> dict[str, str] | None:
        return None


def storage_at(root: str, bucket: str, aws_conn_id: str) -> Storage:
    """The bucket a run's jobs reach at root: s3://<bucket>/ through the connection, or a folder."""
    return S3Storage(bucket, aws_conn_id) if root.startswith("s3://") else LocalStorage(Path(root))


def upload_missing(storage: Storage, prefix: str, files: dict[str, Path]) -> None:
    """Upload {name: local path} under prefix, but what is there already with the same size: several
    at a time through the store's upload_files, with the same progress lines as ingest's shards."""
    present = storage.sizes(prefix)
    todo = [
        (prefix + name, path)
        for name, path in sorted(files.items())
        if present.get(prefix + name) != path.stat().st_size
    ]
    with Progress(f"upload to {storage.name}{prefix}", len(todo), sum(p.stat().st_size for _, p in todo)) as progress:
        storage.upload_files((Upload(path, key) for key, path in todo), progress)
