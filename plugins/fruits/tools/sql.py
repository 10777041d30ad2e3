"""`fruits sql`: DuckDB SQL over the lake's Delta tables, read through their logs by `deltalake`
(current rows only; `--as-of` reads every table as it was then). No DuckDB extension is needed: the
tables reach DuckDB as Arrow datasets."""

from datetime import UTC, datetime

from fruits_jobs import tables


class SqlError(ValueError):
    """A query or a time that cannot be answered: one line for the user."""


def as_of_time(text: str) -> datetime:
    """--as-of: an ISO 8601 date or time (UTC when it names no zone)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SqlError(f"--as-of {text!r}: expected an ISO 8601 time, e.g. 2026-12-01 or 2026-12-01T08:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def version_at(history: list[dict], as_of: datetime) -> int | None:
    """The newest version committed at or before as_of, by each commit's own time (commitInfo). Not
    load_as_version(datetime): delta-rs goes by the log files' modification times, which a copied
    lake changes, and it loads version 0 for a time before the table existed."""
    limit = as_of.timestamp() * 1000
    versions = [entry["version"] for entry in history if entry["timestamp"] <= limit]
    return max(versions) if versions else None


def open_tables(lake: str, as_of: datetime | None = None) -> dict:
    """{table name: its Arrow dataset} for the tables the lake has (lake: a folder with a trailing
    slash, or s3://bucket/); as_of: each table's newest version at or before that time."""
    from deltalake.exceptions import TableNotFoundError

    found = {}
    for name, folder in tables.TABLES.items():
        try:
            table = tables.open_table(lake + folder)
        except TableNotFoundError:
            continue  # nothing published there yet: a query naming it gets DuckDB's "does not exist"
        if as_of is not None:
            version = version_at(table.history(), as_of)
            if version is None:
                raise SqlError(f"--as-of {as_of.isoformat()}: the {name} table did not exist yet")
            table.load_as_version(version)
        found[name] = table.to_pyarrow_dataset()
    return found


def run_sql(query: str, datasets: dict) -> tuple[list[str], list[tuple]]:
    """The query's column names and rows, or SqlError with DuckDB's one-line reason."""
    import duckdb

    con = duckdb.connect()
    try:
        for name, dataset in datasets.items():
            con.register(name, dataset)
        result = con.execute(query)
        columns = [d[0] for d in result.description or []]
        return columns, result.fetchall()
    except duckdb.Error as exc:
        raise SqlError(str(exc).splitlines()[0]) from None
    finally:
        con.close()


def format_rows(columns: list[str], rows: list[tuple]) -> list[str]:
    """Tab-separated, a header first: what a shell pipes on (cut, sort, a spreadsheet)."""
    return ["\t".join(columns), *("\t".join("" if v is None else str(v) for v in row) for row in rows)]
