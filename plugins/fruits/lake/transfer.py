"""Many files up to the bucket at once: boto3's managed transfer, and the progress a task logs.

S3 answers one request in tens of milliseconds whatever its size, so a batch goes up as few large
objects (packed shards), several at a time, each in parallel parts: boto3's TransferManager does
the multipart upload, its part concurrency and its retries; the client retries SlowDown/503 with
the adaptive mode (client-side rate limiting), not only a fixed backoff.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Parts of 16 MB: a 128 MB shard goes up as 8 parts in parallel; 10 connections in all (urllib3's
# default pool), shared by the shards in flight.
MULTIPART_THRESHOLD = 16 * MB
MULTIPART_CHUNKSIZE = 16 * MB
MAX_CONCURRENCY = 10
# Files built but not yet uploaded: bounds the local disk a batch's shards take to this many.
IN_FLIGHT = 4
RETRIES = {"mode": "adaptive", "max_attempts": 10}
PROGRESS_EVERY_S = 10.0


def transfer_config(threshold: int = MULTIPART_THRESHOLD, chunksize: int = MULTIPART_CHUNKSIZE):
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=threshold,
        multipart_chunksize=chunksize,
        max_concurrency=MAX_CONCURRENCY,
        use_threads=True,
    )


@dataclass
class Upload:
    """One local file for one key; done() runs once it is stored (e.g. deletes a built shard)."""

    path: Path
    key: str
    metadata: dict[str, str] = field(default_factory=dict)
    photos: int = 1
    done: Callable[[], None] = lambda: None


def rate_line(what: str, files: tuple[int, int], sent: tuple[int, int], seconds: float) -> str:
    """'upload: 3/8 files, 41.0/128.0 MB, 12.3 MB/s, ~7 s left' (time left once a rate is known)."""
    (done, total), (sent_bytes, total_bytes) = files, sent
    rate = sent_bytes / seconds / MB if seconds > 0 else 0.0
    left = f"~{max(0, total_bytes - sent_bytes) / MB / rate:.0f} s left" if rate > 0 else "time left unknown yet"
    return f"{what}: {done}/{total} files, {sent_bytes / MB:.1f}/{total_bytes / MB:.1f} MB, {rate:.1f} MB/s, {left}"


class Progress:
    """Counts files and bytes from the transfer's threads; logs a line every `every` seconds while
    in use (a thread of its own: a slow file still gets its lines), and a last one at the end."""

    def __init__(self, what: str, total_files: int, total_bytes: int, every: float = PROGRESS_EVERY_S):
        self.what, self.total_files, self.total_bytes, self.every = what, total_files, total_bytes, every
        self.files = self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._tick, name=f"progress-{what}", daemon=True)

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def skip(self, files: int, size: int) -> None:
        """Files found already stored: out of the totals, so the rate and time left stay true."""
        with self._lock:
            self.total_files -= files
            self.total_bytes -= size

    def add_file(self) -> None:
        with self._lock:
            self.files += 1

    def line(self) -> str:
        with self._lock:
            files, sent = self.files, self.sent
        return rate_line(
            self.what, (files, self.total_files), (sent, self.total_bytes), time.monotonic() - self._started
        )

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            log.info("%s", self.line())

    def __enter__(self) -> "Progress":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            log.info("%s (done)", self.line())


def s3_upload_all(client, bucket: str, uploads: Iterable[Upload], progress: Progress, config=None) -> None:
    """Upload every file through one TransferManager: up to IN_FLIGHT files at once, each in
    parallel parts; uploads is read lazily, so files can be built while earlier ones go up."""
    from boto3.s3.transfer import create_transfer_manager
    from s3transfer.subscribers import BaseSubscriber

    class Counted(BaseSubscriber):
        def on_progress(self, bytes_transferred, **kwargs):
            progress.add_bytes(bytes_transferred)

    pending: deque = deque()

    def finish_oldest() -> None:
        future, upload = pending.popleft()
        future.result()  # raises what the upload raised (after boto3's retries)
        progress.add_file()
        upload.done()

    with create_transfer_manager(client, config or transfer_config()) as manager:
        for upload in uploads:
            while len(pending) >= IN_FLIGHT:
                finish_oldest()
            future = manager.upload(
                str(upload.path),
                bucket,
                upload.key,
                extra_args={"Metadata": upload.metadata},
                subscribers=[Counted()],
            )
            pending.append((future, upload))
        while pending:
            finish_oldest()
