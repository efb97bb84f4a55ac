"""The training split of a local CSV / TSV / JSON Lines file, read chunk by chunk.

Memory must grow gently with data (issue #12): holding a million rows as row dicts and then
as examples cost about 800 bytes a row before tokenisation even started. Here no row outlives
its chunk. The first pass normalises every row with the task's own checks and messages (so a
bad row is named exactly as before), keeps one example per distinct label for `Task.fit`,
hashes each row for the duplicate warning (8 bytes a row) and feeds the feature-cache digest.
The second pass, which runs only when the cache has no entry for this content, reads the file
again and tokenises each chunk into the feature store. What stays is the features.

Other sources (a Hub split, JSON arrays, parquet, aligned text) and `data.eval_fraction`
(which shuffles the whole split) are read whole, as before (`setup/data.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finetune.data.delimited import delimited_rows
from finetune.data.encoding import CHUNK_ROWS, examples_digest
from finetune.data.readers import (
    DUPLICATES_SHOWN,
    Table,
    delimiter_for,
    detect_format,
    no_rows,
    resolve_path,
    row_key,
    warn_duplicates,
)
from finetune.data.records import jsonl_rows
from finetune.data.sources import LocalSource
from finetune.errors import FILE_NOT_FOUND_FIX, DataError, DataFileError, DataFormatError
from finetune.tasks.base import Example, Task

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import TableRow

STREAMED_FORMATS = ("csv", "tsv", "jsonl")


@dataclass
class StreamedSplit:
    """A split read once (checked, hashed); `chunks` reads it again, chunk by chunk, and
    refuses any chunk that differs from what the first pass saw."""

    content: str  # examples_digest of the whole split: the feature cache's content key
    chunks: Callable[[], Iterator[list[Example]]]
    firsts: list[Example]  # one example per distinct label, in order: what `Task.fit` needs


def streamable(source: object, base_dir: Path | None, eval_fraction: float | None) -> bool:
    if not isinstance(source, LocalSource) or eval_fraction:
        return False
    path = resolve_path(source.path, base_dir)
    return detect_format(source, path) in STREAMED_FORMATS


def scan_train(
    task: Task, source: LocalSource, base_dir: Path | None, limit: int | None
) -> StreamedSplit:
    """Pass one over the train file: every row checked, duplicates warned; the caller fits the
    task on `firsts`."""
    seen: list[str] = []  # each chunk's digest: pass two must read exactly the same rows

    def chunks() -> Iterator[list[Example]]:
        count = 0
        for count, table in enumerate(row_chunks(source, base_dir, limit), start=1):
            examples = task.examples(table, "train")
            if count > len(seen) or examples_digest([examples]) != seen[count - 1]:
                raise _changed(source, table)
            yield examples
        if count != len(seen):
            raise _changed(source, None)

    digest = hashlib.sha256()
    firsts: dict[Hashable, Example] = {}  # one example per distinct label, in order of appearance
    hashes: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    for table in row_chunks(source, base_dir, limit):
        hashes.append(np.fromiter((_hash(row) for row in table.rows), np.uint64, len(table)))
        lines.append(np.asarray(table.lines, dtype=np.int64))
        examples = task.examples(table, "train")
        seen.append(examples_digest([examples], hashlib.sha256(), digest))
        for example in examples:
            firsts.setdefault(_label_key(example.target), example)
    _warn_duplicates(str(source.path), np.concatenate(hashes), np.concatenate(lines))
    return StreamedSplit(digest.hexdigest(), chunks, list(firsts.values()))


def _changed(source: LocalSource, table: Table | None) -> DataError:
    where = f"{source.path}" + (f" (from line {table.lines[0]})" if table and table.lines else "")
    return DataError(
        f"{where}: the file changed between the check of every row and tokenisation",
        fix="start the run again once the file is no longer being written",
    )


def row_chunks(source: LocalSource, base_dir: Path | None, limit: int | None) -> Iterator[Table]:
    """The file's rows, CHUNK_ROWS at a time, each chunk a `Table` that names its lines; the
    first unreadable row is raised, as `read_local` does."""
    path = resolve_path(source.path, base_dir)
    fmt = detect_format(source, path)
    if not path.exists():
        raise DataFileError(
            f"{source.path}: file not found",
            fix=FILE_NOT_FOUND_FIX,
        )
    shown = str(source.path)
    columns: list[str] | None = None
    if fmt == "jsonl":
        found, first_line = jsonl_rows(path, shown), 1
    else:
        columns, found = delimited_rows(
            path, delimiter_for(fmt), source.quoting, shown, source.columns, source.header
        )
        first_line = 2 if source.header else 1
    kept: list[TableRow] = []
    kept_lines: list[int] = []
    count = 0
    for lineno, row in found:
        if limit is not None and count >= limit:
            break
        if isinstance(row, DataFormatError):
            raise row
        if columns is None:  # JSON Lines: the first row names the columns, as in a whole read
            columns = list(row)
        kept.append(row)
        kept_lines.append(lineno)
        count += 1
        if len(kept) == CHUNK_ROWS:
            yield Table(kept, shown, first_line, columns, kept_lines)
            kept, kept_lines = [], []
    if kept:
        yield Table(kept, shown, first_line, columns, kept_lines)
    if not count:
        raise no_rows(source, fmt)


def _hash(row: TableRow) -> int:
    return int.from_bytes(hashlib.blake2b(row_key(row).encode(), digest_size=8).digest(), "little")


def _label_key(target: object) -> Hashable:
    """A classification target (kind, value) as is; a generation target (a list of reference
    texts) or a regression target (a number) fits nothing, so all of them share one key (a
    million distinct scores must not become a million kept examples)."""
    if isinstance(target, float):
        return None
    try:
        hash(target)
    except TypeError:
        return None
    return target


def _warn_duplicates(source: str, hashes: np.ndarray, lines: np.ndarray) -> None:
    """`report_duplicates` from 8-byte row hashes instead of every row's text."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    originals = first[inverse]
    repeats = np.flatnonzero(originals != np.arange(len(hashes)))
    shown = [
        (f"line {lines[i]}", f"line {lines[originals[i]]}") for i in repeats[:DUPLICATES_SHOWN]
    ]
    warn_duplicates(source, len(repeats), shown)
