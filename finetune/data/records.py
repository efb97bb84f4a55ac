"""jsonl, json, parquet and aligned plain-text files, as rows named by line or row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.lines import (
    LANG_PLACEHOLDER,
    Row,
    collect_rows,
    iter_lines,
    open_binary,
    read_text_file,
)
from finetune.errors import (
    AlignmentError,
    DataFormatError,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyarrow.parquet import ParquetFile

    from finetune.types import TableRow


def jsonl_rows(path: Path, shown: str) -> Iterator[Row]:
    """(line, object or error) for every non-blank line of a JSON Lines file."""
    for lineno, line in iter_lines(path, shown):
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


def read_jsonl(path: Path, limit: int | None, shown: str | None = None) -> tuple[list, list]:
    """Rows and their line numbers from JSON Lines; stops after `limit` rows."""
    return collect_rows(jsonl_rows(path, shown or str(path)), limit)


def read_json(path: Path, limit: int | None, shown: str | None = None) -> list[TableRow]:
    shown = shown or str(path)
    try:
        value = json.loads(read_text_file(path))
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


def parquet_file(path: Path, shown: str) -> ParquetFile:
    import pyarrow.parquet as pq

    open_binary(path, shown).close()
    try:
        return pq.ParquetFile(path)
    except Exception as exc:
        raise DataFormatError(
            f"{shown}: not a readable parquet file ({exc})", fix="check the file"
        ) from None


def read_parquet(path: Path, limit: int | None, shown: str | None = None) -> list[TableRow]:
    """Row groups are read one batch at a time, so a limit never loads the whole file."""
    shown = shown or str(path)
    rows: list[TableRow] = []
    for batch in parquet_file(path, shown).iter_batches(batch_size=limit or 65536):
        rows.extend(batch.to_pylist())
        if limit is not None and len(rows) >= limit:
            return rows[:limit]
    return rows


def aligned_rows(path: Path, langs: list[str]) -> Iterator[TableRow]:
    """train.{lang} -> rows {en: ..., de: ...} from line-aligned files, read in lockstep."""
    files = {lang: str(path).replace(LANG_PLACEHOLDER, lang) for lang in langs}
    streams = {lang: iter_lines(Path(name)) for lang, name in files.items()}
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


def read_aligned_text(path: Path, langs: list[str], limit: int | None) -> list[TableRow]:
    rows: list[TableRow] = []
    for row in aligned_rows(path, langs):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(row)
    return rows
