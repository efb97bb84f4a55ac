"""CUDA graphs for the training step, with length buckets (gpu_check's throughput check).

`torch.compile(mode="reduce-overhead")` records each step's kernels once as a CUDA graph and
replays it, so the host no longer launches a few thousand kernels per step: what small models
on a fast GPU wait on. A graph holds one shape, so each batch is padded up to the next of a few
bucket lengths (16/32/48/64 tokens): four graphs serve every batch instead of one per length.

A bare loop (bert-base + peft LoRA r8 on query/value, AdamW, bf16 autocast, batches of rows of
similar length as group_by_length makes them), run eager and with CUDA graphs on the same
batches: finetune's own loop has no hook for the compile mode (`train.compile` compiles its
blocks with dynamic shapes), and this measures what the mode would give it. GPU only.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any

BUCKETS = (16, 32, 48, 64)


def bucket(length: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket that holds `length` (the largest when none does: truncated)."""
    return next((b for b in buckets if b >= length), buckets[-1])


def bucketed_batches(
    ids: list[list[int]], labels: list[int], size: int, pad_id: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows grouped by length (sorted within chunks of 50 batches, batch order shuffled), each
    batch right-padded to its bucket: input_ids, attention_mask, labels."""
    import torch

    rng = random.Random(seed)
    order = list(range(len(ids)))
    rng.shuffle(order)
    chunk = 50 * size
    order = [i for s in range(0, len(order), chunk)
             for i in sorted(order[s : s + chunk], key=lambda i: len(ids[i]))]  # fmt: skip
    groups = [order[s : s + size] for s in range(0, len(order) - size + 1, size)]
    rng.shuffle(groups)
    found = []
    for group in groups:
        width = bucket(max(len(ids[i]) for i in group))
        rows = [ids[i][:width] for i in group]
        found.append({
            "input_ids": torch.tensor([r + [pad_id] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor([labels[i] for i in group]),
        })  # fmt: skip
    return found


def samples_per_s(
    model_dir: Path, rows_csv: Path, steps: int, graphs: bool, device: str = "cuda"
) -> tuple[float, int]:
    """Training samples/s of the bare loop, eager or with CUDA graphs, and how many compiled
    graphs inductor ran without a CUDA graph (its `cudagraph_skips`: 0 when every graph was
    recorded). Every bucket's graph is compiled and recorded in untimed warm-up steps first
    (three calls each: cudagraph trees run a first call eagerly, record the second and replay
    from then on). `device="cpu"` runs the eager loop only (the tests)."""
    import torch
    from torch._dynamo.utils import counters
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(rows_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = tokenizer([r["text"] for r in rows], truncation=True, max_length=BUCKETS[-1])
    labels = [int(r["label"]) for r in rows]
    batches = bucketed_batches(ids["input_ids"], labels, 32, tokenizer.pad_token_id or 0)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    model = _lora_classifier(model_dir, device)
    cuda = device.startswith("cuda")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                  fused=cuda)  # fmt: skip

    def loss_of(batch: dict[str, Any]) -> Any:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            return model(**batch).loss

    step_loss = torch.compile(loss_of, mode="reduce-overhead", dynamic=False) if graphs else loss_of

    def step(batch: dict[str, Any]) -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        step_loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    skips = counters["inductor"]["cudagraph_skips"]
    for batch in list({b["input_ids"].shape[1]: b for b in batches}.values()) * 3:
        step(batch)  # warm-up: compile and record every bucket's graph
    _sync(cuda)
    began = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    _sync(cuda)
    seconds = time.perf_counter() - began
    return steps * 32 / seconds, counters["inductor"]["cudagraph_skips"] - skips


def _lora_classifier(model_dir: Path, device: str) -> Any:
    """The checkpoint as a 2-label classifier with LoRA r8 on query/value, as the Trainer's."""
    import peft
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model.config.problem_type = "single_label_classification"  # not decided inside the graph
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.05,
                           target_modules=["query", "value"])  # fmt: skip
    return peft.get_peft_model(model, lora).to(device).train()


def _sync(cuda: bool) -> None:
    import torch

    if cuda:
        torch.cuda.synchronize()
