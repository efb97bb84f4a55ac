"""Reading examples: local csv/tsv/jsonl/json/parquet/aligned-text files or Hub datasets.

Everything comes back as a `Table`: a list of row dicts plus enough provenance (file, line) to
name the exact row in an error. Column checks and row checks live in the task modules; this
module only knows file formats.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import DataError
from finetune.recipe import HubSource, LocalSource

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
    first_line: int = 2  # line number of rows[0] in the file (1-based; csv header is line 1)
    columns: list[str] | None = None

    def where(self, index: int) -> str:
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
        raise DataError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}",
            fix="use .csv/.tsv/.jsonl/.json/.parquet, or set format: in the data source",
        )
    return fmt


# --------------------------------------------------------------------------- readers


def _open_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found", fix="check the path in data:") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory", fix="name a data file") from None
    except OSError as exc:
        raise DataError(
            f"{path}: cannot be read ({exc.strerror})", fix="check permissions"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: bytes that are not UTF-8 (offset {exc.start})",
            fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


def _iter_delimited(path: Path, delimiter: str, limit: int | None) -> tuple[list[str], list[dict]]:
    text = _open_text(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty", fix="add a header line and rows")
    header = [h.strip() for h in header]
    rows: list[dict[str, Any]] = []
    for lineno, values in enumerate(reader, start=2):
        if not values or values == [""]:
            continue
        if len(values) != len(header):
            raise DataError(
                f"{path} line {lineno}: {len(values)} fields, header has {len(header)}",
                fix=_delimiter_fix(path, delimiter),
            )
        rows.append(dict(zip(header, values)))
        if limit is not None and len(rows) >= limit:
            break
    return header, rows


def _delimiter_fix(path: Path, delimiter: str) -> str:
    other = "tab" if delimiter == "," else "comma"
    return (
        f"check the delimiter (this file is read as {'tab' if delimiter != ',' else 'comma'}-"
        f"separated; is it {other}-separated?) and quote fields that contain it"
    )


def _iter_jsonl(path: Path, limit: int | None) -> list[dict]:
    rows: list[dict[str, Any]] = []
    text = _open_text(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} line {lineno}: invalid JSON ({exc.msg})",
                fix="each line must be one JSON object",
            ) from None
        if not isinstance(value, dict):
            raise DataError(f"{path} line {lineno}: not a JSON object", fix='write {"col": ...}')
        rows.append(value)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def _read_json(path: Path, limit: int | None) -> list[dict]:
    try:
        value = json.loads(_open_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} line {exc.lineno}: invalid JSON ({exc.msg})", fix="fix it"
        ) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DataError(f"{path}: expected a list of objects", fix="or use .jsonl, one per line")
    return value[:limit] if limit else value


def _read_parquet(path: Path, limit: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(
            f"{path}: not a readable parquet file ({exc})", fix="check the file"
        ) from None
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _read_aligned_text(path: Path, langs: list[str], limit: int | None) -> list[dict]:
    """train.{lang} -> rows {en: ..., de: ...} from line-aligned files."""
    columns: dict[str, list[str]] = {}
    for lang in langs:
        file = Path(str(path).replace(LANG_PLACEHOLDER, lang))
        lines = _open_text(file).splitlines()
        columns[lang] = lines[:limit] if limit else lines
    counts = {lang: len(v) for lang, v in columns.items()}
    if len(set(counts.values())) > 1 and limit is None:
        detail = ", ".join(
            f"{str(path).replace(LANG_PLACEHOLDER, k)}: {n}" for k, n in counts.items()
        )
        raise DataError(
            f"aligned files have different line counts ({detail})",
            fix="each line must be the translation of the same line in the other file",
        )
    n = min(counts.values())
    return [{lang: columns[lang][i] for lang in langs} for i in range(n)]


def read_local(
    source: LocalSource,
    base_dir: Path | None,
    limit: int | None = None,
    langs: list[str] | None = None,
) -> Table:
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    if fmt != "text" and not path.exists():
        raise DataError(f"{source.path}: file not found", fix="check the path in data:")
    columns = None
    first_line = 1
    if fmt in ("csv", "tsv"):
        columns, rows = _iter_delimited(path, "," if fmt == "csv" else "\t", limit)
        first_line = 2
    elif fmt == "jsonl":
        rows = _iter_jsonl(path, limit)
    elif fmt == "json":
        rows = _read_json(path, limit)
    elif fmt == "parquet":
        rows = _read_parquet(path, limit)
    else:
        if LANG_PLACEHOLDER not in str(path):
            raise DataError(
                f"{source.path}: plain text needs a {LANG_PLACEHOLDER} placeholder",
                fix="write e.g. data/train.{lang} for train.en + train.de",
            )
        rows = _read_aligned_text(path, langs or [], limit)
    table = Table(rows=rows, source=str(source.path), first_line=first_line, columns=columns)
    if not rows:
        what = "has a header but no rows" if columns else "has no rows"
        raise DataError(f"{source.path}: {what}", fix="add examples to the file")
    return table


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
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            fix="check the id/config/split, your network (HF_HUB_OFFLINE), or use a local file",
        ) from None
    rows = ds.to_list()
    label = f"hub:{source.hub}:{source.split}"
    if not rows:
        raise DataError(f"{label}: split has no rows", fix="pick another split")
    return Table(rows=rows, source=label, first_line=0)


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
    """Column names from the first row only: cheap enough for `validate` on huge files."""
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    if fmt == "text":
        return list(langs)
    if fmt in ("csv", "tsv"):
        first = next(_head_lines(path, 1), "")
        delimiter = "," if fmt == "csv" else "\t"
        return [h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])]
    if fmt == "jsonl":
        for line in _head_lines(path, 50):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    return []
                return list(value) if isinstance(value, dict) else []
        return []
    table = read_local(source, base_dir, limit=1, langs=langs)
    return table.column_names()


def _head_lines(path: Path, n: int) -> Iterator[str]:
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        for _ in range(n):
            line = handle.readline()
            if not line:
                return
            yield line.rstrip("\r\n")
