"""Opening data files: bytes, UTF-8 lines with their numbers, and records for csv.reader.

Files are streamed line by line: `max_train_samples` stops reading early, `validate` parses
every row but keeps none (`data.scan`), and `validate --quick` reads only the header, so a
multi-GB file never costs the memory of its text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from finetune.errors import (
    FILE_NOT_FOUND_FIX,
    DataFileError,
    DataFormatError,
)

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import TableRow

MAX_LINE_BYTES = 64 * 1024 * 1024  # longer "lines" are binary files or a missing newline
CSV_FIELD_LIMIT = MAX_LINE_BYTES
BOM = b"\xef\xbb\xbf"
LANG_PLACEHOLDER = "{lang}"  # aligned text files: data/train.{lang}


def open_binary(path: Path, shown: str) -> BinaryIO:
    """Open a regular file for reading; every way that can fail becomes a DataFileError."""
    if not path.exists():
        raise DataFileError(
            f"{shown}: file not found",
            fix=FILE_NOT_FOUND_FIX,
        )
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


def iter_lines(path: Path, shown: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text with its newline), streamed; bad UTF-8 names its line and column."""
    shown = shown or str(path)
    with open_binary(path, shown) as handle:
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


def read_text_file(path: Path) -> str:
    """Whole-file text, for formats that cannot be streamed (a single JSON document)."""
    return "".join(text for _, text in iter_lines(path))


class LineTracker:
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
Row = tuple[int, "TableRow | DataFormatError"]


def collect_rows(rows: Iterator[Row], limit: int | None) -> tuple[list[TableRow], list[int]]:
    """Rows and their lines up to `limit`; the first bad row is raised (as `run` needs)."""
    kept: list[TableRow] = []
    lines: list[int] = []
    for lineno, row in rows:
        if limit is not None and len(kept) >= limit:
            break
        if isinstance(row, DataFormatError):
            raise row
        kept.append(row)
        lines.append(lineno)
    return kept, lines
