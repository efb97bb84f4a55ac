"""Evaluation over a whole split, on one process or many.

Each process evaluates its shard of length-sorted batches and keeps (example index, loss, label
tokens, prediction). The loss is the per-token mean over the split: each example's mean token
loss weighted by its label tokens, the definition the training loss uses (classification: one
token per example, so the plain mean). One `gather_object` at the end collects them and
duplicates are dropped by index: Accelerate pads the last shards with repeated examples, and
`gather_for_metrics` can only trim those when every batch has the same size, which
length-sorted batches do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, cast

from finetune.train.batching import SortedBatchSampler, TokenDataset, label_tokens

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import Dataset

    from finetune.tasks.base import Example, Task
    from finetune.types import Accelerator, Batch, JSONObject, Model

# evaluation batches as `task.collate` makes them: inputs, labels, prompts and `idx`
EvalBatches = Iterable["Batch"]


def make_eval_loader(
    dataset: TokenDataset, task: Task, batch_size: int, accelerator: Accelerator
) -> EvalBatches:
    import torch
    from torch.utils.data import DataLoader

    sampler = SortedBatchSampler(dataset.lengths, batch_size)
    loader: DataLoader[object] = DataLoader(
        cast("Dataset[object]", dataset),  # a map-style dataset; ours stay torch-free
        batch_sampler=sampler,
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(0),
    )
    return accelerator.prepare_data_loader(loader, device_placement=True)


def run_eval(
    model: Model,
    task: Task,
    loader: EvalBatches,
    examples: list[Example],
    accelerator: Accelerator,
    predict: bool = True,
    progress: Callable[[int], object] | None = None,
) -> tuple[JSONObject, list[object] | None]:
    """Metrics (and predictions in example order) over every example exactly once."""
    import torch
    from accelerate.utils import gather_object

    was_training = model.training
    model.eval()
    causal = task.model_kind() == "causal"
    # (example index, its mean loss, its label tokens, its prediction)
    local: list[tuple[int, float | None, int, object]] = []
    # the loss pass, the shared encoder pass and generate all run under the training autocast
    with torch.inference_mode(), accelerator.autocast():
        for batch in loader:
            idx = batch["idx"].tolist()
            losses, preds = task.eval_batch(model, batch, predict)
            tokens = label_tokens(batch["labels"], causal).tolist() if "labels" in batch else None
            for j, i in enumerate(idx):
                loss = losses[j] if losses is not None else None
                weight = tokens[j] if tokens is not None else 1
                local.append((i, loss, weight, preds[j] if preds is not None else None))
            if progress is not None:
                progress(len(idx) * accelerator.num_processes)
    gathered = gather_object(local) if accelerator.num_processes > 1 else local
    if was_training:
        model.train()
    by_index: dict[int, tuple[float | None, int, object]] = {}
    for i, loss, weight, pred in gathered:
        by_index.setdefault(i, (loss, weight, pred))
    missing = len(examples) - len(by_index)
    if missing:
        raise RuntimeError(f"evaluation saw {len(by_index)} of {len(examples)} examples")
    metrics: JSONObject = {}
    rows = [by_index[i] for i in range(len(examples))]
    weighted = [(loss, weight) for loss, weight, _ in rows if loss is not None]
    if rows and len(weighted) == len(rows):
        metrics["loss"] = token_weighted_loss(weighted)
    predictions = None
    if predict:
        predictions = [by_index[i][2] for i in range(len(examples))]
        metrics.update(task.metrics(predictions, examples))
        if task.settings.extra_metrics:
            from finetune.tasks.extra_metrics import extra_metrics

            metrics.update(extra_metrics(task, predictions, examples, set(metrics)))
    metrics["samples"] = len(examples)
    return metrics, predictions


def token_weighted_loss(rows: Sequence[tuple[float, int]]) -> float | None:
    """Sum of (example mean loss x its label tokens) over all label tokens; None when NaN
    (reported as null, not as a number)."""
    tokens = sum(weight for _, weight in rows)
    value = float(sum(loss * weight for loss, weight in rows) / max(tokens, 1))
    return None if math.isnan(value) else value
