"""Tokenised features of one split, held as flat numpy columns instead of Python objects.

A list of per-row dicts of Python int lists costs about 1 KB per short row (dict, list and int
objects); a million rows would hold a gigabyte before training starts. Here every token column
is one concatenated array plus row offsets (2-4 bytes a token), every scalar column one array,
so a million 25-token rows take about 60 MB and can be saved and memory-mapped as they are
(the feature cache). Rows come back as the dicts of lists that tasks' `collate` expects, one
batch at a time.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Feature, JSONObject

FORMAT = 1
_META = "features.json"


class Features:
    """Token columns (`input_ids`, `labels` of generation tasks, ...) as values + offsets;
    scalar columns (`idx`, `length`, class ids or float32 regression `labels`) as arrays.
    A row may lack a column (an unlabelled row of a causal eval split): `present` says which
    rows have it."""

    def __init__(
        self,
        count: int,
        tokens: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
        scalars: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.count = count
        self.tokens = tokens  # name -> (values, offsets[count + 1], present[count])
        self.scalars = scalars  # name -> (values[count], present[count])
        self.lengths = scalars["length"][0].tolist() if "length" in scalars else [0] * count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Feature:
        row: dict[str, list[int] | int | float] = {}
        for name, (values, offsets, present) in self.tokens.items():
            if present[index]:
                row[name] = values[offsets[index] : offsets[index + 1]].tolist()
        for name, (values, present) in self.scalars.items():
            if present[index]:
                row[name] = values[index].item()
        return cast("Feature", row)  # the columns tasks' `encode` made

    # ------------------------------------------------------------------ building

    @classmethod
    def from_rows(cls, rows: list[Feature]) -> Features:
        return cls.concat([rows])

    @classmethod
    def concat(cls, chunks: Iterable[list[Feature]]) -> Features:
        """One store from chunks of row dicts, in order; each chunk is dropped once packed."""
        builder = _Builder()
        for rows in chunks:
            builder.add(rows)
            del rows
            _return_freed_memory()
        return builder.build()

    # ------------------------------------------------------------------ disk

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        token_names: list[str] = []
        scalar_names: list[str] = []
        meta: JSONObject = {
            "format": FORMAT,
            "count": self.count,
            "tokens": token_names,
            "scalars": scalar_names,
        }
        for name, (values, offsets, present) in self.tokens.items():
            np.save(directory / f"{name}.values.npy", values)
            np.save(directory / f"{name}.offsets.npy", offsets)
            np.save(directory / f"{name}.present.npy", present)
            token_names.append(name)
        for name, (values, present) in self.scalars.items():
            np.save(directory / f"{name}.npy", values)
            np.save(directory / f"{name}.present.npy", present)
            scalar_names.append(name)
        (directory / _META).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Features:
        """Memory-mapped: the token arrays stay on disk until a batch reads them."""
        meta = json.loads((directory / _META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: feature format {meta.get('format')}, need {FORMAT}")

        def arr(name: str) -> np.ndarray:
            return np.load(directory / name, mmap_mode="r")

        tokens = {
            n: (arr(f"{n}.values.npy"), arr(f"{n}.offsets.npy"), arr(f"{n}.present.npy"))
            for n in meta["tokens"]
        }
        scalars = {n: (arr(f"{n}.npy"), arr(f"{n}.present.npy")) for n in meta["scalars"]}
        return cls(int(meta["count"]), tokens, scalars)


class _Builder:
    """Packs chunks of row dicts column by column, so only one chunk is ever held as objects."""

    def __init__(self) -> None:
        self.count = 0
        self.token_parts: dict[str, list[tuple[np.ndarray, ...]]] = {}
        self.scalar_parts: dict[str, list[tuple[np.ndarray, ...]]] = {}

    def add(self, rows: Sequence[Mapping[str, object]]) -> None:
        n = len(rows)
        for name in sorted({k for row in rows for k in row}):
            sample = next(row[name] for row in rows if name in row)
            present = np.fromiter((name in row for row in rows), dtype=bool, count=n)
            if isinstance(sample, list | tuple | np.ndarray):
                self._absent_before(name, self.token_parts, token=True)
                seqs = [cast("Sequence[int]", row.get(name, [])) for row in rows]
                lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
                flat = itertools.chain.from_iterable(seqs)
                values = np.fromiter(flat, np.int64, int(lengths.sum()))
                values = values.astype(_token_dtype(values))  # 2 bytes a token, not 8, while
                lengths = lengths.astype(np.int32)  # chunks pile up
                self.token_parts[name].append((values, lengths, present))
            elif isinstance(sample, float):  # regression targets: float32, as the loss reads
                self._absent_before(name, self.scalar_parts, token=False)
                values = np.fromiter((row.get(name, 0.0) for row in rows), np.float32, n)
                self.scalar_parts[name].append((values, present))
            else:
                self._absent_before(name, self.scalar_parts, token=False)
                values = np.fromiter((row.get(name, 0) for row in rows), np.int64, n)
                self.scalar_parts[name].append((values.astype(_token_dtype(values)), present))
        self.count += n
        for parts in (*self.token_parts.values(), *self.scalar_parts.values()):
            missing = self.count - sum(len(p[-1]) for p in parts)
            if missing:  # a column no row of this chunk has
                parts.append(_absent(missing, token=len(parts[0]) == 3))

    def _absent_before(self, name: str, columns: dict[str, list], token: bool) -> None:
        """A column first seen after earlier chunks: their rows lack it."""
        if name not in columns:
            columns[name] = [_absent(self.count, token)] if self.count else []

    def build(self) -> Features:
        """Copies each chunk into arrays of the final size and drops it: the peak is the store
        plus one chunk, not twice the store."""
        tokens = {}
        for name in list(self.token_parts):
            parts = self.token_parts.pop(name)
            kind = np.result_type(*[p[0].dtype for p in parts])  # the widest chunk's type
            values = np.empty(sum(len(p[0]) for p in parts), dtype=kind)
            offsets = np.zeros(self.count + 1, dtype=np.int64)
            present = np.empty(self.count, dtype=bool)
            at, row = 0, 0
            while parts:
                chunk, lengths, here = parts.pop(0)
                values[at : at + len(chunk)] = chunk
                np.cumsum(lengths, out=offsets[row + 1 : row + 1 + len(lengths)])
                offsets[row + 1 : row + 1 + len(lengths)] += at
                present[row : row + len(here)] = here
                at, row = at + len(chunk), row + len(here)
            tokens[name] = (values, offsets, present)
        scalars = {}
        for name in list(self.scalar_parts):
            parts = self.scalar_parts.pop(name)
            floats = any(p[0].dtype.kind == "f" for p in parts)
            values = _joined(parts, 0)
            kind = np.dtype(np.float32) if floats else _token_dtype(values)
            scalars[name] = (values.astype(kind, copy=False), _joined(parts, 1))
        return Features(self.count, tokens, scalars)


def _joined(parts: list[tuple[np.ndarray, ...]], column: int) -> np.ndarray:
    return np.concatenate([p[column] for p in parts])


def _absent(count: int, token: bool) -> tuple[np.ndarray, ...]:
    zeros, nobody = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=bool)
    return (np.zeros(0, dtype=np.uint16), zeros, nobody) if token else (zeros, nobody)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _return_freed_memory() -> None:
    """Hand a packed chunk's freed memory back to the OS. Each chunk's Python objects and
    tokenizer output (tens of MB) are freed once it is packed, but glibc keeps freed heap
    memory, and the packed arrays that outlive each chunk pin it: a million-row split held
    about 40 MB of it (peak 207 MB above the model; with this call, 166-169 MB)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _token_dtype(values: np.ndarray) -> np.dtype:
    """The narrowest integer type that holds every id (uint16 for vocabularies under 65,536;
    signed when labels carry the -100 ignore index)."""
    if not len(values):  # an empty chunk must not widen the others when they are joined
        return np.dtype(np.uint16)
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    return np.dtype(np.int64)
