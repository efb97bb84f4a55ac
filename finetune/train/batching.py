"""Batch samplers that keep padding low.

On SST-2, random batches of 32 are two thirds padding; grouping similar lengths (shuffled
mega-batches, sorted inside, batch order shuffled) trains about 2.7x faster at the same accuracy.
Order depends only on (seed, epoch), so every process of a distributed run computes the same
order and takes its own share of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from finetune.errors import FinetuneError

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import DataLoader, Dataset

    from finetune.recipe.sections import TrainConfig
    from finetune.types import Accelerator, Batch, Feature, Tensor

IGNORE_INDEX = -100  # label positions no loss is computed on (prompt, padding)


class TokenDataset(Protocol):
    """What the loaders read: rows as dicts of token lists, and every row's length (samplers).
    `finetune.data.features.Features` in runs; `ListDataset` for small in-memory sets."""

    lengths: Sequence[int]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Feature: ...


class ListDataset:
    """Pre-tokenised features held in memory as row dicts (predict, merge checks, tests)."""

    def __init__(self, features: list[Feature]) -> None:
        self.features = features
        self.lengths = [f["length"] for f in features]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> Feature:
        return self.features[index]


class LengthGroupedBatchSampler:
    """Training batches for one process: shuffled, length-grouped when asked, new order every
    epoch, sharded here rather than by Accelerate.

    Accelerate's `BatchSamplerShard(even_batches=True)` assumes only the last batch can be short
    and fills the last round with repeated examples; a short batch shuffled into the middle made
    it skip whole rounds. So the global order keeps full batches first and the remainder last,
    re-split into one batch per process (each at most one example over `batch_size`): process
    k trains on batches k, k + P, ... and every example is seen exactly once per epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        group_by_length: bool = True,
        mega_batch_factor: int = 50,
        num_processes: int = 1,
        process_index: int = 0,
    ) -> None:
        if len(lengths) < num_processes:
            raise FinetuneError(
                f"{len(lengths)} training rows cannot be shared by {num_processes} processes",
                fix="add training rows or start fewer processes",
            )
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group_by_length
        self.mega = mega_batch_factor
        self.num_processes = num_processes
        self.process_index = process_index
        # set by our loop only: the epoch whose order to yield, and how many of this process's
        # batches to skip (a resumed epoch)
        self.current_epoch = 0
        self.skip = 0

    def batches(self, epoch: int) -> list[list[int]]:
        """Every process's batches in order, a multiple of the process count long."""
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.group:
            size = self.batch_size * self.mega
            chunks = [order[i : i + size] for i in range(0, len(order), size)]
            order = [j for c in chunks for j in sorted(c, key=lambda k: -self.lengths[k])]
        n_full = len(order) // self.batch_size
        full = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(n_full)]
        if self.group:
            rng.shuffle(full)
        tail = order[n_full * self.batch_size :]
        kept, _ = self._split_point(n_full, len(tail))
        last = [j for b in full[kept:] for j in b] + tail
        return full[:kept] + self._last_round(last) if last else full

    def _split_point(self, n_full: int, n_tail: int) -> tuple[int, int]:
        """(full batches kept as they are, examples re-split into the last round)."""
        P = self.num_processes
        kept = n_full - n_full % P
        rest = (n_full % P) * self.batch_size + n_tail
        if 0 < rest < P:  # too few for one each: fold the previous full round in too
            kept -= P
            rest += P * self.batch_size
        return kept, rest

    def _last_round(self, rows: list[int]) -> list[list[int]]:
        """`rows` as one batch per process, sizes differing by at most one."""
        if self.group:
            rows = sorted(rows, key=lambda k: -self.lengths[k])
        P = self.num_processes
        sizes = [len(rows) // P + (1 if k < len(rows) % P else 0) for k in range(P)]
        out, start = [], 0
        for size in sizes:
            out.append(rows[start : start + size])
            start += size
        return out

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.batches(self.current_epoch)[self.process_index :: self.num_processes]
        yield from mine[self.skip :]

    def __len__(self) -> int:
        """Batches per process per epoch (the same on every process)."""
        n_full, n_tail = divmod(len(self.lengths), self.batch_size)
        kept, rest = self._split_point(n_full, n_tail)
        return (kept + (self.num_processes if rest else 0)) // self.num_processes


class SortedBatchSampler:
    """Evaluation batches: longest first, no shuffling (predictions are re-ordered by index)."""

    def __init__(self, lengths: Sequence[int], batch_size: int) -> None:
        order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
        self._batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches

    def __len__(self) -> int:
        return len(self._batches)


def label_tokens(labels: Tensor, causal: bool) -> Tensor:
    """Per-example count of the label tokens a model's loss averages over.

    Classification and regression: one per example (1-D class ids or float32 targets; the
    count is an integer either way). Seq2seq: labels that are not -100. Causal
    LMs predict token t+1 from token t, so their loss sees labels shifted by one. Training
    weights micro-batches and evaluation weights examples by these counts, so both losses are
    the same per-token mean.
    """
    if labels.dim() == 1:
        import torch

        return torch.ones(labels.shape, dtype=torch.long, device=labels.device)
    if causal:
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum(dim=1)


@dataclass
class TrainBatches:
    """The training batches of this process: the loader over the length-grouped, sharded
    sampler (the loop sets its epoch and the batches to skip), and whether labels are shifted
    by one in the loss (decoder-only LMs), which the loop needs to count label tokens."""

    loader: DataLoader[Feature]  # over features; it yields what `collate` makes: Batch
    sampler: LengthGroupedBatchSampler
    causal: bool

    def first(self, count: int) -> list[Batch]:
        """The first `count` batches of the first epoch as training will see them, without
        their row indices and without moving the sampler (data-driven inits read them)."""
        out: list[Batch] = []
        for batch in self.loader:
            batch.pop("idx", None)
            out.append(batch)
            if len(out) >= count:
                break
        return out


def train_batches(
    train_set: TokenDataset,
    collate: Callable[[list[Feature]], Batch],
    cfg: TrainConfig,
    accelerator: Accelerator,
    causal: bool,
) -> TrainBatches:
    """A loader Accelerate does not prepare: the sampler shards itself (every example once per
    epoch), and the loader draws from a generator of its own (train/rng.py)."""
    from torch.utils.data import DataLoader

    from finetune.train.rng import private_generator

    sampler = LengthGroupedBatchSampler(
        train_set.lengths,
        cfg.batch_size,
        cfg.seed,
        cfg.group_by_length,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
    )
    loader = DataLoader(
        cast("Dataset[Feature]", train_set),  # a map-style dataset; ours stay torch-free
        batch_sampler=sampler,
        collate_fn=collate,
        generator=private_generator(cfg.seed),
        pin_memory=getattr(accelerator.device, "type", "cpu") == "cuda",
    )
    return TrainBatches(loader, sampler, causal)
