"""How a csv/tsv file is laid out, for `finetune init`: a header line or none, and its quoting.

Data sets are often shipped as their authors wrote them, not as pandas would: GLUE's CoLA has no
header line, its MRPC header starts with a UTF-8 BOM (the readers drop it), and MRPC and STS-B
hold bare quotes inside unquoted text. `init` reads the file as it is:

- quoting: every record is parsed with RFC 4180 quoting; if any record fails (a stray quote) or
  the records disagree on their number of fields, and the file parses cleanly with every quote
  read as text, the recipe gets `quoting: none` and a comment naming the first line that needed
  it. A file that parses neither way stops `init` with the reader's error and the flag to pass.
- header: line 1 is compared with the rows below it, column by column. A name over a column of
  numbers (`label` over 0/1, `score` over 3.8) says header; a number over numbers, a value the
  column repeats, an empty field in a column with empty fields, or a sentence of four words or
  more says data. Votes one way only decide; none either way keep the header (the usual case);
  votes both ways stop `init` naming `--header` / `--no-header`.

A header-less file gets generic names (`column1`, ...) while guessing; the columns the task
reads are then renamed for their role (`text`, `text_pair`, `label`), so the recipe reads
`columns: [column1, label, column3, text]` with `task.text: text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.delimited import delimited_records
from finetune.data.readers import delimiter_for
from finetune.data.sources import LocalSource
from finetune.errors import ColumnGuessError, DataFormatError

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.guess import Sample, TaskGuess
    from finetune.types import JSON

SNIFF_RECORDS = 1_000_000  # records checked for the quoting choice (whole files, in practice)
HEADER_SAMPLE = 200  # rows below line 1 compared with it
ROLE_NAMES = ("text", "text_pair", "label", "summary")  # task keys renamed in a header-less file
GENERIC = "column{}"


@dataclass
class Layout:
    """The `data.*` options a csv/tsv file needs (defaults: a header line, RFC 4180 quotes)."""

    header: bool = True
    columns: list[str] | None = None
    quoting: str = "rfc4180"
    notes: dict[str, str] = field(default_factory=dict)  # option -> why (a recipe comment)

    def options(self) -> dict[str, JSON]:
        """The non-default options, in the order a recipe lists them."""
        found: dict[str, JSON] = {}
        if not self.header:
            found["header"] = False
        if self.columns is not None:
            found["columns"] = list(self.columns)
        if self.quoting != "rfc4180":
            found["quoting"] = self.quoting
        return found


def delimited(path: Path) -> str | None:
    """'csv' or 'tsv' for a delimited file by its extension, else None."""
    return {".csv": "csv", ".tsv": "tsv"}.get(path.suffix.lower())


# --------------------------------------------------------------------------- quoting


def first_problem(path: Path, delimiter: str, quoting: str) -> DataFormatError | None:
    """The first record that does not parse, or whose field count differs from line 1's."""
    width = None
    for count, (lineno, values) in enumerate(
        delimited_records(path, delimiter, quoting, str(path))
    ):
        if count >= SNIFF_RECORDS:
            return None
        if isinstance(values, DataFormatError):
            return values
        if not values or values == [""]:
            continue
        if width is None:
            width = len(values)
        elif len(values) != width:
            return DataFormatError(
                f"{path} line {lineno}: {len(values)} fields, line 1 has {width}",
                fix="check the delimiter and the quotes of that line",
            )
    return None


def sniff_quoting(path: Path, fmt: str) -> tuple[str, str]:
    """('rfc4180' or 'none', why), or the RFC 4180 error when neither reading is clean."""
    delimiter = delimiter_for(fmt)
    strict = first_problem(path, delimiter, "rfc4180")
    if strict is None:
        return "rfc4180", ""
    if first_problem(path, delimiter, "none") is not None:
        raise DataFormatError(
            strict.message,
            fix=f"{strict.fix}; if quotes in this file are text, pass --quoting none",
        )
    where = strict.message.removeprefix(f"{path} ")
    return "none", f"quotes are text here ({where})"


# --------------------------------------------------------------------------- header


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def header_votes(first: list[str], rest: list[list[str]]) -> tuple[int, int]:
    """(columns whose line 1 looks like a name, columns whose line 1 looks like data)."""
    header = data = 0
    for column, value in enumerate(first):
        below = [row[column] for row in rest if column < len(row)]
        filled = [v for v in below if v.strip()]
        value = value.strip()
        if filled and all(_number(v) is not None for v in filled):
            if _number(value) is None:
                header += 1  # a name (or an index's empty name) over numbers
            else:
                data += 1
        elif not value:
            data += len(filled) < len(below)  # empty here and in other rows: a field
        elif value in set(below) or len(value.split()) >= 4:
            data += 1  # a value the column repeats, or a sentence
    return header, data


def sniff_header(path: Path, fmt: str, quoting: str) -> tuple[bool, str]:
    """(whether line 1 is a header, why) from `header_votes`; ColumnGuessError if unclear."""
    records = delimited_records(path, delimiter_for(fmt), quoting, str(path))
    rows: list[list[str]] = []
    for _, values in records:
        if isinstance(values, DataFormatError) or len(rows) > HEADER_SAMPLE:
            break
        if values and values != [""]:
            rows.append(values)
    if len(rows) < 2:
        return True, ""
    header, data = header_votes(rows[0], rows[1:])
    if header and data:
        raise ColumnGuessError(
            f"{path}: cannot tell whether line 1 is a header or data ({header} of its fields "
            f"look like column names, {data} like values: {', '.join(rows[0])[:120]})",
            fix="pass --header (line 1 names the columns) or --no-header (every line is data)",
        )
    if data:
        return False, f"line 1 is data ({data} of {len(rows[0])} fields look like values)"
    return True, ""


def sniff_layout(path: Path, fmt: str, header: bool | None, quoting: str | None) -> Layout:
    """The file's layout; `header` / `quoting` given on the command line are taken as they are."""
    layout = Layout()
    if quoting is None:
        layout.quoting, why = sniff_quoting(path, fmt)
        if why:
            layout.notes["quoting"] = why
    else:
        layout.quoting = quoting
    if header is None:
        layout.header, why = sniff_header(path, fmt, layout.quoting)
        if why:
            layout.notes["header"] = why
    else:
        layout.header = header
    if not layout.header:
        first = next(
            (v for _, v in delimited_records(path, delimiter_for(fmt), layout.quoting, str(path))),
            [],
        )
        width = len(first) if isinstance(first, list) else 0
        layout.columns = [GENERIC.format(i) for i in range(1, width + 1)]
        layout.notes["columns"] = "fields of each line, in order: rename freely"
    return layout


def source_for(path: Path, layout: Layout) -> LocalSource:
    return LocalSource.model_validate({"path": str(path), **layout.options()})


# --------------------------------------------------------------------------- header-less files


def integer_label(sample: Sample) -> str | None:
    """The one column of a header-less file holding a few distinct integers (CoLA's 0/1)."""
    found = []
    for column in sample.columns:
        values = [str(row.get(column, "")).strip() for row in sample.rows]
        distinct = set(values)
        if "" in distinct or not all(v.lstrip("+-").isdigit() for v in distinct):
            continue
        if 2 <= len(distinct) <= max(2, min(100, len(values) // 2)):
            found.append(column)
    return found[0] if len(found) == 1 else None


def name_roles(layout: Layout, guess: TaskGuess) -> tuple[Layout, TaskGuess]:
    """A header-less file's generic names replaced by the roles the task gives them."""
    if layout.header or layout.columns is None:
        return layout, guess
    renamed = {
        value: role
        for role in ROLE_NAMES
        if isinstance(value := guess.keys.get(role), str) and value in layout.columns
    }
    taken = set(layout.columns) - set(renamed)
    renamed = {old: new for old, new in renamed.items() if new not in taken}
    columns = [renamed.get(c, c) for c in layout.columns]
    keys = {
        k: renamed.get(v, v) if isinstance(v, str) and k != "type" else v
        for k, v in guess.keys.items()
    }
    summary = guess.summary
    for old, new in renamed.items():
        summary = summary.replace(old, new)
    return replace(layout, columns=columns), replace(guess, keys=keys, summary=summary)


# --------------------------------------------------------------------------- reading


def read_laid_out(
    data_file: Path, header: bool | None, quoting: str | None
) -> tuple[Sample, Layout]:
    """The sample `init` guesses from, read with the layout the file needs (csv/tsv), or as
    `guess.read_sample` reads any other format."""
    from finetune.data.readers import read_local
    from finetune.recipe.guess import SAMPLE_ROWS, Sample, read_sample

    fmt = delimited(data_file)
    if fmt is None:
        if header is not None or quoting is not None:
            raise ColumnGuessError(
                f"{data_file}: --header / --no-header / --quoting apply to csv and tsv files",
                fix="leave them out for this file",
            )
        return read_sample(data_file), Layout()
    layout = sniff_layout(data_file, fmt, header, quoting)
    table = read_local(source_for(data_file, layout), None, SAMPLE_ROWS)
    columns = list(table.column_names())
    sample = Sample(data_file, str(data_file), columns, table.rows, len(table) >= SAMPLE_ROWS)
    return sample, layout
