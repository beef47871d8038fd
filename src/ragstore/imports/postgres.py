"""Reader for a legacy PostgreSQL table that keeps vectors in a plain column.

The vector column may be ``float8[]``, ``real[]``, ``numeric[]``, ``json``/``jsonb`` or
``text`` holding a JSON array, ``bytea`` of packed little-endian floats, or pgvector's own
``vector``/``halfvec`` (read through a cast to ``real[]``). Columns are found by name
unless given: the id in ``id``; the text in the first of ``text``, ``content``,
``document``, ``chunk``, ``body``; the vector in the first of ``embedding``, ``vector``,
``vec``, ``embeddings``; the metadata in a json/jsonb ``metadata`` column, or else every
other column. Rows are read through a server-side cursor, so the table is never held by
the server in one result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from ragstore.config import conninfo_problem
from ragstore.db.database import describe
from ragstore.errors import DatabaseUnavailableError, ImportSourceError
from ragstore.imports.records import Record, json_safe, to_id, to_text, to_vector
from ragstore.validation import INT64_MAX, INT64_MIN

TEXT_COLUMNS = ("text", "content", "document", "chunk", "body")
VECTOR_COLUMNS = ("embedding", "vector", "vec", "embeddings")
ARRAY_TYPES = ("double precision[]", "real[]", "numeric[]", "integer[]", "bigint[]")
BYTEA_DTYPES = {"float32": "<f4", "float64": "<f8"}


# every digit a 0, every other byte a space: 19 digits in a row is the shortest run that
# can be an integer beyond 64 bits (as :func:`ragstore.db.database.stored_json` finds them)
DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
LONG_RUN = b"0" * 19


def _source_int(text: str) -> int | float:
    """An integer of a source's JSON: a float only where it is the float the text spells.

    jsonb keeps a number as ``numeric`` and writes a float's ``1e20`` back as
    100000000000000000000, which validation refused as beyond 64 bits; such a number is
    the float whose shortest text reads back as it (as :func:`ragstore.imports.records.
    _decimal` does for numeric). Any other integer beyond 64 bits is kept exact, for
    validation to refuse as ``unstorable``: read as ragstore reads its own database
    (:func:`ragstore.db.database.stored_json`, whose writes hold no such integer),
    ``{"order_id": 12345678901234567890}`` was stored rounded, as 1.2345678901234567e19,
    and the import said it succeeded."""
    value = int(text)  # over 4,300 digits: ValueError, reported where the row is read
    if INT64_MIN <= value <= INT64_MAX:
        return value
    try:
        as_float = float(value)
    except OverflowError:  # beyond any float
        return value
    return as_float if Decimal(repr(as_float)) == value else value


def source_json(data: str | bytes | memoryview) -> Any:
    """A source's ``json``/``jsonb`` value, its integers as :func:`_source_int` reads them."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if LONG_RUN not in raw.translate(DIGITS_ONLY):  # no integer beyond 64 bits: plain read
        return json.loads(raw)
    return json.loads(raw, parse_int=_source_int)


def _kind(type_name: str) -> str | None:
    """How a column of this type is read as a vector, or None if it cannot hold one."""
    base = type_name.split("(")[0]
    if type_name in ARRAY_TYPES or (base.startswith("numeric") and type_name.endswith("[]")):
        return "array"
    if base in ("vector", "halfvec"):
        return "pgvector"
    if base in ("json", "jsonb"):
        return "json"
    if base == "text":
        return "text"
    if base == "bytea":
        return "bytea"
    return None


def _as_text(column: str, type_name: str) -> sql.Composable:
    """The column as selected: a ``character(n)`` one cast to text, which drops its
    padding as SQL compares it (``'abc'`` stored in ``char(8)`` reads back as ``'abc     '``;
    ids are carried exactly, so the padding would have become part of every id)."""
    if type_name == "character" or type_name.startswith("character("):
        return sql.SQL("{}::text").format(sql.Identifier(column))
    return sql.Identifier(column)


# id columns read as they are, for to_id to refuse by what they hold: a byte string, an
# object or a list, or a boolean is no id an application looks a document up by (a bytea
# id is named with the view that encodes it), and json's ``::text`` of a string quotes it
UNCAST_ID_TYPES = ("bytea", "json", "jsonb", "boolean")


def _id_expr(column: str, type_name: str) -> sql.Composable:
    """The id column as selected: as the source's own text (``::text``), so the id stored
    is the one SQL on the source matches (``WHERE id::text = ...``) and another import of
    the same table finds again.

    Read as Python values they were stored as Python writes them: a float8 ``1e20`` as
    ``100000000000000000000`` and NaN as ``nan``, a real ``3.4e38`` with 39 digits, an
    interval ``-1 mons +2 days`` as ``-28 days, 0:00:00`` (the same id as ``-28 days``), and
    a timestamp or date ``infinity`` refused the whole table as one Python cannot hold.
    A NaN id is kept as ``NaN``: PostgreSQL holds NaN equal to itself, so it is an id the
    source looks its row up by (``WHERE id = 'NaN'``)."""
    if type_name in ("json", "jsonb"):
        # a number as the source's text of it (``#>>``), given as a JSON string: read as
        # a Python number, json's ``1e20`` became the id 100000000000000000000 and ``1.0``
        # the id ``1``, ids no SQL on the source (``WHERE id #>> '{}' = ...``) matches.
        # A string is read as it is, and an object, a list or a boolean for to_id to refuse
        to_json = "to_jsonb" if type_name == "jsonb" else "to_json"
        typeof = "jsonb_typeof" if type_name == "jsonb" else "json_typeof"
        return sql.SQL(
            "CASE WHEN {t}({c}) = 'number' THEN {j}({c} #>> '{{}}') ELSE {c} END"
        ).format(t=sql.SQL(typeof), j=sql.SQL(to_json), c=sql.Identifier(column))
    if type_name in UNCAST_ID_TYPES or type_name.endswith("[]"):
        return sql.Identifier(column)
    return sql.SQL("{}::text").format(sql.Identifier(column))


def _meta_expr(column: str, type_name: str) -> tuple[sql.Composable, Callable[[Any], Any]]:
    """A metadata column as selected, and what makes its value the one stored.

    Dates and times are ISO 8601 text, as JSON writes them (``to_jsonb``): a
    ``timestamptz`` in UTC (``2024-01-02T01:04:05.5+00:00``), so that a range filter,
    which compares strings byte by byte, orders them as time does whatever the source's
    time zone; a ``timestamp`` ``2024-01-02T03:04:05``, a ``date`` ``2024-01-02``, an
    ``interval`` a duration (``P1DT2H``). Read as Python values they were Python's
    spelling (``2024-01-02 03:04:05+00:00``, an interval ``1 day, 2:00:00`` and a month
    as 30 days), and an ``infinity`` one refused the whole table; ``infinity``,
    ``-infinity`` and years BC are PostgreSQL's own text, as ISO 8601 has no form of
    them. An array of them is the JSON array PostgreSQL writes of it, a ``timestamptz``
    one's elements in UTC too."""
    column_id = sql.Identifier(column)
    base = type_name.removesuffix("[]")
    timely = base == "date" or base.startswith(("timestamp", "time ", "time(", "interval"))
    if not timely:
        return column_id, _same
    utc = base.startswith("timestamp") and base.endswith("with time zone")
    if type_name.endswith("[]") and utc:
        # each element in UTC (a multidimensional array as the session's zone writes it)
        return sql.SQL(
            "CASE WHEN {c} IS NULL THEN NULL WHEN array_ndims({c}) > 1 THEN to_jsonb({c})"
            " ELSE to_jsonb(ARRAY(SELECT e AT TIME ZONE 'UTC' FROM unnest({c})"
            " WITH ORDINALITY AS u(e, n) ORDER BY n)) END"
        ).format(c=column_id), _utc_each
    if type_name.endswith("[]"):
        return sql.SQL("to_jsonb({})").format(column_id), _same
    if utc:
        return sql.SQL("to_jsonb({} AT TIME ZONE 'UTC') #>> '{{}}'").format(column_id), _utc
    if base.startswith("interval"):
        fields = sql.SQL(", ").join(
            sql.SQL("extract({} from {})").format(sql.SQL(field), column_id)
            for field in ("year", "month", "day", "hour", "minute", "second")
        )
        return sql.SQL(
            "CASE WHEN isfinite({c}) THEN concat_ws(' ', {f}) ELSE {c}::text END"
        ).format(c=column_id, f=fields), _iso_duration
    return sql.SQL("to_jsonb({}) #>> '{{}}'").format(column_id), _same


def _same(value: Any) -> Any:
    return value


def _utc(value: str | None) -> str | None:
    """A UTC timestamp's ISO 8601 text with its offset, ``+00:00``, where it has one."""
    if value and value[0].isdigit() and not value.endswith(" BC"):
        return value + "+00:00"
    return value


def _utc_each(value: Any) -> Any:
    """:func:`_utc` of each timestamp of a one-dimensional array."""
    if not isinstance(value, list) or any(isinstance(v, list) for v in value):
        return value
    return [_utc(v) if isinstance(v, str) else v for v in value]


def _iso_duration(value: str | None) -> str | None:
    """An interval's fields (years, months, days, hours, minutes, seconds, each with its
    own sign, as PostgreSQL keeps them) as the ISO 8601 duration PostgreSQL writes with
    ``IntervalStyle`` ``iso_8601``: ``P1Y2M3DT4H5M6.5S``, ``P-1M2D``, ``PT0S``."""
    parts = value.split(" ") if value else []
    if len(parts) != 6:
        return value  # NULL, or an infinite interval (PostgreSQL 17): its own text
    years, months, days, hours, minutes = (int(Decimal(p)) for p in parts[:5])
    seconds = format(Decimal(parts[5]).normalize(), "f")
    date = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    clock = "".join(
        f"{n}{unit}"
        for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if n not in (0, "0", "-0")
    )
    if not (date or clock):
        return "PT0S"
    return "P" + date + ("T" + clock if clock else "")


class PostgresTableSource:
    """Rows of ``table`` on the server at ``url``."""

    def __init__(
        self,
        url: str,
        table: str,
        *,
        id_column: str = "id",
        text_column: str | None = None,
        vector_column: str | None = None,
        metadata_column: str | None = None,
        bytea_dtype: str = "float32",
        batch_rows: int = 2000,
    ) -> None:
        if bytea_dtype not in BYTEA_DTYPES:
            raise ImportSourceError(
                f"--bytea-dtype {bytea_dtype!r} is not one of {', '.join(BYTEA_DTYPES)}"
            )
        self.url = url
        self.table = table
        self.id_column = id_column
        self.text_column = text_column
        self.vector_column = vector_column
        self.metadata_column = metadata_column
        self.bytea_dtype = BYTEA_DTYPES[bytea_dtype]
        self.batch_rows = batch_rows
        # how to name the right table, where this one does not exist
        self.missing_hint = "give it as --table NAME or --table SCHEMA.NAME"

    @property
    def description(self) -> str:
        return f"PostgreSQL table {self.table} on {describe(self.url)}"

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection whose transactions are READ ONLY: an import never writes to its
        source, and reading a view or function that writes (a read logged in a table) was
        done, and committed when the connection closed."""
        try:
            conn = psycopg.connect(self.url, connect_timeout=10)
        except psycopg.ProgrammingError as exc:
            # libpq quotes the piece of the URL it stopped at, which may be the password's
            # (``invalid percent-encoded token: "p%zzsecret"`` was printed as it was)
            raise DatabaseUnavailableError(
                f"connecting to the source: not a valid PostgreSQL URL: {conninfo_problem(exc)}"
                "; expected postgresql://user:password@host:port/dbname (a password's "
                "special characters percent-encoded)"
            ) from None
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseUnavailableError(
                f"connecting to the source {describe(self.url)}: {first}"
            ) from None
        conn.read_only = True
        # its json/jsonb read with :func:`source_json`'s integers: jsonb keeps a number
        # as numeric and writes ``1e20`` back as 100000000000000000000
        set_json_loads(source_json, conn)
        return conn

    def _relation(
        self, conn: psycopg.Connection[tuple[Any, ...]]
    ) -> tuple[int, sql.Identifier] | None:
        """The table's oid and its name as the server knows it (schema and name, quoted
        as needed), or None where there is no such table.

        ``--table`` is read as SQL reads a table name (``MyDocs`` is ``mydocs``, and
        ``public."MyDocs"`` the mixed-case one) and, where no such table exists, as the
        literal name (``MyDocs``, ``app.MyDocs``). The SELECT quotes what the server
        resolved: built from the argument split at its dot, a quoted or mixed-case name
        was found by the column lookup and then refused as a relation that does not exist,
        so such a table could not be imported at all.
        """
        literal = sql.Identifier(*self.table.split(".", 1)).as_string(conn)
        row = conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = coalesce(to_regclass(%s), to_regclass(%s))",
            (self.table, literal),
        ).fetchone()
        return None if row is None else (int(row[0]), sql.Identifier(str(row[1]), str(row[2])))

    def _columns(
        self, conn: psycopg.Connection[tuple[Any, ...]]
    ) -> tuple[sql.Identifier, dict[str, str]]:
        """The table's quoted name and its columns with their types, in order."""
        try:
            relation = self._relation(conn)
            rows = (
                []
                if relation is None
                else conn.execute(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                    " WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped"
                    " ORDER BY a.attnum",
                    (relation[0],),
                ).fetchall()
            )
        except psycopg.Error as exc:
            if conn.broken:
                raise _lost(self.description, "before the first row", exc) from None
            raise ImportSourceError(f"{self.description}: {exc}") from None
        if relation is None or not rows:
            raise ImportSourceError(
                f"table {self.table!r} does not exist on {describe(self.url)} (or has no columns);"
                f" {self.missing_hint}"
            )
        return relation[1], {str(r[0]): str(r[1]) for r in rows}

    def _pick(self, columns: dict[str, str]) -> tuple[str, str | None, str, str, list[str]]:
        def need(name: str, flag: str) -> str:
            if name not in columns:
                raise ImportSourceError(
                    f"table {self.table} has no column {name!r} (columns: "
                    f"{', '.join(columns)}); name the right one with {flag}"
                )
            return name

        id_col = need(self.id_column, "--id-column")
        text_col = (
            need(self.text_column, "--text-column")
            if self.text_column
            else next((c for c in TEXT_COLUMNS if c in columns), None)
        )
        if self.vector_column:
            vec_col = need(self.vector_column, "--vector-column")
        else:
            named = [c for c in VECTOR_COLUMNS if c in columns]
            typed = [c for c, t in columns.items() if _kind(t) in ("array", "pgvector", "bytea")]
            if not (named or len(typed) == 1):
                raise ImportSourceError(
                    f"cannot tell which column of {self.table} holds the vectors (columns: "
                    f"{', '.join(f'{c} {t}' for c, t in columns.items())}); "
                    "name it with --vector-column"
                )
            vec_col = named[0] if named else typed[0]
        kind = _kind(columns[vec_col])
        if kind is None:
            raise ImportSourceError(
                f"column {vec_col} of {self.table} is {columns[vec_col]}; vectors are read from "
                "float8[], real[], numeric[], json, jsonb, text (a JSON array), bytea or vector"
            )
        meta_cols: list[str]
        if self.metadata_column:
            meta_cols = [need(self.metadata_column, "--metadata-column")]
        elif "metadata" in columns and columns["metadata"] in ("json", "jsonb"):
            meta_cols = ["metadata"]
        else:
            meta_cols = [c for c in columns if c not in (id_col, text_col, vec_col)]
        return id_col, text_col, vec_col, kind, meta_cols

    def _vector(self, raw: Any, kind: str, where: str) -> Any:
        if raw is None:
            return None
        if kind == "bytea":
            data = bytes(raw)
            size = np.dtype(self.bytea_dtype).itemsize
            if len(data) % size:
                raise ImportSourceError(
                    f"{where}: {len(data)} bytes is not a whole number of {size}-byte floats; "
                    "is --bytea-dtype right?"
                )
            return np.frombuffer(data, dtype=self.bytea_dtype)
        if kind == "text":
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                raise ImportSourceError(f"{where}: the text is not a JSON array") from None
            except (ValueError, RecursionError) as exc:
                # arrays nested thousands deep, an integer of over 4,300 digits: the
                # parser's own exception escaped as a traceback
                what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise ImportSourceError(
                    f"{where}: the text cannot be read as a JSON array ({what.split(';')[0]})"
                ) from None
        return raw

    def records(self) -> Iterator[Record]:
        with self._connect() as conn:
            qualified, columns = self._columns(conn)
            id_col, text_col, vec_col, kind, meta_cols = self._pick(columns)
            vec_expr: sql.Composable = sql.Identifier(vec_col)
            if kind == "pgvector":
                vec_expr = sql.SQL("{}::real[]").format(sql.Identifier(vec_col))
            text_expr: sql.Composable = (
                _as_text(text_col, columns[text_col]) if text_col else sql.SQL("NULL::text")
            )
            meta_reads = [_meta_expr(c, columns[c]) for c in meta_cols]
            fields = sql.SQL(", ").join(
                [
                    _id_expr(id_col, columns[id_col]),
                    text_expr,
                    vec_expr,
                    *[expr for expr, _ in meta_reads],
                ]
            )
            stmt = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                fields, qualified, self._order(conn, id_col, columns[id_col])
            )
            single_meta = len(meta_cols) == 1 and meta_cols[0] in (self.metadata_column, "metadata")
            for row in self._rows(conn, stmt):
                where = f"{self.table} row id={row[0]}"
                vector = to_vector(self._vector(row[2], kind, where), where)
                values = [read(v) for (_, read), v in zip(meta_reads, row[3:], strict=True)]
                if single_meta:
                    raw = values[0]
                    meta = (
                        raw
                        if isinstance(raw, dict)
                        else ({} if raw is None else {meta_cols[0]: raw})
                    )
                else:
                    meta = {c: v for c, v in zip(meta_cols, values, strict=True) if v is not None}
                yield Record(to_id(row[0], where), to_text(row[1], where), vector, json_safe(meta))

    def _order(
        self, conn: psycopg.Connection[tuple[Any, ...]], id_col: str, type_name: str
    ) -> sql.Composable:
        """The rows' order: by id (as its text, which every type has), and rows of one id
        in the table's physical order (``ctid``: the one stored first, unless it was
        updated since), so that ``--policy duplicate_id=skip`` keeps the same row each
        time; read unordered, the one kept was whichever the scan met first (PostgreSQL's
        synchronized scans start a large table's scan where another scan is). A view or
        foreign table has no ``ctid``: its rows of one id come in the order it gives."""
        return self._in_order(conn, _id_expr(id_col, type_name))

    def _in_order(
        self, conn: psycopg.Connection[tuple[Any, ...]], id_expr: sql.Composable
    ) -> sql.Composable:
        """:meth:`_order` for rows whose id is ``id_expr``."""
        by_id = sql.SQL('({})::text COLLATE "C"').format(id_expr)
        try:
            relation = self._relation(conn)
            kind = (
                None
                if relation is None
                else conn.execute(
                    "SELECT relkind::text FROM pg_class WHERE oid = %s::oid", (relation[0],)
                ).fetchone()
            )
        except psycopg.Error as exc:
            if conn.broken:
                raise _lost(self.description, "before the first row", exc) from None
            raise ImportSourceError(f"{self.description}: {exc}") from None
        if kind is not None and kind[0] in ("r", "m", "p"):  # a table, matview, partitioned
            return sql.SQL("{}, ctid").format(by_id)
        return by_id

    def _rows(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        stmt: sql.Composed,
        params: tuple[Any, ...] = (),
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``stmt``, through a server-side cursor in one read-only
        transaction; a database error is one ImportSourceError naming the source."""
        after: Any = None  # the id of the last row read, to say where one failed to load
        try:
            with conn.transaction(), conn.cursor(name="ragstore_import") as cur:
                cur.itersize = self.batch_rows
                cur.execute(stmt, params)
                for row in cur:
                    yield row
                    after = row[0]
        except (ValueError, RecursionError) as exc:
            # psycopg's json loader on a json/jsonb value nested thousands deep or with an
            # integer of over 4,300 digits: the parser's exception escaped as a traceback
            what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            place = "the first row" if after is None else f"the row after id={after}"
            raise ImportSourceError(
                f"reading {self.description}: {place} holds a JSON value Python cannot read "
                f"({what.split(';')[0]}); flatten or drop it in a view and import the view"
            ) from None
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if conn.broken:
                place = "before the first row" if after is None else f"after the row id={after}"
                raise _lost(self.description, place, exc) from None
            if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                first += (
                    " (the source is read in a read-only transaction, and reading it"
                    " writes to the source: a view or function that writes?); import"
                    " from a table, or a view that only reads"
                )
            raise ImportSourceError(f"reading {self.description}: {first}") from None


def _lost(description: str, place: str, exc: psycopg.Error) -> DatabaseUnavailableError:
    """The error for a source whose connection broke (its server restarted, the backend
    was terminated, the network dropped): not a fault of the data, so not the source
    error (exit 65) that told the user to fix a source with nothing wrong in it."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DatabaseUnavailableError(
        f"reading {description}: the connection to the source was lost {place} ({first}); "
        "nothing was imported: run the import again once the source's server is back",
        says_outcome=True,
    )


def _vector_expr(column: str, type_name: str, table: str) -> sql.Composable:
    """A vector column of a library's table as selected: pgvector's cast to ``real[]``."""
    kind = _kind(type_name)
    if kind == "pgvector":
        return sql.SQL("{}::real[]").format(sql.Identifier(column))
    if kind == "array":
        return sql.Identifier(column)
    raise ImportSourceError(
        f"column {column} of {table} is {type_name}, not the pgvector vector (or float array) "
        "the library writes; import it with --format postgres --vector-column"
    )


def _need(columns: dict[str, str], names: tuple[str, ...], table: str, layout: str) -> None:
    missing = [c for c in names if c not in columns]
    if missing:
        raise ImportSourceError(
            f"table {table} has no column {', '.join(missing)} (columns: {', '.join(columns)}), "
            f"so it is not {layout}'s layout; import it with --format postgres and the "
            "--id-column, --text-column, --vector-column and --metadata-column it has"
        )


class LangChainPGVectorSource(PostgresTableSource):
    """One collection of LangChain's PGVector store: ``langchain_pg_embedding`` rows (the
    id in ``id``, or in ``custom_id`` with ``uuid`` where it is null, for the older
    langchain-community layout; the text in ``document``; the metadata in ``cmetadata``)
    whose ``collection_id`` is the ``uuid`` of the ``langchain_pg_collection`` named
    ``collection`` (the only one where none is named)."""

    EMBEDDINGS = "langchain_pg_embedding"
    COLLECTIONS = "langchain_pg_collection"

    def __init__(self, url: str, collection: str | None) -> None:
        super().__init__(url, self.EMBEDDINGS)
        self.collections = PostgresTableSource(url, self.COLLECTIONS)
        self.collection = collection
        # --table is refused for this layout: "give it as --table NAME" sent the user to a
        # flag that could not help
        for source in (self, self.collections):
            source.missing_hint = (
                f"is this the database LangChain's PGVector writes to (its tables are "
                f"{self.COLLECTIONS} and {self.EMBEDDINGS})? Another layout is read with "
                "--format postgres --table NAME"
            )

    @property
    def description(self) -> str:
        named = f" collection {self.collection}" if self.collection else ""
        return f"LangChain PGVector{named} on {describe(self.url)}"

    def _collection_uuid(self, conn: psycopg.Connection[tuple[Any, ...]]) -> str:
        """The uuid (as text) of the collection to read: the one named, or the only one."""
        table, columns = self.collections._columns(conn)
        _need(columns, ("uuid", "name"), self.collections.table, "LangChain PGVector")
        try:
            found = conn.execute(
                sql.SQL("SELECT uuid::text, name FROM {} ORDER BY name").format(table)
            ).fetchall()
        except psycopg.Error as exc:
            if conn.broken:
                raise _lost(self.description, "before the first row", exc) from None
            raise ImportSourceError(f"reading {self.description}: {exc}") from None
        names = ", ".join(repr(r[1]) for r in found) or "none"
        if self.collection is None:
            if len(found) == 1:
                self.collection = str(found[0][1])
                return str(found[0][0])
            raise ImportSourceError(
                f"LangChain PGVector on {describe(self.url)} holds {len(found)} collections "
                f"({names}); name the one to import with --source-collection NAME"
            )
        uuids = [str(r[0]) for r in found if r[1] == self.collection]
        if not uuids:
            raise ImportSourceError(
                f"LangChain PGVector on {describe(self.url)} has no collection "
                f"{self.collection!r} (collections: {names}); give one with --source-collection"
            )
        if len(uuids) > 1:
            # langchain-community's table has no unique name: reading one of them would
            # leave the others' records out, unsaid
            raise ImportSourceError(
                f"LangChain PGVector on {describe(self.url)} has {len(uuids)} collections "
                f"named {self.collection!r} (uuids {', '.join(uuids)}); import each with "
                "--format postgres --table from a view of its rows (WHERE collection_id = ...)"
            )
        return uuids[0]

    def records(self) -> Iterator[Record]:
        with self._connect() as conn:
            uuid = self._collection_uuid(conn)
            table, columns = self._columns(conn)
            _need(
                columns,
                ("document", "embedding", "cmetadata", "collection_id"),
                self.table,
                "LangChain PGVector",
            )
            if "custom_id" in columns and "uuid" in columns:  # langchain-community's PGVector
                id_expr: sql.Composable = sql.SQL("coalesce(custom_id, uuid::text)")
            else:
                _need(columns, ("id",), self.table, "LangChain PGVector")
                id_expr = sql.SQL("id::text")
            # ordered as the generic reader orders (:meth:`_order`): by id, and rows of one
            # id (langchain-community's custom_id is not unique: adding a document again
            # appended a row) in the table's physical order, so that --policy
            # duplicate_id=skip keeps the same one, the one stored first, each time; read
            # unordered, the one kept was whichever the scan met first
            stmt = sql.SQL(
                "SELECT {}, document, {}, cmetadata FROM {} WHERE collection_id::text = %s"
                " ORDER BY {}"
            ).format(
                id_expr,
                _vector_expr("embedding", columns["embedding"], self.table),
                table,
                self._in_order(conn, id_expr),
            )
            for rid, text, vec, meta in self._rows(conn, stmt, (uuid,)):
                where = f"{self.description} row id={rid}"
                yield Record(
                    to_id(rid, where),
                    to_text(text, where),
                    to_vector(vec, where),
                    json_safe(_as_metadata(meta, "cmetadata")),
                )


def _as_metadata(raw: Any, column: str) -> dict[str, Any]:
    """A json column's value as a record's metadata: an object as it is, anything else
    (a list, a number) kept under the column's name."""
    if isinstance(raw, str):
        try:
            raw = source_json(raw)
        except json.JSONDecodeError:
            return {column: raw}
    if raw is None:
        return {}
    return raw if isinstance(raw, dict) else {column: raw}


LLAMAINDEX_INTERNAL = ("_node_content", "_node_type")  # LlamaIndex's copy of the node


def llamaindex_embedded_text(text: str | None, metadata: dict[str, Any]) -> str | None:
    """What LlamaIndex gave its model for a node (``get_content(MetadataMode.EMBED)``):
    the node's metadata not excluded from embedding, each as its ``metadata_template``,
    joined by its separator, before the text in its ``text_template``; None where the
    node is not recorded (``_node_content``) or is not a plain text node."""
    raw = metadata.get("_node_content")
    try:
        node = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    if not isinstance(node, dict) or text is None:
        return None
    meta = node.get("metadata") or {}
    excluded = set(node.get("excluded_embed_metadata_keys") or ())
    template = str(node.get("metadata_template") or "{key}: {value}")
    sep = node.get("metadata_seperator", node.get("metadata_separator", "\n"))
    text_template = str(node.get("text_template") or "{metadata_str}\n\n{content}")
    if not isinstance(meta, dict):
        return None
    try:
        shown = (
            str(sep)
            .join(
                template.format(key=k, value=str(v)) for k, v in meta.items() if k not in excluded
            )
            .strip()
        )
        if not shown:
            return text
        return text_template.format(metadata_str=shown, content=text).strip()
    except (KeyError, IndexError, ValueError):
        return None


class LlamaIndexPGVectorSource(PostgresTableSource):
    """LlamaIndex's PGVectorStore table ``data_<table_name>`` (``table`` is its
    ``table_name``; a name already starting ``data_`` is taken as it is where no
    ``data_data_...`` exists): the id in ``node_id``, the text in ``text``, the metadata in
    ``metadata_`` without LlamaIndex's own copy of the node, the vector in ``embedding``."""

    def __init__(self, url: str, table: str) -> None:
        schema, dot, name = table.rpartition(".")
        super().__init__(url, f"{schema}{dot}data_{name}")
        self.given = table

    @property
    def description(self) -> str:
        return f"LlamaIndex PGVectorStore table {self.table} on {describe(self.url)}"

    def records(self) -> Iterator[Record]:
        with self._connect() as conn:
            try:
                relation = self._relation(conn)
            except psycopg.Error as exc:
                if conn.broken:
                    raise _lost(self.description, "before the first row", exc) from None
                raise ImportSourceError(f"{self.description}: {exc}") from None
            if relation is None and self.given.rpartition(".")[2].lower().startswith("data_"):
                self.table = self.given
            table, columns = self._columns(conn)
            _need(
                columns,
                ("node_id", "text", "metadata_", "embedding"),
                self.table,
                "LlamaIndex PGVectorStore",
            )
            # PGVectorStore appends a row when a node is added again (node_id is not
            # unique; id is a bigserial): each node's newest row (the largest id) comes
            # first, in the order of the ids, and the older ones after it, for
            # --policy duplicate_id=skip to leave out. Unordered, the stale one could win
            order = (
                sql.SQL("(id = max(id) OVER (PARTITION BY node_id)) DESC, id")
                if "id" in columns
                else sql.SQL("node_id")
            )
            stmt = sql.SQL("SELECT node_id, text, {}, metadata_ FROM {} ORDER BY {}").format(
                _vector_expr("embedding", columns["embedding"], self.table), table, order
            )
            for rid, text, vec, raw in self._rows(conn, stmt):
                where = f"{self.description} row node_id={rid}"
                meta = _as_metadata(raw, "metadata_")
                embedded = llamaindex_embedded_text(text, meta)
                for key in LLAMAINDEX_INTERNAL:
                    meta.pop(key, None)
                yield Record(
                    to_id(rid, where),
                    to_text(text, where),
                    to_vector(vec, where),
                    json_safe(meta),
                    embedded_text=embedded,
                )
