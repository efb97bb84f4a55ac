"""Reading examples: local csv/tsv/jsonl/json/parquet/aligned-text files or Hub datasets.

Everything comes back as a `Table`: a list of row dicts plus enough provenance (file, line) to
name the exact row in an error. Column checks and row checks live in the task modules; this
module only knows file formats.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from finetune.data.sources import HubSource, LocalSource
from finetune.errors import (
    AlignmentError,
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
# Files are streamed line by line: `max_train_samples` stops reading early, and `validate` reads
# only the header, so a multi-GB file costs neither the memory of its text nor a full read.

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
    """Feeds csv.reader and remembers the line each record started on."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self.current = 0

    def __iter__(self) -> Iterator[str]:
        for lineno, text in self._lines:
            self.current = lineno
            yield text


def _delimited_records(path: Path, delimiter: str, shown: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of record, fields) for each csv/tsv record, quoting handled by csv."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    tracker = _LineTracker(_lines(path, shown))
    reader = csv.reader(tracker, delimiter=delimiter, quoting=quoting)
    start = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataFormatError(
                f"{shown} line {tracker.current}: {exc}",
                fix='check quoting (a stray " opens a field) and that this is a text file',
            ) from None
        yield start, values
        start = tracker.current + 1


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


def _iter_delimited(
    path: Path, delimiter: str, limit: int | None, shown: str | None = None
) -> tuple[list[str], list[dict], list[int]]:
    """Header, rows and each row's line number; stops after `limit` rows."""
    shown = shown or str(path)
    records = _delimited_records(path, delimiter, shown)
    first = next(records, None)
    if first is None or not first[1]:
        raise DataFormatError(f"{shown}: file is empty", fix="add a header line and rows")
    header = _check_header(first[1], delimiter, shown)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, values in records:
        if limit is not None and len(rows) >= limit:
            break
        if not values or values == [""]:
            continue
        if len(values) != len(header):
            raise _field_count_error(shown, lineno, values, header, delimiter)
        rows.append(dict(zip(header, values)))
        lines.append(lineno)
    return header, rows, lines


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


def _iter_jsonl(path: Path, limit: int | None, shown: str | None = None) -> tuple[list, list]:
    """Rows and their line numbers from JSON Lines; stops after `limit` rows."""
    shown = shown or str(path)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, line in _lines(path, shown):
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{shown} line {lineno} column {exc.colno}: invalid JSON ({exc.msg})",
                fix="each line must be one JSON object",
            ) from None
        if not isinstance(value, dict):
            raise DataFormatError(
                f"{shown} line {lineno}: a JSON {type(value).__name__}, not an object",
                fix='write one object per line: {"text": ..., "label": ...}',
            )
        rows.append(value)
        lines.append(lineno)
    return rows, lines


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


def _read_aligned_text(path: Path, langs: list[str], limit: int | None) -> list[dict]:
    """train.{lang} -> rows {en: ..., de: ...} from line-aligned files, read in lockstep."""
    files = {lang: str(path).replace(LANG_PLACEHOLDER, lang) for lang in langs}
    streams = {lang: _lines(Path(name)) for lang, name in files.items()}
    rows: list[dict[str, Any]] = []
    while limit is None or len(rows) < limit:
        got = {lang: next(stream, None) for lang, stream in streams.items()}
        if all(v is None for v in got.values()):
            break
        if any(v is None for v in got.values()):
            counts = {lang: len(rows) + (got[lang] is not None) for lang in langs}
            for lang, stream in streams.items():
                counts[lang] += sum(1 for _ in stream)
            detail = ", ".join(f"{files[k]}: {n} lines" for k, n in counts.items())
            raise AlignmentError(
                f"aligned files have different line counts ({detail}); "
                f"they diverge at line {len(rows) + 1}",
                fix="line N of each file must translate line N of the other; "
                "remove the extra lines or the blank line at the end",
            )
        rows.append({lang: text.rstrip("\r\n") for lang, (_, text) in got.items()})
    return rows


def _read_rows(
    source: LocalSource, path: Path, fmt: str, limit: int | None, langs: list[str] | None
) -> Table:
    shown = str(source.path)
    if fmt in ("csv", "tsv"):
        columns, rows, lines = _iter_delimited(path, "," if fmt == "csv" else "\t", limit, shown)
        return Table(rows=rows, source=shown, first_line=2, columns=columns, lines=lines)
    if fmt == "jsonl":
        rows, lines = _iter_jsonl(path, limit, shown)
        return Table(rows=rows, source=shown, first_line=1, lines=lines)
    if fmt == "json":
        return Table(rows=_read_json(path, limit, shown), source=shown, first_line=0)
    if fmt == "parquet":
        return Table(rows=_read_parquet(path, limit, shown), source=shown, first_line=0)
    if LANG_PLACEHOLDER not in str(path):
        raise DataFormatError(
            f"{shown}: plain text needs a {LANG_PLACEHOLDER} placeholder",
            fix="write e.g. data/train.{lang} for train.en + train.de",
        )
    return Table(rows=_read_aligned_text(path, langs or [], limit), source=shown, first_line=1)


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
    """Column names from the header or first row only: `validate` stays instant on huge files."""
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    shown = str(source.path)
    if fmt == "text":
        return list(langs)
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        first = next(_delimited_records(path, delimiter, shown), None)
        return _check_header(first[1], delimiter, shown) if first and first[1] else []
    if fmt == "jsonl":
        rows, _ = _iter_jsonl(path, 1, shown)
        return list(rows[0]) if rows else []
    if fmt == "parquet":
        return list(_parquet_file(path, shown).schema_arrow.names)
    table = read_local(source, base_dir, limit=1, langs=langs)
    return table.column_names()
