"""The `fruits` command (the venv's console script, or `python -m fruits.tools.cli`): answers about the
lake, without pandas, and demo photos. The local lake by default, `--lake DIR` for another, or
`--lake s3://bucket` (boto3's default credentials: environment, profile, instance role).

    fruits batches [--check]        every batch: photos read, featurized, rejected; PCA k (--check: health)
    fruits rejects BATCH            a batch's rejected files: path in the landing folder, reason, detail
    fruits similar PHOTO [--k 5]    the stored photos nearest to PHOTO (cosine in the current space)
    fruits index                    build the current space's missing index pieces (the DAG does it too)
    fruits where [--batch-id ID]    where a batch's outputs are (default: the batch processed last)
    fruits check                    every batch's record readable, the tables' logs too, their files present
    fruits migrate                  convert a lake written before the Delta tables (once)
    fruits photo BATCH PATH > f.jpg  one stored photo, byte for byte (PATH: as in the landing folder)
    fruits demo DIR                 generate demo photos (and odd files) in a Fruits-360 layout
    fruits sql "QUERY" [--as-of T]  DuckDB SQL over the Delta tables features, rejects and vectors

Everything is read through the Delta tables' logs (what is published), never from half-written runs.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from fruits.lake import migrate, vector_index
from fruits.lake.folder import default_lake
from fruits.lake.health import batch_problems, known_batches, table_problems
from fruits.lake.ingest import NotStored, stored_photo
from fruits.lake.published import current_space, latest_processed_batch, published_record, published_runs
from fruits.lake.storage import LocalStorage, S3Storage, Storage
from fruits.lake.summary import format_locations, read_summary, readable
from fruits.tools import demo_images, sql
from fruits_jobs import layout, tables
from fruits_jobs.commits import DamagedLake
from fruits_jobs.contract import NAMED_WEIGHTS, ONNX_SUFFIX, weights_suffix
from fruits_jobs.images import RejectedImage


def batches_table(storage: Storage, check: bool = False) -> list[str]:
    """Published batches, oldest first (by their current run's id), read from the tables' logs alone
    (the features and rejects tables' file statistics, the space once): no folder listing, no record
    per batch. check: add the health column (batch_problems: each batch's record and folders)."""
    options = storage.delta_options()
    featured = tables.batch_rows(storage.name + layout.FEATURES, options)
    rejected = tables.batch_rows(storage.name + layout.REJECTS, options)
    space = current_space(storage)
    runs = {batch: run for batch, (run, _) in featured.items()}
    rows = [
        f"{'batch':<24} {'read':>7} {'featurized':>10} {'rejected':>8} {'k':>5} {'variance':>8}" + ("  health" * check)
    ]
    for batch in sorted(featured, key=lambda batch: runs[batch]):
        rejects_run, rejects = rejected.get(batch, (runs[batch], 0))
        if rejects_run != runs[batch]:  # a later run's rejects, its features never committed:
            rejects = recorded_rejects(storage, batch, runs)  # the published run's record says
        counts = [featured[batch][1], rejects]
        read = "-" if None in counts else sum(counts)  # type: ignore[arg-type]
        pca = space if space is not None and space["features_runs"].get(batch) == runs[batch] else {}
        variance = f"{pca['total_explained_variance']:.3f}" if pca else "-"
        health = ("  DAMAGED (fruits check)" if batch_problems(storage, batch, runs) else "  ok") if check else ""
        rows.append(
            f"{batch:<24} {read:>7} {_dash(counts[0]):>10} {_dash(counts[1]):>8} "
            f"{pca.get('k', '-'):>5} {variance:>8}{health}"
        )
    return rows


def recorded_rejects(storage: Storage, batch: str, runs: dict[str, str]) -> int | None:
    try:
        return (published_record(storage, batch, runs) or {}).get("rejected")
    except DamagedLake:  # fruits check names it
        return None


def _dash(value) -> str:
    return "-" if value is None else str(value)


def landing_path(path: str, batch: str) -> str:
    """A stored photo's path as it was in the landing folder (its key under raw/batch_id=<id>/)."""
    marker = "/" + layout.raw_prefix(batch)
    return path.split(marker, 1)[1] if marker in path else path


def rejects_rows(storage: Storage, batch: str) -> list[str]:
    """The batch's current rows in the rejects table (read through its Delta log)."""
    if batch not in published_runs(storage):
        raise SystemExit(f"no published batch {batch!r} in {storage.name}: see `fruits batches`")
    rows = table_rows(storage, layout.REJECTS, batch, ["path", "reason", "detail"])
    if not rows:
        return [f"batch {batch}: no rejected file"]
    return [
        f"{landing_path(r['path'], batch)}\t{r['reason']}\t{r['detail']}" for r in sorted(rows, key=lambda r: r["path"])
    ]


def table_rows(storage: Storage, folder: str, batch: str, columns: list[str]) -> list[dict]:
    """One batch's current rows of a lake table (none when the table does not exist yet)."""
    if not tables.exists(storage.name + folder, storage.delta_options()):
        return []
    delta = tables.open_table(storage.name + folder, storage.delta_options())
    try:
        table = delta.to_pyarrow_table(partitions=[(layout.PARTITION_COLUMN, "=", batch)], columns=columns)
    except (OSError, ValueError) as exc:  # a data file gone or cut short (pyarrow's ArrowInvalid is a ValueError)
        first = str(exc).splitlines()[0]
        raise DamagedLake(
            f"table {folder.rstrip('/')}: {first}; re-run batch {batch} (docs/operations.md, 'Repair')"
        ) from None
    return table.to_pylist()


def photo_features(
    photo: Path, weights: str, image_size: int, storage: Storage, extractor: dict | None = None
) -> np.ndarray:
    """The features of one photo, computed as the batch's were (same weights and size): from the
    ONNX export the features job kept in models/ when there is one, else exported here; for a space
    of INT8 features (extractor), the INT8 graph the job kept."""
    from fruits_jobs import model as mobilenet
    from fruits_jobs.digests import file_digests
    from fruits_jobs.extractors import weights_name
    from fruits_jobs.images import decode_image

    image = decode_image(photo.read_bytes(), image_size)[None]
    if extractor and extractor.get("precision") == "int8":
        int8 = kept_int8_graph(storage, extractor, image_size)
        return mobilenet.featurize(
            mobilenet.worker_infer_fn(("cli", extractor["id"]), lambda: int8, cores=1), image, 1
        )[0]
    exported: mobilenet.EngineModel | None = None
    if weights in NAMED_WEIGHTS or Path(weights).is_file():
        if weights_suffix(weights) == ONNX_SUFFIX:
            exported = mobilenet.onnx_model(Path(weights).read_bytes(), image_size, weights)
        else:
            sha256 = None if weights in NAMED_WEIGHTS else file_digests(weights, "sha256")[0]
            name = mobilenet.onnx_cache_name(weights_name(weights, image_size, sha256), image_size)
            kept = Path(storage.name) / layout.MODELS / name
            if kept.is_file():
                exported = mobilenet.onnx_model(kept.read_bytes(), image_size, str(kept))
    if exported is None:
        exported = mobilenet.export_onnx(mobilenet.load_model(weights, image_size))
    return mobilenet.featurize(mobilenet.worker_infer_fn(("cli", weights), lambda: exported, cores=1), image, 1)[0]


def kept_int8_graph(storage: Storage, extractor: dict, image_size: int):
    """The INT8 graph the features job made for a space's extractor and kept in the lake's models/."""
    from fruits_jobs import model as mobilenet

    calibration = mobilenet.calibration_of(extractor["export"]) or ""
    name = mobilenet.int8_cache_name(extractor["weights"], image_size, calibration)
    kept = Path(storage.name) / layout.MODELS / name
    if not kept.is_file():
        raise SystemExit(f"fruits similar: the space's INT8 graph {kept} is not in the lake's models/")
    return mobilenet.onnx_model(kept.read_bytes(), image_size, str(kept))


def query_settings(storage: Storage, space: dict) -> tuple[str, int]:
    """The weights and image size the space's features were computed with: from its commit, else
    from the published batches' run records (a space written before it recorded them)."""
    if space.get("weights") and space.get("image_size"):
        return space["weights"], int(space["image_size"])
    runs = published_runs(storage)
    commits = [c for c in (published_record(storage, b, runs) for b in sorted(space["vectors"])) if c]
    settings = {(c["weights"], c["image_size"]) for c in commits}
    if len(settings) != 1:
        raise SystemExit(f"fruits similar: cannot tell the weights of space {space['space']}: {sorted(settings)}")
    ((weights, image_size),) = settings
    return weights, int(image_size)


def similar_rows(storage: Storage, photo: Path, k: int, batch: str | None = None) -> list[str]:
    """The k stored photos nearest to photo in the current space, through its index pieces."""
    space = vector_index.current_space(storage)
    if batch is not None and batch not in space["vectors"]:
        raise LookupError(f"batch {batch!r} is not in the current space {space['space']} of {storage.name}")
    batches = [batch] if batch else None
    vector_index.require_pieces(storage, space, batches or sorted(space["vectors"]))  # before the model loads
    weights, image_size = query_settings(storage, space)
    query = vector_index.project(
        photo_features(photo, weights, image_size, storage, space.get("extractor")),
        vector_index.read_components(storage, space),
    )
    return [
        f"{rank}\t{m.similarity:.4f}\t{m.label}\t{readable(layout.resolve(m.path, storage.name))}"
        for rank, m in enumerate(vector_index.search(storage, space, query, k, batches, index_cache(storage)), 1)
    ]


def index_cache(storage: Storage) -> Path | None:
    """Where an S3 lake's index pieces are kept between searches (only the current ones: search prunes
    the rest); none for a folder lake, whose pieces are searched in place."""
    if not isinstance(storage, S3Storage):
        return None
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "fruits" / "index" / storage.bucket


def index_lines(storage: Storage) -> list[str]:
    space = vector_index.current_space(storage)
    built = vector_index.build_missing_pieces(storage, space)
    return [f"built {storage.name}{piece}{vector_index.INDEX_SUFFIX}" for piece in built] or [
        f"space {space['space']}: every batch's piece is there"
    ]


def check_lines(storage: Storage) -> tuple[list[str], bool]:
    """One line per batch, ok or what is wrong, then what is wrong with a Delta table; and whether
    all are ok."""
    lines, healthy = [], True
    try:
        runs = published_runs(storage)
    except Exception:  # a features log that cannot be read: table_problems below names it
        runs = {}
    for batch in known_batches(storage, runs):
        problems = batch_problems(storage, batch, runs)
        healthy &= not problems
        lines += [f"{batch}: ok"] if not problems else [f"{batch}: DAMAGED: {p}" for p in problems]
    for name, folder in tables.TABLES.items():
        problems = table_problems(storage, name, folder)
        healthy &= not problems
        lines += [f"DAMAGED: {p}" for p in problems]
    return lines or [f"no batch in {storage.name}"], healthy


def where_lines(storage: Storage, batch_id: str | None) -> list[str]:
    """Where a batch's outputs are (default: the batch whose PCA committed last), with its k."""
    batch_id = batch_id or latest_processed_batch(storage)
    if batch_id is None:
        raise LookupError(f"no processed batch in {storage.name}")
    pca_and_locations = read_summary(storage, batch_id)
    pca = pca_and_locations["pca"]
    return [
        f"batch {batch_id} in {storage.name}:",
        format_locations(pca_and_locations["locations"]),
        f"  space {pca['space']}: k={pca['k']} of {pca['input_dim']} dims, explained variance "
        f"{pca['total_explained_variance']:.3f} at its fit; {pca['n_images']} images in it",
    ]


def write_photo(storage: Storage, batch: str, path: str) -> int:
    """The photo's bytes on stdout, nothing else there; refusals on stderr (rc 1)."""
    if sys.stdout.isatty():
        print("fruits photo: the photo's bytes would go to the terminal: redirect them (> photo.jpg)", file=sys.stderr)
        return 1
    try:
        data = stored_photo(storage, batch, path)
    except NotStored as exc:
        print(f"fruits photo: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def positive(text: str) -> int:
    """--k: a whole number of at least 1 (argparse says which argument was wrong)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fruits", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lake", default=str(default_lake()), help="the lake: a folder (default: the local lake) or s3://bucket"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    batches = sub.add_parser("batches", help="every published batch with its counts (from the tables' logs)")
    batches.add_argument(
        "--check", action="store_true", help="add each batch's health (reads its record, lists its folders)"
    )
    rejects = sub.add_parser("rejects", help="a batch's rejected files")
    rejects.add_argument("batch")
    similar = sub.add_parser("similar", help="the stored photos nearest to a photo")
    similar.add_argument("photo", type=Path)
    similar.add_argument("--k", type=positive, default=5, help="how many photos (at least 1; default 5)")
    similar.add_argument("--batch", help="only this batch (default: every batch)")
    sub.add_parser("index", help="build the current space's missing index pieces")
    where = sub.add_parser("where", help="where a batch's outputs are")
    where.add_argument("--batch-id", help="default: the batch whose PCA committed last")
    sub.add_parser("check", help="every batch's record and the tables' logs readable, the files they name present")
    sub.add_parser(
        "migrate", help="convert a lake written before the Delta tables (once; docs/operations.md, 'Migrating')"
    )
    stored = sub.add_parser("photo", help="one stored photo's bytes on stdout (redirect them to a file)")
    stored.add_argument("batch")
    stored.add_argument("path", help="the photo's path in the landing folder, e.g. Training/Banana/1_100.jpg")
    demo = sub.add_parser("demo", help="generate demo photos in a Fruits-360 layout")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--per-class", type=int, default=6)
    demo.add_argument("--no-odd-files", action="store_true", help="only photos (no empty, hidden or broken files)")
    query = sub.add_parser("sql", help="DuckDB SQL over the lake's Delta tables (features, rejects, vectors)")
    query.add_argument("query", help='e.g. "SELECT batch_id, count(*) FROM features GROUP BY 1"')
    query.add_argument("--as-of", help="read every table as it was at this time (ISO 8601; UTC by default)")
    args = parser.parse_args(argv)
    if args.command == "similar" and not args.photo.is_file():
        parser.error(f"no such photo: {args.photo}")
    try:
        storage = lake_storage(args.lake)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return answer(args, storage)
    except DamagedLake as exc:  # one line that names the file and what to do, never a traceback
        print(f"fruits {args.command}: {exc}; `fruits check` lists every damaged batch", file=sys.stderr)
        return 1
    except (vector_index.NoSpace, vector_index.MissingPiece) as exc:
        print(f"fruits {args.command}: {exc}", file=sys.stderr)
        return 1


def lake_storage(lake: str) -> Storage:
    """--lake: s3://bucket (the lake is the bucket's root; boto3's default credentials) or a folder."""
    if lake.startswith("s3://"):
        bucket, _, rest = lake[len("s3://") :].partition("/")
        if not bucket or rest.strip("/"):
            raise ValueError(f"--lake s3://BUCKET names a bucket whose root is the lake, got {lake!r}")
        return S3Storage(bucket, aws_conn_id=None)  # None: boto3's default chain, no Airflow connection
    return LocalStorage(Path(lake).resolve())


def answer(args, storage: Storage) -> int:
    """Run one command; its lines on stdout, its refusals on stderr (rc 1, or 2 for a bad photo)."""
    if args.command == "photo":
        return write_photo(storage, args.batch, args.path)
    if args.command == "sql":
        try:
            as_of = sql.as_of_time(args.as_of) if args.as_of else None
            lines = sql.format_rows(*sql.run_sql(args.query, sql.open_tables(storage.name, as_of)))
        except sql.SqlError as exc:
            print(f"fruits sql: {exc}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0
    if args.command == "demo":
        counts = demo_images.generate(args.out_dir, args.per_class, not args.no_odd_files)
        lines = [f"wrote {counts['images']} demo images and {counts['odd_files']} odd files to {args.out_dir}"]
    elif args.command == "where":
        try:
            lines = where_lines(storage, args.batch_id)
        except (LookupError, RuntimeError) as exc:
            print(exc, file=sys.stderr)
            return 1
    elif args.command == "migrate":
        lines = migrate.format_report(migrate.migrate(storage), storage.name)
    elif args.command == "check":
        lines, healthy = check_lines(storage)
        print("\n".join(lines))
        return 0 if healthy else 1
    elif args.command == "batches":
        lines = batches_table(storage, args.check)
    elif args.command == "rejects":
        lines = rejects_rows(storage, args.batch)
    elif args.command == "index":
        lines = index_lines(storage)
    else:
        try:
            lines = similar_rows(storage, args.photo, args.k, args.batch)
        except LookupError as exc:
            print(f"fruits similar: {exc}", file=sys.stderr)
            return 1
        except RejectedImage as exc:  # the job's own reasons: one line, no traceback
            print(f"fruits similar: {args.photo} cannot be read as a photo: {exc.code} ({exc.detail})", file=sys.stderr)
            return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
