"""make bench-ingest: a day's photos as one object each vs packed in Parquet shards, side by side.

    python bench/bench_ingest.py [--photos 20000] [--latency-ms 25] [--features-photos 1000]

1. Ingest wall time against an S3 endpoint on this machine: moto's S3 server behind a proxy (below)
   that holds every request for a fixed latency before forwarding it. 25 ms: AWS's S3 performance
   whitepaper gives median latencies "in the tens of milliseconds" for small requests (< 512 KB)
   ("Timeouts and Retries for Latency-Sensitive Applications", Best Practices Design Patterns:
   Optimizing Amazon S3 Performance). Both ingests run today's code path for their form: one PUT
   per photo in a loop (LOOSE, the batches of before shards), and shards through boto3's managed
   transfer (PACKED). The proxy counts the requests each made.
2. The features job (local[2], the local backend's Spark) on the same photos, loose and packed:
   images/s, and the driver's listing time (binaryFile's listing of the loose prefix and
   Spark's hidden-file listing, against the shards' Parquet listing) on all the photos.
3. S3 requests per 100,000 photos for each layout, and what they cost at the latency above on an
   8-core EMR node: the ingest's from the requests counted here, the Spark side's from the job's
   own calls and S3A's documented behaviour (they cannot be recorded without S3).

Photos are generated (distinct: ingest drops a second copy of the same bytes), ~5 KB JPEGs of
100x100 pixels like Fruits-360's.
"""

import argparse
import http.client
import json
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fruits.lake import transfer

BUCKET = "fruits-bench"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_kind(method: str, target: str) -> str:
    """The S3 operation of a path-style request, by method and query (what the counts are kept by)."""
    query = parse_qs(urlsplit(target).query, keep_blank_values=True)
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        return "CompleteMultipartUpload" if "uploadId" in query else "CreateMultipartUpload"
    if method == "GET":
        return "ListObjects" if "list-type" in query or urlsplit(target).path.count("/") <= 1 else "GetObject"
    return {"HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


class LatencyProxy(ThreadingHTTPServer):
    """HTTP/1.1 proxy to one upstream that holds each request `latency` seconds before forwarding
    it, and counts requests by S3 operation. Stand-in for the round trip to S3 (the server itself,
    moto, answers in a millisecond or two on this machine)."""

    daemon_threads = True

    def __init__(self, upstream_port: int, latency: float):
        self.upstream_port, self.latency, self.counts = upstream_port, latency, Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", free_port()), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # one line per request would drown the figures
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self):
        body = self._body()
        server: LatencyProxy = self.server  # type: ignore[assignment]
        with server.lock:
            server.counts[request_kind(self.command, self.path)] += 1
        time.sleep(server.latency)
        upstream = getattr(self, "_upstream", None) or http.client.HTTPConnection("127.0.0.1", server.upstream_port)
        self._upstream = upstream
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


def generate_photos(root: Path, n: int, classes: int = 40, seed: int = 0) -> int:
    """n distinct ~5 KB JPEGs (100x100, a gradient and noise) in Training/<class>/; returns their bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 100)[None, :, None]
    total = 0
    for i in range(n):
        folder = root / "Training" / f"Fruit {i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, 3)
        pixels = base * (0.6 + 0.4 * ramp) + rng.normal(0, 9, (100, 100, 3))
        path = folder / f"{i}_100.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total


def s3_setup(endpoint: str, home: Path) -> None:
    """Airflow's aws_default connection (what S3Storage uses) pointing at the proxy, and the bucket."""
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {"conn_type": "aws", "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}
            ),
        }
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)


def timed_ingest(landing: Path, storage, batch: str, form: str, proxy: LatencyProxy) -> dict:
    from fruits.lake.ingest import ingest

    proxy.counts.clear()
    started = time.perf_counter()
    report = ingest(landing, storage, batch, form=form)
    return {"seconds": time.perf_counter() - started, "requests": dict(proxy.counts), "report": report}


def listing_seconds(spark, lake: Path, batch: str, form: str) -> float:
    """The driver's listing of a batch before any photo is read, as the job does it for each form."""
    from fruits_jobs import contract, hadoop_fs, layout

    root = hadoop_fs.qualify(spark, str(lake / layout.raw_prefix(batch)))
    started = time.perf_counter()
    if form == contract.LOOSE:
        files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(root)
        files.inputFiles()
        hadoop_fs.list_skipped_by_spark(spark, root)
    else:
        manifest = json.loads((lake / layout.manifest_key(batch)).read_text())
        shards = sorted({e["shard"].rpartition("/")[2] for e in manifest["files"] if e["shard"]})
        for name in shards:
            hadoop_fs.exists(spark, f"{root}/{name}")
        spark.read.parquet(*[f"{root}/{name}" for name in shards]).inputFiles()
    return time.perf_counter() - started


def features_run(spark, lake: Path, batch: str, weights: str) -> dict:
    from fruits_jobs import features

    argv = [
        "--images",
        str(lake / "raw" / f"batch_id={batch}"),
        "--features",
        str(lake / "features"),
        "--rejects",
        str(lake / "rejects"),
        "--batch-id",
        batch,
        "--weights",
        weights,
        "--manifest",
        str(lake / "manifests" / f"batch_id={batch}.json"),
        "--lease",
        str(lake / "manifests" / f"batch_id={batch}.lease"),
    ]
    return features.run(spark, features.parse_args(argv))


def shard_requests(batch_bytes: float) -> int:
    """Requests to upload a batch's shards of batch_bytes in all, as transfer.py configures boto3."""
    from fruits.lake import packing

    full, rest = divmod(int(batch_bytes), packing.SHARD_BYTES)
    sizes = [packing.SHARD_BYTES] * full + ([rest] if rest else [])
    per_shard = [
        1 if size < transfer.MULTIPART_THRESHOLD else math.ceil(size / transfer.MULTIPART_CHUNKSIZE) + 2
        for size in sizes
    ]
    return sum(per_shard)


def spark_requests(photos: int, photo_bytes: float, cores: int) -> dict:
    """S3 requests of the features job for `photos` photos, per layout (see the module's notes)."""
    from fruits.lake import packing
    from fruits_jobs.features import task_count

    pages = math.ceil(photos / 1000)  # ListObjectsV2 returns at most 1,000 keys a page
    loose = {
        # binaryFile's recursive listing, then our list_skipped_by_spark (the same prefix again)
        "LIST": 2 * pages,
        # per photo: S3A's open() looks the object up (HEAD) and reads it (GET): Spark's
        # BinaryFileFormat opens each file with fs.open(path), without the listed status
        "HEAD": photos + 2,  # + the manifest and the lease
        "GET": photos + 2,
    }
    shards = math.ceil(photos * photo_bytes / packing.SHARD_BYTES)
    tasks = task_count(photos, cores)
    packed = {
        "LIST": 1,  # list_names of the batch prefix (strays)
        # our exists() per shard, the Parquet listing of the shard files, one footer lookup per task
        "HEAD": 2 * shards + tasks + 2,
        # per task: the footer (S3A reads the tail, then the footer) and the row group's column chunks
        # (one ranged GET each for path, size, bytes); the driver reads each footer once for the schema
        "GET": tasks * (2 + 3) + shards + 2,
    }
    return {"loose": loose, "packed": packed, "shards": shards, "tasks": tasks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=20_000)
    ap.add_argument("--latency-ms", type=float, default=25.0)
    ap.add_argument("--features-photos", type=int, default=1000, help="photos of the features runs (model time)")
    ap.add_argument("--emr-cores", type=int, default=8)
    args = ap.parse_args(argv)
    if args.photos < 1 or args.features_photos < 1:
        ap.error("--photos and --features-photos must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="fruits-bench-ingest-"))
    landing = work / "landing"
    started = time.perf_counter()
    total_bytes = generate_photos(landing, args.photos)
    print(
        f"{args.photos} photos, {total_bytes / 1e6:.1f} MB ({total_bytes / args.photos / 1e3:.1f} KB each) "
        f"generated in {time.perf_counter() - started:.0f} s",
        flush=True,
    )

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs each request

    moto_port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    server.start()
    proxy = LatencyProxy(moto_port, args.latency_ms / 1000)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    s3_setup(f"http://127.0.0.1:{proxy.server_address[1]}", work / "airflow")

    from fruits.lake.ingest import ingest
    from fruits.lake.storage import LocalStorage, S3Storage
    from fruits_jobs import contract

    storage = S3Storage(BUCKET, "aws_default")
    warm = work / "landing-warm-up"  # the first ingest pays for imports and the connection's lookup
    generate_photos(warm, 2, seed=2)
    for form in (contract.PACKED, contract.LOOSE):
        ingest(warm, storage, f"warm-up-{form}", form=form)
    results = {}
    for form in (contract.PACKED, contract.LOOSE):
        results[form] = timed_ingest(landing, storage, f"bench-{form}", form, proxy)
        print(f"ingest {form}: {results[form]['seconds']:.1f} s, requests {results[form]['requests']}", flush=True)
    proxy.shutdown()
    server.stop()

    # The features job, local[2], on lakes in folders (Spark here has no S3 client: see the table's notes)
    from fruits.config.settings import shared_weights
    from fruits_jobs.common import spark_session
    from fruits_jobs.features import spark_conf

    weights = shared_weights() or "random"
    few = work / "landing-few"
    generate_photos(few, args.features_photos, seed=1)
    lakes = {form: work / f"lake-{form}" for form in (contract.PACKED, contract.LOOSE)}
    conf_args = argparse.Namespace(images=str(work), batch_size=32)
    spark = spark_session("bench-ingest", {"spark.master": "local[2]", **spark_conf(conf_args)})
    job, listing = {}, {}
    try:
        for form, lake in lakes.items():
            LocalStorage(lake).root.mkdir(parents=True)
            ingest(landing, LocalStorage(lake), "all", form=form)
            ingest(few, LocalStorage(lake), "few", form=form)
        for form, lake in [*lakes.items(), *lakes.items()]:  # the first round warms the JVM up
            listing[form] = listing_seconds(spark, lake, "all", form)
        features_run(spark, lakes[contract.PACKED], "few", weights)  # warm-up: model export, workers
        for form, lake in lakes.items():
            job[form] = features_run(spark, lake, "few", weights)
    finally:
        spark.stop()

    per_photo = total_bytes / args.photos
    spark_counts = spark_requests(100_000, per_photo, args.emr_cores)
    latency = args.latency_ms / 1000
    lines = [
        "",
        f"Ingest of {args.photos} photos ({total_bytes / 1e6:.0f} MB) to moto's S3 server, "
        f"+{args.latency_ms:g} ms a request:",
    ]
    for form in (contract.LOOSE, contract.PACKED):
        r = results[form]
        lines.append(
            f"  {form:8} {r['seconds']:8.1f} s  {args.photos / r['seconds']:8.0f} photos/s  "
            f"requests {sum(r['requests'].values()):6d} {r['requests']}"
        )
    speedup = results[contract.LOOSE]["seconds"] / results[contract.PACKED]["seconds"]
    lines.append(f"  packed is {speedup:.1f}x faster (target >= 20x)")
    lines.append(f"Features job, local[2], weights {Path(weights).name}, {args.features_photos} photos:")
    for form in (contract.LOOSE, contract.PACKED):
        lines.append(
            f"  {form:8} {job[form]['images_per_s']:8.1f} images/s   listing of {args.photos} photos: "
            f"{listing[form]:.2f} s"
        )
    lines.append(
        f"S3 requests per 100,000 photos ({per_photo / 1e3:.1f} KB each), and their time at {args.latency_ms:g} ms "
        f"on an {args.emr_cores}-core EMR node:"
    )
    scale = 100_000 / args.photos
    for form in (contract.LOOSE, contract.PACKED):
        counted = sum(results[form]["requests"].values())
        if form == contract.LOOSE:  # one PutObject per photo; the rest (listings, manifest, lease) per batch
            data, data_100k = args.photos, 100_000
        else:  # per shard: one PutObject, or a multipart upload (create, parts, complete)
            data = shard_requests(total_bytes)
            data_100k = shard_requests(per_photo * 100_000)
        ingest_requests = counted - data + data_100k
        # one request after another (loose); up to MAX_CONCURRENCY at once (packed's managed transfer)
        ingest_s = ingest_requests * latency / (1 if form == contract.LOOSE else transfer.MAX_CONCURRENCY)
        s = spark_counts["loose" if form == contract.LOOSE else "packed"]
        spark_s = sum(s.values()) * latency / args.emr_cores  # each task's requests in turn, a task per core
        lines.append(
            f"  {form:8} ingest {ingest_requests:7d} requests, {ingest_s:7.1f} s at the latency alone "
            f"(measured here x{scale:g}: {results[form]['seconds'] * scale:7.1f} s) | "
            f"Spark LIST {s['LIST']:4d} HEAD {s['HEAD']:7d} GET {s['GET']:7d}: {spark_s:6.1f} s"
        )
    lines.append(
        f"  (packed Spark side: {spark_counts['shards']} shards, {spark_counts['tasks']} tasks of ~2,000 photos)"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
