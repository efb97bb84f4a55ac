"""`validate`'s full scan: every row parsed as `run` will, none kept, every bad row listed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.delimited import delimited_rows
from finetune.data.lines import Row
from finetune.data.readers import delimiter_for, detect_format, require_placeholder, resolve_path
from finetune.data.records import aligned_rows, jsonl_rows, parquet_file, read_json
from finetune.data.sources import LocalSource
from finetune.errors import (
    DataColumnError,
    DataError,
    DataFormatError,
)

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import TableRow

PROBLEMS_SHOWN = 20
RowCheck = Callable[["TableRow", str], "DataError | None"]


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


def _missing_in_row(row: TableRow, columns: list[str], where: str) -> DataError | None:
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
        _, rows = delimited_rows(
            path, delimiter_for(fmt), source.quoting, shown, source.columns, source.header
        )
        yield from rows
    elif fmt == "jsonl":
        yield from jsonl_rows(path, shown)
    elif fmt == "json":  # one JSON document cannot be streamed; it is parsed as `run` does
        yield from enumerate(read_json(path, None, shown), start=1)
    elif fmt == "parquet":
        number = 0
        for batch in parquet_file(path, shown).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    else:
        require_placeholder(path, shown)
        yield from enumerate(aligned_rows(path, langs), start=1)


def scan_local(
    source: LocalSource,
    base_dir: Path | None,
    langs: list[str],
    columns: Sequence[str] = (),
    check: RowCheck | None = None,
) -> Scan:
    """Parse every row as `run` will, keeping none of them: every bad row is counted and the
    first PROBLEMS_SHOWN are kept, so one `validate` lists them all at once. A problem that
    makes the rest unreadable (not UTF-8, binary, unaligned files) ends the scan. `check`: the
    task's own row check (`Task.row_checker`: a regression target is a number)."""
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
            where = f"{shown} {unit} {number}"
            missing = _missing_in_row(row, list(columns), where)
            if missing is None and check is not None:
                missing = check(row, where)
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
