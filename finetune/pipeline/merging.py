"""Folding an adapter into its base model, checked, not trusted.

The merged model must give the same outputs as the adapter model on real eval inputs, or nothing
is written. "The same" is relative + absolute, like `torch.isclose`: every logit may differ by
`tolerance + RELATIVE_TOLERANCE * scale`, where `scale` is the largest |logit| at that position.
Float noise grows with the size of the logits (a big model's ~100 carry noise far above 1e-4),
a wrong merge does not hide in it. The result is a plain transformers model (`from_pretrained`
needs neither peft nor finetune) with its tokenizer and model card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.methods import mergeable_names
from finetune.run.card import render_model_card
from finetune.run.files import atomic_dir
from finetune.run.layout import CARD, RunPaths
from finetune.run.snippets import CardKind
from finetune.setup.data import saved_split

if TYPE_CHECKING:  # pragma: no cover
    from finetune.setup.run_setup import RunSetup
    from finetune.tasks import Example, Task
    from finetune.types import Batch, Model, Tensor

log = logging.getLogger(__name__)

PARITY_EXAMPLES = 16
RELATIVE_TOLERANCE = 1e-3


@dataclass
class MergeResult:
    out: Path
    max_abs_diff: float
    examples: int
    max_rel_diff: float = 0.0


@dataclass
class Parity:
    """How far the merged logits are from the adapter model's, and whether that is noise."""

    max_abs_diff: float
    max_rel_diff: float  # |diff| / largest |logit| at that position
    ok: bool


def parity(
    before: Tensor, after: Tensor, tolerance: float, rtol: float = RELATIVE_TOLERANCE
) -> Parity:
    """Compare logits (float32, same shape) with an absolute + relative tolerance."""
    import torch

    diff = (before - after).abs()
    scale = before.abs().amax(dim=-1, keepdim=True)
    allowed = tolerance + rtol * scale
    rel = diff / scale.clamp_min(torch.finfo(diff.dtype).tiny)
    return Parity(
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(rel.max()),
        ok=bool((diff <= allowed).all()),
    )


def parity_batch(setup: RunSetup) -> Batch:
    """A batch of real inputs (with targets, so generation models return logits too): tensors,
    and the number of positions a causal model computes logits for (`logits_to_keep`)."""
    try:
        examples = saved_split(setup.task, setup.recipe, "eval", None)[:PARITY_EXAMPLES]
    except FinetuneError:
        examples = []
    if not examples:
        examples = made_up_examples(setup.task)
    features = setup.task.encode(examples, training=examples[0].target is not None)
    batch = setup.task.collate(features)
    batch.pop("idx", None)
    return batch


FALLBACK_TEXTS = ("a short test input", "another one")


def made_up_examples(task: Task) -> list[Example]:
    """Inputs for a run without eval data. A generation model computes logits only for a
    target (T5 needs decoder inputs, GPT-2 the target tokens after the prompt), so these get
    one; a classifier's logits need none. A pair task gets pairs (its inputs are refused
    without the second text)."""
    pair = getattr(task.cfg, "text_pair", None)
    texts = [f"{text}\t{text}" if pair else text for text in FALLBACK_TEXTS]
    examples = task.examples_from_texts(texts)
    if task.is_generation:
        examples = [replace(ex, target=[ex.source]) for ex in examples]
    return examples


def _logits(model: Model, batch: Batch) -> Tensor:
    import torch

    with torch.inference_mode():
        return model(**batch).logits.float()


def merge(setup: RunSetup, out: Path, tolerance: float, card_ref: str) -> MergeResult:
    """Fold the run's method into its base and save it to `out`, if the outputs agree."""
    method = setup.method
    if not method.mergeable:
        raise FinetuneError(
            f"method {method.name} cannot be merged into the base weights (it adds modules "
            "or virtual tokens that have no place in the base architecture)",
            fix="use the run directly with `finetune predict`, or train a mergeable method "
            f"({', '.join(mergeable_names())})",
        )
    refusal = method.merge_refusal(setup.recipe.method)
    if refusal:
        raise FinetuneError(
            f"{setup.run_dir}: {refusal}", fix="use the run itself with `eval` or `predict`"
        )
    batch = parity_batch(setup)
    before = _logits(setup.model, batch)
    merged = method.merge(setup.model)
    after = _logits(merged, batch)
    check = parity(before, after, tolerance)
    if not check.ok:
        raise FinetuneError(
            f"merged model outputs differ from the adapter model by {check.max_abs_diff:.2e} "
            f"({check.max_rel_diff:.2e} of the largest |logit|; allowed: {tolerance:.0e} + "
            f"{RELATIVE_TOLERANCE:.0e} x the largest |logit| at each position); nothing was "
            "written",
            fix="use the adapter directly, or raise --tolerance if the difference is expected",
        )
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        setup.task.tokenizer.save_pretrained(tmp)
        write_card(setup, tmp / CARD, "merged", card_ref)
    log.info(
        "merged %s into %s (max |diff| %.2e, relative %.2e, on %d inputs)",
        method.name,
        out,
        check.max_abs_diff,
        check.max_rel_diff,
        before.shape[0],
    )
    return MergeResult(
        out=out,
        max_abs_diff=check.max_abs_diff,
        examples=int(before.shape[0]),
        max_rel_diff=check.max_rel_diff,
    )


def write_card(setup: RunSetup, path: Path, kind: CardKind, ref: str) -> None:
    """The card of a merged model or a pushed adapter, from the run's recipe, run.json, metrics."""
    metrics_path = RunPaths(setup.run_dir).metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    card = render_model_card(setup.recipe, setup.info, setup.method, metrics, kind, ref)
    path.write_text(card, encoding="utf-8")
