"""Reading examples: local csv/tsv/jsonl/json/parquet/aligned-text files or Hub datasets.

Everything comes back as a `Table`: a list of row dicts plus enough provenance (file, line) to
name the exact row in an error. Column checks and row checks live in the task modules; this
module only knows file formats.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.delimited import check_header, delimited_records, read_delimited
from finetune.data.lines import LANG_PLACEHOLDER
from finetune.data.records import (
    parquet_file,
    read_aligned_text,
    read_json,
    read_jsonl,
    read_parquet,
)
from finetune.data.sources import HubSource, LocalSource
from finetune.errors import (
    FILE_NOT_FOUND_FIX,
    DataError,
    DataFileError,
    DataFormatError,
    first_line,
)

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import TableRow

log = logging.getLogger(__name__)

DUPLICATES_SHOWN = 3

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

    rows: list[TableRow]
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
    fmt: str = source.format
    if fmt == "auto":
        fmt = "text" if LANG_PLACEHOLDER in str(path) else EXTENSIONS.get(path.suffix.lower(), "")
    if not fmt:
        raise DataFormatError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}",
            fix="use .csv/.tsv/.jsonl/.json/.parquet, or set format: in the data source",
        )
    if fmt not in ("csv", "tsv") and (not source.header or source.columns is not None):
        raise DataFormatError(
            f"{source.path}: header/columns apply to csv and tsv files; this one is read as {fmt}",
            fix="remove header:/columns: from this data source (its format names its fields)",
        )
    return fmt


def no_rows(source: LocalSource, fmt: str) -> DataFormatError:
    """The error for a file with no data rows (a header alone counts as none)."""
    header = fmt in ("csv", "tsv") and source.header
    what = "has a header but no rows" if header else "has no rows"
    return DataFormatError(f"{source.path}: {what}", fix="add examples to the file")


def delimiter_for(fmt: str) -> str:
    return "," if fmt == "csv" else "\t"


def _read_rows(
    source: LocalSource, path: Path, fmt: str, limit: int | None, langs: list[str] | None
) -> Table:
    shown = str(source.path)
    if fmt in ("csv", "tsv"):
        columns, rows, lines = read_delimited(
            path, delimiter_for(fmt), source.quoting, limit, shown, source.columns, source.header
        )
        first = 2 if source.header else 1
        return Table(rows=rows, source=shown, first_line=first, columns=columns, lines=lines)
    if fmt == "jsonl":
        rows, lines = read_jsonl(path, limit, shown)
        return Table(rows=rows, source=shown, first_line=1, lines=lines)
    if fmt == "json":
        return Table(rows=read_json(path, limit, shown), source=shown, first_line=0)
    if fmt == "parquet":
        return Table(rows=read_parquet(path, limit, shown), source=shown, first_line=0)
    require_placeholder(path, shown)
    return Table(rows=read_aligned_text(path, langs or [], limit), source=shown, first_line=1)


def require_placeholder(path: Path, shown: str) -> None:
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
        raise DataFileError(
            f"{source.path}: file not found",
            fix=FILE_NOT_FOUND_FIX,
        )
    table = _read_rows(source, path, fmt, limit, langs)
    if not table.rows:
        raise no_rows(source, fmt)
    report_duplicates(table)
    return table


def duplicate_rows(table: Table) -> list[tuple[int, int]]:
    """(index of a repeated row, index of its first occurrence) for every exact repeat."""
    first_seen: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    for index, row in enumerate(table.rows):
        key = row_key(row)
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
    shown = [(_position(table, i), _position(table, j)) for i, j in repeats[:DUPLICATES_SHOWN]]
    warn_duplicates(table.source, len(repeats), shown)
    return len(repeats)


def warn_duplicates(source: str, count: int, shown: list[tuple[str, str]]) -> None:
    """The warning, given the count and the first few (repeat, original) positions."""
    if count:
        log.warning(
            "%s: %d duplicate row%s (%s%s); they count twice in training/eval",
            source,
            count,
            "s" if count != 1 else "",
            "; ".join(f"{a} repeats {b}" for a, b in shown),
            ", ..." if count > DUPLICATES_SHOWN else "",
        )


def row_key(row: TableRow) -> str:
    """What makes two rows the same row."""
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)


def read_hub(source: HubSource, limit: int | None = None, seed: int = 0) -> Table:
    """Load a Hub dataset split; only reachable with network or a warm HF cache.

    `limit` takes a seeded random sample, not the first rows: Hub splits are often sorted by
    source, label or length, so their head is no sample of the whole. The split is an Arrow
    file memory-mapped by `datasets`, so only the sampled rows become Python objects.
    """
    try:
        import datasets

        ds = datasets.load_dataset(
            source.hub, source.config, split=source.split, revision=source.revision
        )
    except Exception as exc:
        name = f"{source.hub}" + (f"/{source.config}" if source.config else "")
        raise DataError(
            f"data: cannot load Hub dataset {name} split {source.split} "
            f"({type(exc).__name__}: {first_line(exc)})",
            fix="check the id/config/split, your network (HF_HUB_OFFLINE), or use a local file",
        ) from None
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit))
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
    seed: int = 0,
) -> Table:
    """A local file's first `limit` rows (streamed), or a seeded sample of a Hub split."""
    if isinstance(source, HubSource):
        return read_hub(source, limit, seed)
    return read_local(source, base_dir, limit, langs)


def _peek_delimited(source: LocalSource, path: Path, fmt: str, shown: str) -> list[str]:
    """The header's names (or the source's `columns`); a header-less file's first line is
    read too, so a `columns:` list that does not fit the file is found from one line."""
    delimiter = delimiter_for(fmt)
    records = delimited_records(path, delimiter, source.quoting, shown)
    first = next(records, None)
    if first is None or not first[1]:
        return []
    if isinstance(first[1], DataFormatError):
        raise first[1]
    found = check_header(first[1], delimiter, shown) if source.header else first[1]
    names = source.columns or found
    if len(names) != len(found):
        what = "the header has" if source.header else "line 1 has"
        raise DataFormatError(
            f"{shown} line 1: {what} {len(found)} fields and columns: names {len(names)} "
            f"({', '.join(names)})",
            fix="name every field of a line in columns:, in order",
        )
    return list(names)


def peek_columns(source: LocalSource, base_dir: Path | None, langs: list[str]) -> list[str]:
    """Column names from the header or first row only: `validate --quick` stays instant on
    huge files."""
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    shown = str(source.path)
    if fmt == "text":
        return list(langs)
    if fmt in ("csv", "tsv"):
        return _peek_delimited(source, path, fmt, shown)
    if fmt == "jsonl":
        rows, _ = read_jsonl(path, 1, shown)
        return list(rows[0]) if rows else []
    if fmt == "parquet":
        return list(parquet_file(path, shown).schema_arrow.names)
    table = read_local(source, base_dir, limit=1, langs=langs)
    return table.column_names()
