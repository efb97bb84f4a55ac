"""csv and tsv: RFC 4180 quoting checked record by record, errors named by line."""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from finetune.data.lines import (
    CSV_FIELD_LIMIT,
    LineTracker,
    Record,
    Row,
    collect_rows,
    iter_lines,
)
from finetune.errors import (
    DataFormatError,
)


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


def delimited_records(path: Path, delimiter: str, quoting: str, shown: str) -> Iterator[Record]:
    """(first line of record, fields or error) for each csv/tsv record.

    rfc4180: quoted fields as pandas/Excel write them; every quote in a record is checked, so
    none turns into text or disappears unnoticed. none: quotes are ordinary characters.
    Unreadable files, bad UTF-8 and binary data raise: no later record can be trusted.
    """
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    mode: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    tracker = LineTracker(iter_lines(path, shown))
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
    return check_header(first[1], delimiter, shown)


def check_header(header: list[str], delimiter: str, shown: str) -> list[str]:
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


def field_names(
    records: Iterator[Record],
    delimiter: str,
    shown: str,
    columns: list[str] | None = None,
    header: bool = True,
) -> list[str]:
    """What each record's fields are called: line 1 (the header), or the source's `columns`,
    in place of the header line or for a file without one (`header: false`)."""
    if not header:
        return list(columns or [])
    names = _header(records, delimiter, shown)
    if columns is not None and len(columns) != len(names):
        raise DataFormatError(
            f"{shown} line 1: the header has {len(names)} fields and columns: names "
            f"{len(columns)} ({', '.join(columns)})",
            fix="name every field of the header line in columns:, in order",
        )
    return list(columns) if columns is not None else names


def delimited_rows(
    path: Path,
    delimiter: str,
    quoting: str,
    shown: str,
    columns: list[str] | None = None,
    header: bool = True,
) -> tuple[list[str], Iterator[Row]]:
    """The column names, and (line, row or error) for every data record; blank lines skipped.

    `header`: line 1 names the columns (a UTF-8 BOM before it is dropped when lines are read);
    false: every line is data. `columns`: the names to use instead (required without a header).
    """
    records = delimited_records(path, delimiter, quoting, shown)
    names = field_names(records, delimiter, shown, columns, header)
    given = columns is not None

    def rows() -> Iterator[Row]:
        for lineno, values in records:
            if isinstance(values, DataFormatError):
                yield lineno, values
            elif not values or values == [""]:
                continue
            elif len(values) != len(names):
                yield lineno, _field_count_error(shown, lineno, values, names, delimiter, given)
            else:
                yield lineno, dict(zip(names, values))

    return names, rows()


def read_delimited(
    path: Path,
    delimiter: str,
    quoting: str,
    limit: int | None,
    shown: str | None = None,
    columns: list[str] | None = None,
    header: bool = True,
) -> tuple[list[str], list[dict], list[int]]:
    """Column names, rows and each row's line number; stops after `limit` rows."""
    names, rows = delimited_rows(path, delimiter, quoting, shown or str(path), columns, header)
    return (names, *collect_rows(rows, limit))


def _field_count_error(
    shown: str,
    lineno: int,
    values: list[str],
    names: list[str],
    delimiter: str,
    given: bool = False,
) -> DataFormatError:
    """Wrong field count: an unclosed quote (the field swallowed line breaks), a delimiter, or
    a `columns:` list that does not fit the file."""
    if any("\n" in v for v in values):
        return DataFormatError(
            f"{shown} line {lineno}: a quoted field opened here runs over "
            f"{max(v.count(chr(10)) for v in values) + 1} lines (an unclosed quote?)",
            fix='close the quote, or double a quote inside a quoted field ("")',
        )
    if given:
        return DataFormatError(
            f"{shown} line {lineno}: {len(values)} fields, but columns: names {len(names)} "
            f"({', '.join(names)})",
            fix="name every field of a line in columns:, in order; "
            + _delimiter_fix(delimiter).replace("check", "and check", 1),
        )
    return DataFormatError(
        f"{shown} line {lineno}: {len(values)} fields, header has {len(names)}",
        fix=_delimiter_fix(delimiter),
    )


def _delimiter_fix(delimiter: str) -> str:
    this, other = ("comma", "tab") if delimiter == "," else ("tab", "comma")
    return (
        f"check the delimiter (this file is read as {this}-separated; is it {other}-separated?) "
        "and quote fields that contain it"
    )
