"""Readers for the file-based stores: JSONL, and a NumPy matrix with a JSONL or CSV sidecar.

JSONL: one JSON object per line with ``id``, ``text``, ``vector`` (or ``embedding``) and
an optional ``metadata`` object; other top-level keys join the metadata.

NumPy: a ``.npy`` matrix (or one array of an ``.npz``) whose row ``i`` belongs to line
``i`` of the sidecar (a JSONL file with ``id``/``text``/``metadata`` or a CSV file with
``id``/``text`` columns, every other column becoming metadata).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ragstore.errors import ImportSourceError
from ragstore.imports.records import Record, json_safe, to_id, to_text, to_vector
from ragstore.parsing.decode import declared_encoding

VECTOR_KEYS = ("vector", "embedding", "values")
# the csv module's field limit (128 KiB by default) raised to this for a CSV sidecar: a
# record's text is one field
CSV_FIELD_LIMIT = 1 << 30
TEXT_KEYS = ("text", "document", "content")
# the longest line read: a line is read whole, and a JSON line takes about seven times its
# size to parse, so a file with no line breaks (a JSON array saved as .jsonl, a multi-GB
# dump) was read into memory whole and the import killed for memory. A record is a vector
# (16,000 dimensions at most: under 1 MB of text) and one chunk's text, which ingest caps
# at 50 MB (RAGSTORE_MAX_FILE_BYTES) for a whole document.
MAX_LINE_BYTES = 64 * 1024 * 1024
NPY_BLOCK_BYTES = 8 * 1024 * 1024  # a .npy matrix is read in blocks of about this size
# and a Fortran-order one a column's part of at least this size a read: a wide matrix
# (thousands of columns, a few rows a block) took a read for every few values
NPY_COLUMN_READ_BYTES = 4096
# the first bytes of a compressed file, with the tool that unpacks it: read as text, a
# gzipped JSONL was refused as "invalid UTF-8 at byte 1; re-save the file as UTF-8 (e.g.
# iconv -f latin1 -t utf-8)", which sent the user to re-encode a file that was fine
COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip -k"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"PK\x03\x04", "zip", "unzip"),
)


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in obj:
            return key, obj[key]
    return None, None


def _must_exist(path: Path) -> None:
    """PathNotFoundError for nothing at ``path``, and the error an ingest gives a link to
    nothing, a link that loops or a pipe (:func:`ragstore.files.not_ingestible`):
    a FIFO named ``x.jsonl`` was opened and the import waited for a writer forever, and a
    looping link was said to be "no such file". A folder is left to the reader's open,
    which names it."""
    from ragstore.files import not_ingestible, printable

    if not (path.is_file() or path.is_dir()):
        raise not_ingestible(path, printable(str(path)))


def _utf8_lines(path: Path, *, csv_file: bool = False) -> Iterator[str]:
    """The file's lines as text: UTF-8, a leading BOM dropped (as Excel and PowerShell
    write them); a file in another encoding is :class:`ImportSourceError` naming the line
    and byte, not a ``UnicodeDecodeError`` from deep inside the import. A file that cannot
    be read (permissions, an I/O error; the process out of descriptors or memory) is the
    error an ingest gives it (:func:`ragstore.files.unreadable`), not the ``OSError``
    traceback it was.
    ``csv_file``: the file is a CSV one, for the error naming a line over the limit."""
    from ragstore.files import unreadable

    try:
        yield from _decoded_lines(path, csv_file=csv_file)
    except OSError as exc:
        raise unreadable(path, exc, "import") from None


def _compressed(path: Path, head: bytes) -> None:
    """ImportSourceError for a file that starts as a compressed one does (``COMPRESSED``),
    naming the compression and the command that unpacks it."""
    bzip2 = re.match(rb"BZh[1-9]1AY&SY", head)
    found = [(kind, tool) for magic, kind, tool in COMPRESSED if head.startswith(magic)]
    if bzip2:
        found.append(("bzip2", "bunzip2 -k"))
    if found:
        kind, tool = found[0]
        raise ImportSourceError(
            f"{path}: the file is {kind}-compressed, not text; unpack it first "
            f"({tool} {shlex.quote(str(path))}) and import the unpacked file"
        )


def _bounded_lines(fh: BinaryIO, path: Path, *, csv_file: bool = False) -> Iterator[bytes]:
    """The file's lines, each read only up to ``MAX_LINE_BYTES``: a longer one is
    ImportSourceError naming it, before it is held in memory whole (:func:`_too_long`)."""
    limit = MAX_LINE_BYTES
    lineno = 0
    while raw := fh.readline(limit + 1):
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise _too_long(path, lineno, limit, bare_cr=b"\r" in raw, csv_file=csv_file)
        yield raw


def _too_long(
    path: Path, lineno: int, limit: int, *, bare_cr: bool, csv_file: bool
) -> ImportSourceError:
    """The error for a line over ``limit`` bytes, worded by what the file is: a CSV
    sidecar was told of JSONL and jq, and a file whose lines end in a bare CR (read as one
    line, the whole file) was told to split its records, not to convert its line ends."""
    said = f"{path} line {lineno}: the line is longer than {limit:,} bytes"
    if bare_cr:
        suffix = ".csv" if csv_file else ".jsonl"
        return ImportSourceError(
            f"{said} and holds a CR: the lines end in a bare CR, not LF or CRLF, so the "
            f"file is read as one line; convert them (tr '\\r' '\\n' < old{suffix} > "
            f"new{suffix})"
        )
    if csv_file:
        return ImportSourceError(
            f"{said}, more than one record may take; a CSV row (and each of its fields) "
            "holds one record, and a text that long is split into several records, a row "
            "each"
        )
    return ImportSourceError(
        f"{said}, more than one record may take; a JSONL file holds one JSON object per line "
        "(a JSON array is made one with jq -c '.[]'), and a text that long is split into "
        "several records"
    )


def _decoded_lines(path: Path, *, csv_file: bool = False) -> Iterator[str]:
    """The lines of ``path``; ImportSourceError where its size or modification time
    changed by the end of the read (as a ``.npy`` matrix's, :func:`_mapped_rows`): a
    JSONL file or sidecar written to meanwhile (an export appending to it, re-run over
    it) was imported as whatever part of it the read met, and called verified."""
    with path.open("rb") as fh:
        before = os.fstat(fh.fileno())
        yield from _checked_lines(fh, path, csv_file=csv_file)
        after = os.fstat(fh.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise ImportSourceError(
            f"{path} changed while it was read (its size or modification time is not what "
            "it was when the read began); import it once whatever writes it is done. "
            "Nothing was written"
        )


def _checked_lines(fh: BinaryIO, path: Path, *, csv_file: bool) -> Iterator[str]:
    """The lines of the open file ``fh``, decoded and checked (:func:`_decoded_lines`)."""
    offset = 0
    for lineno, raw in enumerate(_bounded_lines(fh, path, csv_file=csv_file), 1):
        if lineno == 1:
            _compressed(path, raw[:16])
        declared = declared_encoding(raw) if lineno == 1 else None
        if declared is not None:
            encoding, offset = declared
            if encoding != "utf-8":
                family = encoding.removesuffix("-le").removesuffix("-be")  # utf-16
                raise ImportSourceError(
                    f"{path}: the file is {family.upper()}, not UTF-8; re-save it as "
                    f"UTF-8 (e.g. iconv -f {family} -t utf-8)"
                )
            raw = raw[offset:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportSourceError(
                f"{path} line {lineno}: invalid UTF-8 at byte {offset + exc.start}; "
                "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
        offset += len(raw)


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, _DuplicateKeyError where a key is given twice: the parser
    kept the last silently, so ``{"id": "a", ..., "id": "b"}`` was imported as ``b`` and
    the value ``a`` the store had was lost, unsaid."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return obj


def _merged(
    meta: dict[str, Any], rest: dict[str, Any], where: str, *, text_columns: bool = False
) -> dict[str, Any]:
    """The ``metadata`` object's keys with the record's other keys (they join the metadata);
    ImportSourceError for a key in both with other values: the top-level value silently
    replaced the metadata's (``"metadata": {"lang": "en"}, "lang": "fr"`` was stored as
    ``fr``), and the import said every record arrived as the store had it.

    ``text_columns``: the other keys are a CSV row's columns, text whatever they hold, so a
    column agrees with the metadata's value when it is that value written out (``"3"``
    beside ``{"page": 3}``, as a pandas export writes both); the metadata's typed value is
    kept."""
    for key, value in rest.items():
        if key not in meta or _canonical(meta[key]) == _canonical(value):
            continue
        if not (text_columns and _as_text(meta[key]) == value):
            raise ImportSourceError(
                f"{where}: the key {key!r} is in the metadata ({_shown(meta[key])}) and beside "
                f"it ({_shown(value)}); rename one of them, or drop the one not wanted"
            )
    if text_columns:
        return {**rest, **meta}
    return {**meta, **rest}


def _as_text(value: Any) -> str:
    """A metadata value as a CSV column holds it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _canonical(value: Any) -> str:
    """A value's JSON text, keys sorted: ``1`` and ``true`` differ, as they do in JSON."""
    return json.dumps(value, sort_keys=True, default=str)


def _shown(value: Any) -> str:
    shown = json.dumps(value, default=str)
    return shown if len(shown) <= 40 else shown[:40] + "..."


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, numbered in enumerate(_utf8_lines(path), 1):
        # a BOM opening a later line too: files saved with one (Excel, PowerShell) joined
        # with cat were refused at the second "(Unexpected UTF-8 BOM (decode using
        # utf-8-sig))"; no JSON text starts with U+FEFF, so nothing of a record is dropped
        line = numbered.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKeyError as exc:
            raise ImportSourceError(
                f"{path} line {lineno}: the key {exc.key!r} is given twice in one object; "
                "give each key once"
            ) from None
        except json.JSONDecodeError as exc:
            # lines ending in a bare CR (classic Mac OS) are one line here: "Extra data"
            # said nothing of why
            bare_cr = "\r" in line.rstrip("\r\n")
            raise ImportSourceError(
                f"{path} line {lineno}: not valid JSON ({exc.msg}); "
                + (
                    "the lines end in a bare CR, not LF or CRLF: convert them (tr '\\r' "
                    "'\\n' < old.jsonl > new.jsonl)"
                    if bare_cr and exc.msg == "Extra data"
                    else "each line must be one JSON object"
                )
            ) from None
        except (ValueError, RecursionError) as exc:
            # an integer of over 4,300 digits (ValueError) or arrays nested thousands
            # deep: the parser's own exception escaped as a traceback
            what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ImportSourceError(
                f"{path} line {lineno}: cannot be read as JSON ({what.split(';')[0]})"
            ) from None
        if not isinstance(obj, dict):
            raise ImportSourceError(
                f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        yield lineno, obj


def _given_once(obj: dict[str, Any], keys: tuple[str, ...], what: str, where: str) -> None:
    """Refuse ``obj`` holding its ``what`` under more than one of the ``keys`` it is read
    from: the first was read and the others silently joined the metadata (a record with
    "vector" and "embedding" stored the second array as metadata, one with "text" and
    "content" the second text)."""
    given = [key for key in keys if key in obj]
    if len(given) > 1:
        shown = [repr(key) for key in given]
        raise ImportSourceError(
            f"{where}: the {what} is given {('twice', 'three times')[len(given) - 2]}, "
            f"under the keys {', '.join(shown[:-1])} and {shown[-1]}; keep one of them "
            '(a value meant as metadata goes inside the "metadata" object)'
        )


def _split_fields(
    obj: dict[str, Any], where: str, *, with_vector: bool
) -> tuple[Any, Any, Any, dict[str, Any]]:
    rest = dict(obj)
    # "_id" only where there is no "id": popped as pop's default, it was dropped from the
    # metadata of every record that had both (a MongoDB export's "_id" beside its own id)
    rid = rest.pop("id") if "id" in rest else rest.pop("_id", None)
    _given_once(rest, TEXT_KEYS, "text", where)
    tkey, text = _first(rest, TEXT_KEYS)
    if tkey:
        rest.pop(tkey)
    vector = None
    if with_vector:
        _given_once(rest, VECTOR_KEYS, "vector", where)
        vkey, vector = _first(rest, VECTOR_KEYS)
        if vkey:
            rest.pop(vkey)
    meta = rest.pop("metadata", None)
    metadata: dict[str, Any] = dict(meta) if isinstance(meta, dict) else {}
    if meta is not None and not isinstance(meta, dict):
        metadata["metadata"] = meta
    return rid, text, vector, _merged(metadata, rest, where)


class JsonlSource:
    """A JSONL file of id / text / vector / metadata objects."""

    def __init__(self, path: Path) -> None:
        _must_exist(path)
        self.path = path

    @property
    def description(self) -> str:
        return f"JSONL file {self.path}"

    def records(self) -> Iterator[Record]:
        for lineno, obj in _json_lines(self.path):
            where = f"{self.path} line {lineno}"
            rid, text, vector, metadata = _split_fields(obj, where, with_vector=True)
            # a key given as null is a record without a vector (``missing_vector``, as a
            # NULL column is); no such key at all is a file of another layout, or a typo
            if not any(key in obj for key in VECTOR_KEYS):
                raise ImportSourceError(
                    f"{where}: no vector; expected one of the keys {', '.join(VECTOR_KEYS)}"
                    ' (a record without one yet gives "vector": null, which --policy '
                    "missing_vector=skip leaves out)"
                )
            yield Record(
                to_id(rid, where),
                to_text(text, where),
                to_vector(vector, where),
                json_safe(metadata),
            )


def _load_matrix(path: Path, array: str | None) -> np.ndarray:
    """The matrix of a ``.npy`` (mapped) or ``.npz`` file. A file that cannot be read
    (permissions, an I/O error; the process out of descriptors or memory) is the error an
    ingest gives it (:func:`ragstore.files.unreadable`): every OSError was "not a readable
    NumPy file", an ``import_source_invalid`` blaming a healthy file for an EMFILE."""
    from ragstore.files import unreadable

    try:
        if path.suffix == ".npz":
            # opened here: NumPy left its own handle open where the file is no zip
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
                names = list(npz.files)
                if array is None:
                    wanted = [n for n in ("vectors", "embeddings") if n in names]
                    if len(names) == 1:
                        array = names[0]
                    elif wanted:
                        array = wanted[0]
                    else:
                        raise ImportSourceError(
                            f"{path} holds arrays {', '.join(names)}; name the one with the "
                            "vectors with --array NAME"
                        )
                if array not in names:
                    raise ImportSourceError(
                        f"{path} has no array {array!r} (arrays: {', '.join(names)})"
                    )
                matrix = np.asarray(npz[array])
        else:
            # mapped only to learn the shape and type: its rows are read by _npy_rows
            matrix = np.load(path, allow_pickle=False, mmap_mode="r")
    except OSError as exc:
        if exc.errno is None:  # raised by NumPy about the content, not by the system
            raise ImportSourceError(f"{path}: not a readable NumPy file ({exc})") from None
        raise unreadable(path, exc, "import") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        # EOFError: an empty .npy; BadZipFile: a truncated or damaged .npz (a bad CRC):
        # both escaped as tracebacks
        raise ImportSourceError(f"{path}: not a readable NumPy file ({exc or 'empty'})") from None
    if matrix.dtype.kind not in "fiu":
        # a complex matrix lost its imaginary parts, strings were parsed and booleans
        # became 0 and 1, each imported and verified as if the store had held those numbers
        raise ImportSourceError(
            f"{path}: the matrix holds {matrix.dtype} values, not real numbers; save the "
            "vectors as a float32 or float64 matrix"
        )
    return matrix


def _matrix_rows(path: Path, matrix: np.ndarray) -> Iterator[np.ndarray]:
    """The rows of ``matrix``: those of a mapped ``.npy`` file read with plain reads, in
    blocks of ``NPY_BLOCK_BYTES``.

    Read through the map, a file cut short while it was read (``np.save`` rewriting it,
    as a re-run export does, truncates it first) killed the import with SIGBUS ("Bus
    error", exit 135), saying nothing. A read that comes short, or a file whose size or
    modification time changed by the end, is now ImportSourceError. A matrix saved in
    Fortran order (``np.save`` of a transposed array) is read so too, a column's part
    at a time (:func:`_fortran_block`): it was still read through the map. A read the
    system refuses is :func:`ragstore.files.unreadable`'s error, as the file's load's is."""
    if not isinstance(matrix, np.memmap):
        yield from matrix
        return
    from ragstore.files import unreadable

    try:
        yield from _mapped_rows(path, matrix)
    except OSError as exc:
        raise unreadable(path, exc, "import") from None


def _mapped_rows(path: Path, matrix: np.memmap) -> Iterator[np.ndarray]:
    """The rows of a mapped ``.npy`` matrix, read with plain reads (:func:`_matrix_rows`)."""
    rows, cols = matrix.shape
    itemsize = matrix.dtype.itemsize
    fortran = not matrix.flags.c_contiguous
    per_block = max(1, NPY_BLOCK_BYTES // max(1, cols * itemsize))
    if fortran:
        per_block = max(per_block, -(-NPY_COLUMN_READ_BYTES // itemsize))
    changed = ImportSourceError(
        f"{path} changed while it was read (it is shorter than its header says, or was "
        "written to); import it once it is written whole. Nothing was written"
    )
    with path.open("rb") as fh:
        before = os.fstat(fh.fileno())
        fh.seek(matrix.offset)
        for start in range(0, rows, per_block):
            count = min(per_block, rows - start)
            if fortran:
                block = _fortran_block(fh, matrix, start, count)
                if block is None:
                    raise changed
                yield from block
                continue
            size = count * cols * itemsize
            data = fh.read(size)
            if len(data) < size:
                raise changed
            yield from np.frombuffer(data, dtype=matrix.dtype).reshape(count, cols)
        after = os.fstat(fh.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise changed


def _fortran_block(fh: BinaryIO, matrix: np.memmap, start: int, count: int) -> np.ndarray | None:
    """Rows ``start`` to ``start + count`` of a Fortran-order ``.npy`` matrix, read from
    ``fh``: the file holds it column by column, so each column's part is one read. None
    where a read comes short (the file was cut)."""
    rows, cols = matrix.shape
    itemsize = matrix.dtype.itemsize
    size = count * itemsize
    block = np.empty((cols, count), dtype=matrix.dtype)
    for col in range(cols):
        fh.seek(matrix.offset + (col * rows + start) * itemsize)
        data = fh.read(size)
        if len(data) < size:
            return None
        block[col] = np.frombuffer(data, dtype=matrix.dtype)
    return np.ascontiguousarray(block.T)


def default_sidecar(path: Path) -> Path:
    for suffix in (".jsonl", ".csv"):
        candidate = path.with_suffix(suffix)
        if candidate.exists():
            return candidate
    raise ImportSourceError(
        f"{path}: no sidecar found ({path.with_suffix('.jsonl').name} or "
        f"{path.with_suffix('.csv').name}); give the ids and texts with --sidecar PATH"
    )


class _CsvLines:
    """A CSV file's lines as the csv module reads them, noting the line each row starts on.

    Rows were numbered by count (row ``n`` said to be on line ``n + 1``), so after a quoted
    field spanning several lines every later error named the wrong line; the reader's
    ``line_num`` is the line a row ends on. ``start`` is the first line read since it was
    last cleared that is not blank (the reader skips blank lines between rows): the line
    the row being read starts on."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.lineno = 0
        self.start: int | None = None

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.lineno += 1
        if self.start is None and line.strip("\r\n"):
            self.start = self.lineno
        return line

    def row_start(self) -> int:
        """The line the row last read (or being read) starts on; cleared for the next."""
        start, self.start = self.start or self.lineno, None
        return start


class NumpySource:
    """A ``.npy``/``.npz`` matrix, row ``i`` described by sidecar line ``i``."""

    def __init__(self, path: Path, sidecar: Path | None = None, array: str | None = None) -> None:
        _must_exist(path)
        self.path = path
        self.sidecar = sidecar or default_sidecar(path)
        _must_exist(self.sidecar)
        self.array = array

    @property
    def description(self) -> str:
        return f"NumPy matrix {self.path} with sidecar {self.sidecar}"

    def _sidecar_rows(self) -> Iterator[tuple[str, tuple[Any, Any, dict[str, Any]]]]:
        if self.sidecar.suffix.lower() == ".csv":
            yield from self._csv_rows()
        else:
            for lineno, obj in _json_lines(self.sidecar):
                where = f"{self.sidecar} line {lineno}"
                rid, text, _, metadata = _split_fields(obj, where, with_vector=False)
                yield where, (rid, text, metadata)

    def _csv_rows(self) -> Iterator[tuple[str, tuple[Any, Any, dict[str, Any]]]]:
        """The rows of a CSV sidecar; a file the csv module cannot read is
        :class:`ImportSourceError` naming the line.

        The module's error (a field over its 128 KiB limit, a line ending in a bare CR)
        escaped as a traceback, and a text over 128 KiB could not be imported at all:
        the limit is raised to ``CSV_FIELD_LIMIT`` (it is the process's, and only ever
        raised)."""
        if csv.field_size_limit() < CSV_FIELD_LIMIT:
            csv.field_size_limit(CSV_FIELD_LIMIT)
        lines = _CsvLines(_utf8_lines(self.sidecar, csv_file=True))
        reader = csv.DictReader(lines)
        try:
            yield from self._csv_records(reader, lines)
        except csv.Error as exc:
            raise ImportSourceError(
                f"{self.sidecar} line {lines.row_start()}: not a readable CSV file ({exc}); "
                "write it with a CSV writer (fields with commas, quotes or newlines quoted, "
                "lines ending in LF or CRLF), or give a JSONL sidecar"
            ) from None

    def _csv_records(
        self, reader: csv.DictReader[str], lines: _CsvLines
    ) -> Iterator[tuple[str, tuple[Any, Any, dict[str, Any]]]]:
        """The rows under the header, each with where it is: the line it starts on."""
        if reader.fieldnames is None or "id" not in reader.fieldnames:
            raise ImportSourceError(
                f"{self.sidecar}: the CSV needs a header row with "
                "an 'id' column (and usually 'text')"
            )
        first = reader.fieldnames[0]
        lines.row_start()  # the header's
        for row in reader:
            lineno = lines.row_start()
            if row[first] and row[first].startswith("\ufeff"):
                # a BOM opening a later line (CSV files saved with one, as Excel does,
                # joined with cat) became part of the row's first field: its id. Dropped,
                # as the first line's is; no CSV field starts with U+FEFF
                row[first] = row[first][1:]
            if list(row.values()) == reader.fieldnames:
                # the header of a file joined after the first: read as a record "id"
                raise ImportSourceError(
                    f"{self.sidecar} line {lineno}: the header row again (CSV files "
                    "joined with cat?); join them without the later files' header rows "
                    "(tail -n +2 b.csv >> a.csv)"
                )
            if None in row:
                # the csv module keeps the fields beyond the header under the key None: they
                # were metadata under a key that is no string, and the record was refused
                # as "unstorable" for "a key that is not a string (None ...)"
                raise ImportSourceError(
                    f"{self.sidecar} line {lineno}: {len(reader.fieldnames) + len(row[None])} "
                    f"fields, but the header names {len(reader.fieldnames)} columns; quote the "
                    "fields that hold a comma, or add the missing column names to the header"
                )
            rest: dict[str, Any] = dict(row)
            rid = rest.pop("id")
            text = rest.pop("text", None)
            meta_raw = rest.pop("metadata", None)
            if meta_raw:
                try:
                    meta = json.loads(meta_raw)
                except json.JSONDecodeError:
                    meta = {"metadata": meta_raw}
                where = f"{self.sidecar} line {lineno}"
                rest = _merged(
                    meta if isinstance(meta, dict) else {"metadata": meta},
                    rest,
                    where,
                    text_columns=True,
                )
            yield f"{self.sidecar} line {lineno}", (rid, text, rest)

    def records(self) -> Iterator[Record]:
        matrix = _load_matrix(self.path, self.array)
        if matrix.ndim != 2:
            raise ImportSourceError(
                f"{self.path}: expected a 2-D matrix (one row per vector), got shape {matrix.shape}"
            )
        rows = self._sidecar_rows()
        vectors = _matrix_rows(self.path, matrix)
        n = 0
        for i in range(matrix.shape[0]):
            item = next(rows, None)
            if item is None:
                raise ImportSourceError(
                    f"{self.sidecar} describes {i} rows but {self.path} has {matrix.shape[0]}; "
                    "the sidecar needs one line per matrix row, in the same order"
                )
            where, (rid, text, metadata) = item
            n += 1
            yield Record(
                to_id(rid, where),
                to_text(text, where),
                to_vector(next(vectors), where),
                json_safe(metadata),
            )
        next(vectors, None)  # past the last row: its check of the file's size and time
        if next(rows, None) is not None:
            extra = 1 + sum(1 for _ in rows)
            raise ImportSourceError(
                f"{self.sidecar} describes {n + extra} rows but {self.path} has {n}; "
                "the sidecar needs one line per matrix row, in the same order"
            )
