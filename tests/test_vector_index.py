"""The current space's vector index (fruits.lake.vector_index, issue 20 point 7, tiered in issue 29):
pieces beside the space, merged in tiers, built from the vectors its commit names, searched
together; on a folder lake and on S3 (moto). The spaces here are written in the contract's format by
space_fixtures."""

import math
import random

import numpy as np
import pytest
from space_fixtures import put_basis, put_commit, put_vectors, run_id, vectors_table

from fruits.lake import tiers, vector_index
from fruits.lake.storage import LocalStorage, S3Storage
from fruits.tools.cli import main
from fruits_jobs import layout
from fruits_jobs.commits import DamagedLake

K = 16
SPACE = run_id(1)


def clustered(n: int, seed: int) -> np.ndarray:
    """Vectors around 20 shared centres (fruit classes), so that near neighbours mean something."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, K)) * 3
    return (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, K))).astype(np.float32)


def add_batch(storage, batch: str, run: str, vectors: np.ndarray, tag: str = "") -> str:
    paths = [f"raw/batch_id={batch}/Training/C{i % 20}/{tag}{i}.jpg" for i in range(len(vectors))]
    labels = [f"C{i % 20}" for i in range(len(vectors))]
    return put_vectors(storage, SPACE, batch, run, vectors_table(batch, vectors, paths, labels))


def a_space(storage, days: dict[str, int], n: int = 300) -> tuple[dict, dict]:
    """A space holding one batch per entry (batch -> the day its vectors were written), published by
    the run of the newest day; the run's record and each batch's vectors."""
    vectors = {batch: clustered(n, seed) for seed, batch in enumerate(sorted(days))}
    folders = {batch: add_batch(storage, batch, run_id(day), vectors[batch]) for batch, day in days.items()}
    put_basis(storage, SPACE, np.eye(1280, K))
    return put_commit(storage, run_id(max(days.values())), SPACE, folders, K), vectors


def exact_top(vectors: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[tuple[str, int]]:
    """(batch, row) of the k nearest by cosine, over every batch: the brute force the index replaces."""
    pairs = [(b, i) for b in sorted(vectors) for i in range(len(vectors[b]))]
    stacked = np.concatenate([vectors[b] for b in sorted(vectors)]).astype(np.float64)
    cosine = stacked @ query / (np.linalg.norm(stacked, axis=1) * np.linalg.norm(query))
    return [pairs[i] for i in np.argsort(-cosine)[:k]]


def row_of(match) -> tuple[str, int]:
    return match.batch, int(match.path.rsplit("/", 1)[1].removesuffix(".jpg").rsplit("-", 1)[-1])


def index_files(root, space: str = SPACE) -> dict[str, tuple[int, int]]:
    folder = root / "pca" / "spaces" / space / "index"
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*.*")}


def one_piece(record: dict) -> str:
    """The key of the piece holding every batch of the record (a new space's index)."""
    return vector_index.piece_key(record, vector_index.members_of(record))


def piece_files(storage, record: dict) -> list[str]:
    catalog = vector_index.read_catalog(storage, record)
    return sorted(p["key"] + suffix for p in catalog["pieces"] for suffix in (".rows.parquet", ".usearch"))


@pytest.fixture
def lake(tmp_path):
    return LocalStorage(tmp_path / "lake")


def test_search_over_the_pieces_agrees_with_exact_cosine(lake):
    commit, vectors = a_space(lake, {"b1": 2, "b2": 3, "b3": 4})
    assert vector_index.build_missing_pieces(lake, commit) == [one_piece(commit)]  # a new space: one piece
    hits = 0
    for query in clustered(25, seed=7):
        found = vector_index.search(lake, commit, query, 10)
        exact = exact_top(vectors, query, 10)
        # HNSW is approximate (and its multi-threaded build not deterministic): the same photos, nearly
        # all, best first, and the best one's cosine exactly as brute force computes it.
        hits += len({row_of(m) for m in found} & set(exact))
        similarities = [m.similarity for m in found]
        assert len(found) == 10 and similarities == sorted(similarities, reverse=True)
        b, i = exact[0]
        best = vectors[b][i].astype(np.float64)
        assert found[0].similarity == pytest.approx(
            best @ query / np.linalg.norm(best) / np.linalg.norm(query), abs=1e-5
        )
        b, i = row_of(found[0])
        assert found[0].label == f"C{i % 20}"
    assert hits / (25 * 10) >= 0.95, hits


def test_search_can_keep_to_some_batches(lake):
    commit, vectors = a_space(lake, {"b1": 2, "b2": 3})
    vector_index.build_missing_pieces(lake, commit)
    query = clustered(1, seed=8)[0]
    found = vector_index.search(lake, commit, query, 5, batches=["b2"])
    # b2 shares its piece with b1: its rows alone, scanned exactly
    assert [row_of(m) for m in found] == exact_top({"b2": vectors["b2"]}, query, 5)


def test_a_day_adds_one_piece_and_merges_pieces_of_one_tier(lake):
    commit, _ = a_space(lake, {"b1": 2, "b2": 3})
    vector_index.build_missing_pieces(lake, commit)
    before = index_files(lake.root)
    b3 = add_batch(lake, "b3", run_id(6), clustered(300, seed=3))
    day = put_commit(lake, run_id(6), SPACE, {**commit["vectors"], "b3": b3}, K)

    built = vector_index.build_missing_pieces(lake, day)

    assert built == [vector_index.piece_key(day, {"b3": run_id(6)})]  # tier 0, beside {b1, b2} (tier 1)
    after = index_files(lake.root)
    assert {name: after[name] for name in before if name != "catalog.json"} == {
        name: stamp for name, stamp in before.items() if name != "catalog.json"
    }  # same bytes, never rewritten
    assert vector_index.build_missing_pieces(lake, day) == []  # idempotent
    day_files = piece_files(lake, day)

    b4 = add_batch(lake, "b4", run_id(7), clustered(300, seed=4))
    next_day = put_commit(lake, run_id(7), SPACE, {**day["vectors"], "b4": b4}, K)
    query = clustered(1, seed=9)[0]
    expected = [
        (m.path, round(m.similarity, 5)) for m in vector_index.search(lake, day, query, 5, batches=["b1", "b3"])
    ]
    # A merge reads the pieces it merges (their graphs keep each vector), not its members' folders:
    # its requests do not grow with the batches it holds. Their folders away, the merge still builds.
    away = lake.root.parent / "away"
    away.mkdir()
    for batch in ("b1", "b2", "b3"):
        (lake.root / day["vectors"][batch]).rename(away / batch)
    # {b4} meets {b3} in tier 0, and {b3, b4} meets {b1, b2} in tier 1: one piece of four
    assert vector_index.build_missing_pieces(lake, next_day) == [one_piece(next_day)]
    found = vector_index.search(lake, next_day, query, 5, batches=["b1", "b3"])  # each batch's rows, exactly
    assert [(m.path, round(m.similarity, 5)) for m in found] == expected
    pieces = vector_index.read_catalog(lake, next_day)["pieces"]
    assert [sorted(p["members"]) for p in pieces] == [["b1", "b2", "b3", "b4"]]
    present = {f"pca/spaces/{SPACE}/index/{name}" for name in index_files(lake.root)}
    assert set(day_files) <= present  # kept for a search that read the previous catalog

    b5 = add_batch(lake, "b5", run_id(8), clustered(30, seed=5))
    put_commit(lake, run_id(8), SPACE, {**next_day["vectors"], "b5": b5}, K)
    vector_index.build_missing_pieces(lake, vector_index.current_space(lake))
    present = {f"pca/spaces/{SPACE}/index/{name}" for name in index_files(lake.root)}
    assert not set(day_files) & present  # named by neither of the last two catalogs: deleted
    assert set(piece_files(lake, next_day)) < present


def test_the_merge_rule_keeps_log2_pieces_over_a_year_of_days_republished_and_withdrawn_batches_included():
    rng = random.Random(29)
    wanted: dict[str, str] = {}
    pieces: list[dict[str, str]] = []
    most_rebuilt = 0
    for day in range(1, 366):
        wanted[f"d{day:03d}"] = f"r{day}"
        if day % 17 == 0:  # a re-published batch: a new vectors run
            wanted[rng.choice(sorted(wanted))] = f"r{day}x"
        if day % 41 == 0:  # a withdrawn batch
            del wanted[rng.choice(sorted(wanted))]
        planned = tiers.plan(pieces, wanted)
        held = [(b, r) for p in planned for b, r in p.items()]
        assert sorted(held) == sorted(wanted.items())  # every batch once, with its current run
        assert len(planned) <= math.floor(math.log2(len(wanted))) + 1
        assert len({tiers.tier(len(p)) for p in planned}) == len(planned)  # one piece a tier
        rebuilt = sum(len(p) for p in planned if p not in pieces)
        most_rebuilt = max(most_rebuilt, rebuilt)
        pieces = planned
    assert most_rebuilt <= 2 ** math.floor(math.log2(len(wanted))) * 2  # the largest piece the tiers allow


def test_twenty_days_of_tiers_find_what_one_index_over_the_same_vectors_finds(lake):
    vectors, folders = {}, {}
    record = None
    for day in range(1, 21):
        batch = f"d{day:02d}"
        vectors[batch] = clustered(40, seed=100 + day)
        folders[batch] = add_batch(lake, batch, run_id(day), vectors[batch])
        if day in (9, 15):  # a re-published batch: new vectors under a new run
            vectors["d03"] = clustered(40, seed=300 + day)
            folders["d03"] = add_batch(lake, "d03", run_id(day), vectors["d03"], tag=f"v{day}-")
        record = put_commit(lake, run_id(day), SPACE, dict(folders), K)
        put_basis(lake, SPACE, np.eye(1280, K))
        vector_index.build_missing_pieces(lake, record)
        assert len(vector_index.read_catalog(lake, record)["pieces"]) <= math.floor(math.log2(day)) + 1
    hits = 0
    for query in clustered(20, seed=77):
        found = vector_index.search(lake, record, query, 10)
        assert all(m.batch != "d03" or "/v15-" in m.path for m in found)  # never a stale run's row
        hits += len({row_of(m) for m in found} & set(exact_top(vectors, query, 10)))
    assert hits / 200 >= 0.95, hits


def test_a_piece_of_an_older_run_of_the_batch_is_never_searched(lake):
    commit, _ = a_space(lake, {"b1": 2})
    vector_index.build_missing_pieces(lake, commit)
    republished = clustered(300, seed=11)
    again = add_batch(lake, "b1", run_id(7), republished, tag="new")
    current = put_commit(lake, run_id(7), SPACE, {"b1": again}, K)
    query = republished[0]

    with pytest.raises(vector_index.MissingPiece, match=r"batch b1 has no index piece .* run `fruits index`"):
        vector_index.search(lake, current, query, 3)
    vector_index.build_missing_pieces(lake, current)
    found = vector_index.search(lake, current, query, 3)
    assert found[0].path.endswith("/new0.jpg") and found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert all("/new" in m.path for m in found)


def test_the_current_space_is_the_vectors_table_s_newest_run(lake):
    with pytest.raises(vector_index.NoSpace, match="no embedding space"):
        vector_index.current_space(lake)
    first, _ = a_space(lake, {"b1": 3})
    b2 = add_batch(lake, "b2", run_id(4), clustered(10, seed=2))
    later = put_commit(lake, run_id(4), SPACE, {**first["vectors"], "b2": b2}, K, added=["b2"])
    current = vector_index.current_space(lake)
    assert current["run"] == later["run"] and current["record"] == f"{lake.name}{later['metrics']}"
    assert current["vectors"] == {b: lake.name + folder for b, folder in later["vectors"].items()}
    lake.put_bytes(b"{}", "pca/_commits/notes.json")  # the layout before the vectors table: not read
    assert vector_index.current_space(lake)["run"] == later["run"]


def test_resolved_references_name_the_same_pieces(lake):
    """The lead's DAG may hand over a commit resolved against the lake (storage.name + key)."""
    commit, _ = a_space(lake, {"b1": 2})
    resolved = layout.resolve_record(commit, lake.name)
    assert vector_index.build_missing_pieces(lake, resolved) == [one_piece(commit)]
    assert vector_index.build_missing_pieces(lake, commit) == []


# ---- The command line ---------------------------------------------------------------------------


def test_similar_says_in_one_line_when_the_lake_has_no_space(tmp_path, capsys):
    photo = tmp_path / "q.jpg"
    photo.write_bytes(b"not read: refused before")
    assert main(["--lake", str(tmp_path / "empty"), "similar", str(photo)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no embedding space" in err and "Traceback" not in err


def test_similar_names_the_batch_without_its_piece_and_what_to_run(lake, tmp_path, capsys):
    commit, _ = a_space(lake, {"b1": 2, "b2": 3})
    vector_index.build_missing_pieces(lake, {**commit, "vectors": {"b1": commit["vectors"]["b1"]}})
    photo = tmp_path / "q.jpg"
    photo.write_bytes(b"not read: refused before")
    assert main(["--lake", str(lake.root), "similar", str(photo)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch b2 has no index piece" in err and "`fruits index`" in err

    assert main(["--lake", str(lake.root), "index"]) == 0
    # {b2} (tier 0) meets {b1} (tier 0): one piece of both
    assert capsys.readouterr().out.splitlines() == [f"built {lake.name}{one_piece(commit)}.usearch"]


def test_lake_refuses_an_s3_prefix(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--lake", "s3://bucket/some/prefix", "index"])
    assert exit_.value.code == 2 and "s3://BUCKET" in capsys.readouterr().err


# ---- On S3, with boto3's default credentials (no Airflow connection) -------------------------------


@pytest.fixture
def bucket(monkeypatch, moto_server):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)  # boto3 and delta-rs alike reach the same buckets
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket="fruits-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
        )
        yield S3Storage("fruits-lake", aws_conn_id=None)


def answers(capsys) -> list[str]:
    """The command's lines (under pytest, Airflow's log lines land in the captured stdout too)."""
    return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("20")]


def test_an_s3_lake_builds_and_searches_its_pieces_like_a_folder(bucket, lake, capsys):
    commit, vectors = a_space(bucket, {"b1": 2, "b2": 3})
    a_space(lake, {"b1": 2, "b2": 3})
    assert main(["--lake", "s3://fruits-lake", "index"]) == 0
    assert answers(capsys) == [f"built s3://fruits-lake/{one_piece(commit)}.usearch"]
    vector_index.build_missing_pieces(lake, commit)

    for query in clustered(5, seed=9):
        on_s3 = vector_index.search(bucket, commit, query, 8)
        on_disk = vector_index.search(lake, commit, query, 8)
        exact = exact_top(vectors, query, 8)
        for found in (on_s3, on_disk):  # two builds of an approximate index: each nearly the exact answer
            assert row_of(found[0]) == exact[0] and len({row_of(m) for m in found} & set(exact)) >= 7
    assert main(["--lake", "s3://fruits-lake", "index"]) == 0
    assert answers(capsys) == [f"space {SPACE}: every batch's piece is there"]


def test_a_damaged_piece_is_named_with_what_to_do(lake):
    commit, _ = a_space(lake, {"b1": 2})
    (piece,) = vector_index.build_missing_pieces(lake, commit)
    lake.put_bytes(b"cut short", piece + ".usearch")
    with pytest.raises(
        DamagedLake, match=rf"{piece}.usearch is not an index piece .* delete it and run `fruits index`"
    ):
        vector_index.search(lake, commit, clustered(1, seed=1)[0], 3)


def test_a_damaged_catalog_is_named_with_what_to_do_and_a_new_build_replaces_it(lake):
    commit, vectors = a_space(lake, {"b1": 2})
    vector_index.build_missing_pieces(lake, commit)
    catalog = f"pca/spaces/{SPACE}/index/catalog.json"
    lake.put_bytes(b'{"pieces": [{"key": "x"}', catalog)  # cut short
    with pytest.raises(DamagedLake, match=rf"{catalog} is not an index catalog .* delete it and run `fruits index`"):
        vector_index.search(lake, commit, vectors["b1"][0], 3)
    (lake.root / catalog).unlink()
    assert vector_index.build_missing_pieces(lake, commit) == [one_piece(commit)]
    assert row_of(vector_index.search(lake, commit, vectors["b1"][0], 1)[0]) == ("b1", 0)


def test_a_new_space_builds_every_piece_anew_in_its_own_folder(lake):
    commit, vectors = a_space(lake, {"b1": 2, "b2": 3})
    vector_index.build_missing_pieces(lake, commit)
    old = index_files(lake.root)
    space = run_id(8)
    folders = {
        b: put_vectors(
            lake, space, b, space, vectors_table(b, -v, [f"p/{b}/{i}.jpg" for i in range(len(v))], [None] * len(v))
        )
        for b, v in vectors.items()
    }
    refit = put_commit(lake, space, space, folders, K)
    assert vector_index.build_missing_pieces(lake, refit) == [one_piece(refit)]
    assert one_piece(refit).startswith(f"pca/spaces/{space}/index/pieces/")
    assert index_files(lake.root) == old  # the previous space's index, as it was
    found = vector_index.search(lake, vector_index.current_space(lake), -vectors["b2"][4], 1)
    assert found[0].path == "p/b2/4.jpg" and found[0].label is None


def test_a_batch_without_photos_is_a_member_without_rows(lake):
    commit, vectors = a_space(lake, {"b1": 2})
    empty = add_batch(lake, "b0", run_id(6), np.zeros((0, K), np.float32))
    day = put_commit(lake, run_id(6), SPACE, {**commit["vectors"], "b0": empty}, K)
    assert vector_index.build_missing_pieces(lake, day) == [one_piece(day)]
    query = vectors["b1"][3]
    found = [row_of(m) for m in vector_index.search(lake, day, query, 4)]
    assert found[0] == ("b1", 3) and len(set(found) & set(exact_top(vectors, query, 4))) >= 3  # approximate
    assert vector_index.search(lake, day, query, 4, batches=["b0"]) == []


def test_similar_refuses_a_batch_outside_the_space_in_one_line(lake, tmp_path, capsys):
    commit, _ = a_space(lake, {"b1": 2})
    vector_index.build_missing_pieces(lake, commit)
    photo = tmp_path / "q.jpg"
    photo.write_bytes(b"not read: refused before")
    assert main(["--lake", str(lake.root), "similar", str(photo), "--batch", "b9"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"batch 'b9' is not in the current space {SPACE}" in err


def test_an_s3_lakes_pieces_are_kept_between_searches_and_only_the_current_ones(bucket, tmp_path):
    commit, _ = a_space(bucket, {"b1": 2, "b2": 3})
    vector_index.build_missing_pieces(bucket, commit)
    cache, query = tmp_path / "cache", clustered(1, seed=5)[0]
    gets = []
    bucket.hook.get_conn().meta.events.register("before-call.s3.GetObject", lambda **_: gets.append(1))

    first = vector_index.search(bucket, commit, query, 5, cache=cache)
    downloads = len(gets)
    assert vector_index.search(bucket, commit, query, 5, cache=cache) == first
    # the catalog and the piece's two files, then the catalog only: the second search read the kept piece
    assert downloads == 3 and len(gets) == downloads + 1
    kept = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert kept == piece_files(bucket, commit)

    republished = add_batch(bucket, "b2", run_id(9), clustered(300, seed=12))
    current = put_commit(bucket, run_id(9), SPACE, {**commit["vectors"], "b2": republished}, K)
    vector_index.build_missing_pieces(bucket, current)
    vector_index.search(bucket, current, query, 5, cache=cache)
    again = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert again == piece_files(bucket, current) and not set(again) & set(kept)  # {b1, b2'} only


def test_the_airflow_role_may_build_and_search_the_index(aws):
    """What the DAG's index step does with the `aws_default` connection, under the Airflow policy
    of infra/aws/fruits.yaml (the aws fixture denies any call it does not allow)."""
    from airflow_fixtures import BUCKET

    storage = S3Storage(BUCKET, "aws_default")
    commit, vectors = a_space(storage, {"b1": 2, "b2": 3})
    del aws[:]  # that was the PCA job's writing (EMR's role), not Airflow's
    assert len(vector_index.build_missing_pieces(storage, commit)) == 1
    query = vectors["b2"][0]
    assert row_of(vector_index.search(storage, vector_index.current_space(storage), query, 1)[0]) == ("b2", 0)


def test_pieces_kept_open_serve_later_searches_until_the_catalog_drops_them(lake):
    commit, vectors = a_space(lake, {"b1": 2, "b2": 3})
    vector_index.build_missing_pieces(lake, commit)
    opened = vector_index.OpenIndex()
    query = vectors["b1"][5]
    first = vector_index.search(lake, commit, query, 5, opened=opened)
    assert list(opened.pieces) == [one_piece(commit)]
    kept = opened.pieces[one_piece(commit)]
    assert vector_index.search(lake, commit, query, 5, opened=opened) == first
    assert opened.pieces[one_piece(commit)] is kept  # not opened again
    b3 = add_batch(lake, "b3", run_id(8), clustered(30, seed=13))
    day = put_commit(lake, run_id(8), SPACE, {**commit["vectors"], "b3": b3}, K)
    with pytest.raises(vector_index.MissingPiece, match="batch b3 has no index piece"):
        vector_index.search(lake, day, query, 5, opened=opened)  # a new space run: checked again

    republished = add_batch(lake, "b2", run_id(9), clustered(300, seed=12))
    current = put_commit(lake, run_id(9), SPACE, {**commit["vectors"], "b2": republished}, K)
    vector_index.build_missing_pieces(lake, current)
    vector_index.search(lake, current, query, 5, opened=opened)
    assert list(opened.pieces) == [one_piece(current)]  # the catalog changed: read again, the retired piece let go
