"""Reading examples: local csv/tsv/jsonl/json/parquet/aligned-text files or Hub datasets.

Everything comes back as a `Table`: a list of row dicts plus enough provenance (file, line) to
name the exact row in an error. Column checks and row checks live in the task modules; this
module only knows file formats.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from finetune.data.sources import HubSource, LocalSource
from finetune.errors import (
    AlignmentError,
    DataColumnError,
    DataError,
    DataFileError,
    DataFormatError,
    first_line,
)

log = logging.getLogger(__name__)

LANG_PLACEHOLDER = "{lang}"
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}


@dataclass
class Table:
    """Rows of one split, with where each came from (for messages like 'train.tsv line 12')."""

    rows: list[dict[str, Any]]
    source: str
    first_line: int = 2  # line of rows[0] (1-based; csv header is line 1); 0: count rows
    columns: list[str] | None = None
    lines: list[int] | None = None  # exact line of each row (blank lines and multi-line fields)

    def where(self, index: int) -> str:
        if self.lines is not None and index < len(self.lines):
            return f"{self.source} line {self.lines[index]}"
        if not self.first_line:  # a Hub split, a JSON array or parquet: rows, not lines
            return f"{self.source} row {index + 1}"
        return f"{self.source} line {self.first_line + index}"

    def column_names(self) -> list[str]:
        if self.columns is not None:
            return self.columns
        return list(self.rows[0].keys()) if self.rows else []

    def __len__(self) -> int:
        return len(self.rows)


def resolve_path(path: str, base_dir: Path | None) -> Path:
    """Relative paths are tried against the working directory, then the recipe's directory."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or base_dir is None:
        return candidate
    if _exists(candidate):
        return candidate
    beside = base_dir / candidate
    return beside if _exists(beside) else candidate


def _exists(path: Path) -> bool:
    if LANG_PLACEHOLDER in str(path):
        return path.parent.exists()
    return path.exists()


def detect_format(source: LocalSource, path: Path) -> str:
    if source.format != "auto":
        return source.format
    if LANG_PLACEHOLDER in str(path):
        return "text"
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataFormatError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}",
            fix="use .csv/.tsv/.jsonl/.json/.parquet, or set format: in the data source",
        )
    return fmt


# --------------------------------------------------------------------------- readers
#
# Files are streamed line by line: `max_train_samples` stops reading early, `validate` parses
# every row but keeps none (`scan_local`), and `validate --quick` reads only the header, so a
# multi-GB file never costs the memory of its text.

MAX_LINE_BYTES = 64 * 1024 * 1024  # longer "lines" are binary files or a missing newline
CSV_FIELD_LIMIT = MAX_LINE_BYTES
BOM = b"\xef\xbb\xbf"
DUPLICATES_SHOWN = 3


def _open_binary(path: Path, shown: str) -> BinaryIO:
    """Open a regular file for reading; every way that can fail becomes a DataFileError."""
    if not path.exists():
        raise DataFileError(f"{shown}: file not found", fix="check the path in data:")
    if path.is_dir():
        raise DataFileError(f"{shown}: is a directory", fix="name a data file inside it")
    if not path.is_file():  # a FIFO or device would block or never end
        raise DataFileError(
            f"{shown}: is not a regular file (a pipe, socket or device)",
            fix="copy the data into a regular file",
        )
    try:
        return path.open("rb")
    except OSError as exc:
        raise DataFileError(
            f"{shown}: cannot be read ({exc.strerror or exc})",
            fix="check the file's permissions (chmod a+r) and that its disk is mounted",
        ) from None


def _lines(path: Path, shown: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text with its newline), streamed; bad UTF-8 names its line and column."""
    shown = shown or str(path)
    with _open_binary(path, shown) as handle:
        lineno = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DataFormatError(
                    f"{shown} line {lineno}: longer than {MAX_LINE_BYTES // 2**20} MB",
                    fix="this looks like a binary file or one without line breaks",
                )
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            yield lineno, _decode(raw, shown, lineno)


def _decode(raw: bytes, shown: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"{shown} line {lineno} column {exc.start + 1}: bytes that are not UTF-8 "
            f"({raw[exc.start : exc.start + 4]!r})",
            fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)",
        ) from None


def _open_text(path: Path) -> str:
    """Whole-file text, for formats that cannot be streamed (a single JSON document)."""
    return "".join(text for _, text in _lines(path))


class _LineTracker:
    """Feeds csv.reader and keeps the raw lines of the record being read (its first line and
    its text), so a record can be checked against RFC 4180 and named by line."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self.current = 0
        self._pending: list[str] = []
        self._start = 0

    def __iter__(self) -> Iterator[str]:
        for lineno, text in self._lines:
            self.current = lineno
            if not self._pending:
                self._start = lineno
            self._pending.append(text)
            yield text

    def take(self) -> tuple[int, str]:
        """(first line, raw text) of the record just read; starts the next record."""
        start, text = self._start, "".join(self._pending)
        self._pending = []
        return start, text


# A record is yielded as its fields, or as the error that makes it unusable, so `read_local`
# can stop at the first bad row and `scan_local` (validate) can list every one of them.
Record = tuple[int, "list[str] | DataFormatError"]
Row = tuple[int, "dict[str, Any] | DataFormatError"]


def _quoting_fix(quoting: str) -> str:
    if quoting == "none":
        return "this file is read with quoting: none (every quote is text): check the delimiter"
    return (
        "if quotes in this file are text (GLUE-style), set quoting: none in the data source; "
        'otherwise quote the whole field and double each quote inside it ("say ""hi""")'
    )


def _closing_quote(text: str, pos: int) -> int:
    """Index of the quote that closes a quoted field whose text starts at pos; -1 if none."""
    while True:
        found = text.find('"', pos)
        if found < 0 or text[found + 1 : found + 2] != '"':
            return found
        pos = found + 2  # a doubled quote is one quote of text


@functools.cache
def _field_end(delimiter: str) -> re.Pattern[str]:
    """Where an unquoted field ends, or the quote it must not contain."""
    return re.compile(f'["{re.escape(delimiter)}\\r\\n]')


def _quote_problem(text: str, delimiter: str) -> tuple[int, int, str] | None:
    """(offset, offset of the field, what) of the first quote RFC 4180 does not allow.

    A quote is either a whole field's opening/closing quote or doubled inside such a field;
    any other quote would silently become text (or silently vanish), so it is an error.
    """
    stops = delimiter + "\r\n"
    pos, end = 0, len(text)
    while pos < end:
        field = pos
        if text[pos] == '"':
            close = _closing_quote(text, pos + 1)
            if close < 0:
                return field, field, "a quote opens a field here, never closed (unclosed quote)"
            pos = close + 1
            if pos < end and text[pos] not in stops:
                return close, field, "text follows the closing quote of a quoted field"
        else:
            found = _field_end(delimiter).search(text, pos)
            pos = found.start() if found else end
            if pos < end and text[pos] == '"':
                return pos, field, "a quote inside a field that does not start with one"
        if pos >= end or text[pos] in "\r\n":
            return None
        pos += 1
    return None


def _quote_error(shown: str, start: int, text: str, found: tuple[int, int, str]) -> DataFormatError:
    offset, field, what = found
    line = start + text.count("\n", 0, offset)
    opened = start + text.count("\n", 0, field)
    where = f" (the field starts on line {opened})" if opened != line else ""
    return DataFormatError(f"{shown} line {line}: {what}{where}", fix=_quoting_fix("rfc4180"))


def _delimited_records(path: Path, delimiter: str, quoting: str, shown: str) -> Iterator[Record]:
    """(first line of record, fields or error) for each csv/tsv record.

    rfc4180: quoted fields as pandas/Excel write them; every quote in a record is checked, so
    none turns into text or disappears unnoticed. none: quotes are ordinary characters.
    Unreadable files, bad UTF-8 and binary data raise: no later record can be trusted.
    """
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    mode: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    tracker = _LineTracker(_lines(path, shown))
    reader = csv.reader(tracker, delimiter=delimiter, quoting=mode)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start, _ = tracker.take()
            yield (
                start,
                DataFormatError(
                    f"{shown} line {tracker.current}: {exc}",
                    fix=_quoting_fix(quoting) + "; and check that this is a text file",
                ),
            )
            continue
        start, text = tracker.take()
        found = _quote_problem(text, delimiter) if quoting != "none" and '"' in text else None
        yield start, (_quote_error(shown, start, text, found) if found else values)


def _header(records: Iterator[Record], delimiter: str, shown: str) -> list[str]:
    """The checked header (line 1); an empty or unreadable first record stops the read."""
    first = next(records, None)
    if first is None or not first[1]:
        raise DataFormatError(f"{shown}: file is empty", fix="add a header line and rows")
    if isinstance(first[1], DataFormatError):
        raise first[1]
    return _check_header(first[1], delimiter, shown)


def _check_header(header: list[str], delimiter: str, shown: str) -> list[str]:
    """Strip names; catch the wrong delimiter and repeated names on line 1."""
    header = [h.strip() for h in header]
    if len(header) == 1:
        for other, name in (("\t", "tab"), (",", "comma"), (";", "semicolon"), ("|", "pipe")):
            if other != delimiter and other in header[0]:
                fmt = "tsv" if other == "\t" else "csv"
                raise DataFormatError(
                    f"{shown} line 1: the header {header[0]!r} is one column but contains "
                    f"{name}s: the file looks {name}-separated",
                    fix=f"rename the file to .{fmt}, or set format: {fmt} in the data source"
                    if other in "\t,"
                    else "re-save it comma- or tab-separated",
                )
    seen: set[str] = set()
    for column, name in enumerate(header, start=1):
        if name in seen:
            raise DataFormatError(
                f"{shown} line 1 column {column}: column name {name!r} appears twice",
                fix="give every column a distinct name",
            )
        seen.add(name)
    return header


def _delimited_rows(
    path: Path, delimiter: str, quoting: str, shown: str
) -> tuple[list[str], Iterator[Row]]:
    """The header, and (line, row or error) for every later record; blank lines skipped."""
    records = _delimited_records(path, delimiter, quoting, shown)
    header = _header(records, delimiter, shown)

    def rows() -> Iterator[Row]:
        for lineno, values in records:
            if isinstance(values, DataFormatError):
                yield lineno, values
            elif not values or values == [""]:
                continue
            elif len(values) != len(header):
                yield lineno, _field_count_error(shown, lineno, values, header, delimiter)
            else:
                yield lineno, dict(zip(header, values))

    return header, rows()


def _collect(rows: Iterator[Row], limit: int | None) -> tuple[list[dict], list[int]]:
    """Rows and their lines up to `limit`; the first bad row is raised (as `run` needs)."""
    kept: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, row in rows:
        if limit is not None and len(kept) >= limit:
            break
        if isinstance(row, DataFormatError):
            raise row
        kept.append(row)
        lines.append(lineno)
    return kept, lines


def _iter_delimited(
    path: Path, delimiter: str, quoting: str, limit: int | None, shown: str | None = None
) -> tuple[list[str], list[dict], list[int]]:
    """Header, rows and each row's line number; stops after `limit` rows."""
    header, rows = _delimited_rows(path, delimiter, quoting, shown or str(path))
    return (header, *_collect(rows, limit))


def _field_count_error(
    shown: str, lineno: int, values: list[str], header: list[str], delimiter: str
) -> DataFormatError:
    """Wrong field count: an unclosed quote (the field swallowed line breaks) or a delimiter."""
    if any("\n" in v for v in values):
        return DataFormatError(
            f"{shown} line {lineno}: a quoted field opened here runs over "
            f"{max(v.count(chr(10)) for v in values) + 1} lines (an unclosed quote?)",
            fix='close the quote, or double a quote inside a quoted field ("")',
        )
    return DataFormatError(
        f"{shown} line {lineno}: {len(values)} fields, header has {len(header)}",
        fix=_delimiter_fix(delimiter),
    )


def _delimiter_fix(delimiter: str) -> str:
    this, other = ("comma", "tab") if delimiter == "," else ("tab", "comma")
    return (
        f"check the delimiter (this file is read as {this}-separated; is it {other}-separated?) "
        "and quote fields that contain it"
    )


def _jsonl_rows(path: Path, shown: str) -> Iterator[Row]:
    """(line, object or error) for every non-blank line of a JSON Lines file."""
    for lineno, line in _lines(path, shown):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield (
                lineno,
                DataFormatError(
                    f"{shown} line {lineno} column {exc.colno}: invalid JSON ({exc.msg})",
                    fix="each line must be one JSON object",
                ),
            )
            continue
        if not isinstance(value, dict):
            yield (
                lineno,
                DataFormatError(
                    f"{shown} line {lineno}: a JSON {type(value).__name__}, not an object",
                    fix='write one object per line: {"text": ..., "label": ...}',
                ),
            )
            continue
        yield lineno, value


def _iter_jsonl(path: Path, limit: int | None, shown: str | None = None) -> tuple[list, list]:
    """Rows and their line numbers from JSON Lines; stops after `limit` rows."""
    return _collect(_jsonl_rows(path, shown or str(path)), limit)


def _read_json(path: Path, limit: int | None, shown: str | None = None) -> list[dict]:
    shown = shown or str(path)
    try:
        value = json.loads(_open_text(path))
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{shown} line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})",
            fix="fix the JSON there, or use .jsonl with one object per line",
        ) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DataFormatError(
            f"{shown}: expected a list of objects", fix="or use .jsonl, one object per line"
        )
    return value[:limit] if limit else value


def _parquet_file(path: Path, shown: str) -> Any:
    import pyarrow.parquet as pq

    _open_binary(path, shown).close()
    try:
        return pq.ParquetFile(path)
    except Exception as exc:
        raise DataFormatError(
            f"{shown}: not a readable parquet file ({exc})", fix="check the file"
        ) from None


def _read_parquet(path: Path, limit: int | None, shown: str | None = None) -> list[dict]:
    """Row groups are read one batch at a time, so a limit never loads the whole file."""
    shown = shown or str(path)
    rows: list[dict[str, Any]] = []
    for batch in _parquet_file(path, shown).iter_batches(batch_size=limit or 65536):
        rows.extend(batch.to_pylist())
        if limit is not None and len(rows) >= limit:
            return rows[:limit]
    return rows


def _aligned_rows(path: Path, langs: list[str]) -> Iterator[dict[str, str]]:
    """train.{lang} -> rows {en: ..., de: ...} from line-aligned files, read in lockstep."""
    files = {lang: str(path).replace(LANG_PLACEHOLDER, lang) for lang in langs}
    streams = {lang: _lines(Path(name)) for lang, name in files.items()}
    done = 0
    while True:
        got = {lang: next(stream, None) for lang, stream in streams.items()}
        if all(v is None for v in got.values()):
            return
        if any(v is None for v in got.values()):
            counts = {lang: done + (got[lang] is not None) for lang in langs}
            for lang, stream in streams.items():
                counts[lang] += sum(1 for _ in stream)
            detail = ", ".join(f"{files[k]}: {n} lines" for k, n in counts.items())
            raise AlignmentError(
                f"aligned files have different line counts ({detail}); "
                f"they diverge at line {done + 1}",
                fix="line N of each file must translate line N of the other; "
                "remove the extra lines or the blank line at the end",
            )
        done += 1
        yield {lang: line[1].rstrip("\r\n") for lang, line in got.items() if line is not None}


def _read_aligned_text(path: Path, langs: list[str], limit: int | None) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for row in _aligned_rows(path, langs):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(row)
    return rows


def _delimiter(fmt: str) -> str:
    return "," if fmt == "csv" else "\t"


def _read_rows(
    source: LocalSource, path: Path, fmt: str, limit: int | None, langs: list[str] | None
) -> Table:
    shown = str(source.path)
    if fmt in ("csv", "tsv"):
        columns, rows, lines = _iter_delimited(path, _delimiter(fmt), source.quoting, limit, shown)
        return Table(rows=rows, source=shown, first_line=2, columns=columns, lines=lines)
    if fmt == "jsonl":
        rows, lines = _iter_jsonl(path, limit, shown)
        return Table(rows=rows, source=shown, first_line=1, lines=lines)
    if fmt == "json":
        return Table(rows=_read_json(path, limit, shown), source=shown, first_line=0)
    if fmt == "parquet":
        return Table(rows=_read_parquet(path, limit, shown), source=shown, first_line=0)
    _require_placeholder(path, shown)
    return Table(rows=_read_aligned_text(path, langs or [], limit), source=shown, first_line=1)


def _require_placeholder(path: Path, shown: str) -> None:
    if LANG_PLACEHOLDER not in str(path):
        raise DataFormatError(
            f"{shown}: plain text needs a {LANG_PLACEHOLDER} placeholder",
            fix="write e.g. data/train.{lang} for train.en + train.de",
        )


def read_local(
    source: LocalSource,
    base_dir: Path | None,
    limit: int | None = None,
    langs: list[str] | None = None,
) -> Table:
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    if fmt != "text" and not path.exists():
        raise DataFileError(f"{source.path}: file not found", fix="check the path in data:")
    table = _read_rows(source, path, fmt, limit, langs)
    if not table.rows:
        what = "has a header but no rows" if table.columns else "has no rows"
        raise DataFormatError(f"{source.path}: {what}", fix="add examples to the file")
    report_duplicates(table)
    return table


def duplicate_rows(table: Table) -> list[tuple[int, int]]:
    """(index of a repeated row, index of its first occurrence) for every exact repeat."""
    first_seen: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    for index, row in enumerate(table.rows):
        key = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
        if key in first_seen:
            repeats.append((index, first_seen[key]))
        else:
            first_seen[key] = index
    return repeats


def _position(table: Table, index: int) -> str:
    """'line 7' for a file, 'row 7' for a Hub split."""
    return table.where(index).removeprefix(table.source + " ")


def report_duplicates(table: Table) -> int:
    """Warn (once per file) about rows that repeat an earlier row exactly.

    A warning, not an error: duplicates are common in real data sets (and sometimes meant), but
    they weight those rows twice and inflate eval scores when they leak across splits.
    """
    repeats = duplicate_rows(table)
    if repeats:
        shown = "; ".join(
            f"{_position(table, i)} repeats {_position(table, j)}"
            for i, j in repeats[:DUPLICATES_SHOWN]
        )
        log.warning(
            "%s: %d duplicate row%s (%s%s); they count twice in training/eval",
            table.source,
            len(repeats),
            "s" if len(repeats) != 1 else "",
            shown,
            ", ..." if len(repeats) > DUPLICATES_SHOWN else "",
        )
    return len(repeats)


def read_hub(source: HubSource, limit: int | None = None) -> Table:
    """Load a Hub dataset split; only reachable with network or a warm HF cache."""
    try:
        import datasets

        split = source.split if limit is None else f"{source.split}[:{limit}]"
        ds = datasets.load_dataset(source.hub, source.config, split=split, revision=source.revision)
    except Exception as exc:
        name = f"{source.hub}" + (f"/{source.config}" if source.config else "")
        raise DataError(
            f"data: cannot load Hub dataset {name} split {source.split} "
            f"({type(exc).__name__}: {first_line(exc)})",
            fix="check the id/config/split, your network (HF_HUB_OFFLINE), or use a local file",
        ) from None
    rows = ds.to_list()
    label = f"hub:{source.hub}:{source.split}"
    if not rows:
        raise DataError(f"{label}: split has no rows", fix="pick another split")
    table = Table(rows=rows, source=label, first_line=0)
    report_duplicates(table)
    return table


def read_source(
    source: LocalSource | HubSource,
    base_dir: Path | None,
    limit: int | None = None,
    langs: list[str] | None = None,
) -> Table:
    if isinstance(source, HubSource):
        return read_hub(source, limit)
    return read_local(source, base_dir, limit, langs)


def peek_columns(source: LocalSource, base_dir: Path | None, langs: list[str]) -> list[str]:
    """Column names from the header or first row only: `validate --quick` stays instant on
    huge files."""
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    shown = str(source.path)
    if fmt == "text":
        return list(langs)
    if fmt in ("csv", "tsv"):
        delimiter = _delimiter(fmt)
        first = next(_delimited_records(path, delimiter, source.quoting, shown), None)
        if first is None or not first[1]:
            return []
        if isinstance(first[1], DataFormatError):
            raise first[1]
        return _check_header(first[1], delimiter, shown)
    if fmt == "jsonl":
        rows, _ = _iter_jsonl(path, 1, shown)
        return list(rows[0]) if rows else []
    if fmt == "parquet":
        return list(_parquet_file(path, shown).schema_arrow.names)
    table = read_local(source, base_dir, limit=1, langs=langs)
    return table.column_names()


# --------------------------------------------------------------------------- full scan

PROBLEMS_SHOWN = 20


@dataclass
class Scan:
    """What `validate` learns from reading every row of one file, in constant memory."""

    columns: list[str]
    rows: int = 0  # good rows
    bad_rows: int = 0
    problems: list[DataError] = field(default_factory=list)  # the first PROBLEMS_SHOWN, + a tally

    def add(self, error: DataError) -> None:
        self.bad_rows += 1
        if len(self.problems) < PROBLEMS_SHOWN:
            self.problems.append(error)


def _missing_in_row(row: dict[str, Any], columns: list[str], where: str) -> DataError | None:
    missing = [c for c in columns if c not in row]
    if not missing:
        return None
    return DataColumnError(
        f"{where}: no column {', '.join(repr(c) for c in missing)} "
        f"(this row has: {', '.join(map(str, row)) or 'nothing'})",
        fix="give every row every column the task reads",
    )


def _scan_rows(source: LocalSource, path: Path, fmt: str, langs: list[str]) -> Iterator[Row]:
    """(line or row number, row or error) for every row of any local format, streamed."""
    shown = str(source.path)
    if fmt in ("csv", "tsv"):
        _, rows = _delimited_rows(path, _delimiter(fmt), source.quoting, shown)
        yield from rows
    elif fmt == "jsonl":
        yield from _jsonl_rows(path, shown)
    elif fmt == "json":  # one JSON document cannot be streamed; it is parsed as `run` does
        yield from enumerate(_read_json(path, None, shown), start=1)
    elif fmt == "parquet":
        number = 0
        for batch in _parquet_file(path, shown).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    else:
        _require_placeholder(path, shown)
        yield from enumerate(_aligned_rows(path, langs), start=1)


def scan_local(
    source: LocalSource, base_dir: Path | None, langs: list[str], columns: Sequence[str] = ()
) -> Scan:
    """Parse every row as `run` will, keeping none of them: every bad row is counted and the
    first PROBLEMS_SHOWN are kept, so one `validate` lists them all at once. A problem that
    makes the rest unreadable (not UTF-8, binary, unaligned files) ends the scan."""
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    shown = str(source.path)
    unit = "line" if fmt in ("csv", "tsv", "jsonl", "text") else "row"
    scan = Scan(columns=[])
    try:
        for number, row in _scan_rows(source, path, fmt, langs):
            if isinstance(row, DataError):
                scan.add(row)
                continue
            missing = _missing_in_row(row, list(columns), f"{shown} {unit} {number}")
            if missing is not None:
                scan.add(missing)
                continue
            if not scan.rows:
                scan.columns = list(row)
            scan.rows += 1
    except DataError as exc:
        scan.add(exc)
    if scan.bad_rows > len(scan.problems):
        scan.problems.append(
            DataFormatError(
                f"{shown}: {scan.bad_rows} bad rows in all; the first {len(scan.problems)} "
                "are listed",
                fix="fix the listed rows and validate again",
            )
        )
    return scan
