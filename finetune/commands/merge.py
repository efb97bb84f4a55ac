"""`finetune merge` and `finetune push`: fold the adapter into the base weights and publish.

Merging is checked, not trusted: the merged model must give the same outputs as the adapter
model on real eval inputs, or nothing is written. "The same" is relative + absolute, like
`torch.isclose`: every logit may differ by `tolerance + RELATIVE_TOLERANCE * scale`, where
`scale` is the largest |logit| at that position. Float noise grows with the size of the logits
(a big model's ~100 carry noise far above 1e-4), a wrong merge does not hide in it. The result
is a plain transformers model (`from_pretrained` needs neither peft nor finetune) with its
tokenizer and model card.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError, RunDirError, first_line
from finetune.methods import METHODS, mergeable_names
from finetune.run.files import atomic_dir
from finetune.run.layout import CARD, RunPaths

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


def parity(before: Any, after: Any, tolerance: float, rtol: float = RELATIVE_TOLERANCE) -> Parity:
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


def _parity_batch(run: Any) -> dict[str, Any]:
    """A batch of real inputs (with targets, so generation models return logits too)."""
    from finetune.commands.evaluate import examples_for

    try:
        examples = examples_for(run, "eval", None)[:PARITY_EXAMPLES]
    except FinetuneError:
        examples = []
    if not examples:
        examples = _made_up_examples(run.task)
    features = run.task.encode(examples, training=examples[0].target is not None)
    batch = run.task.collate(features)
    batch.pop("idx", None)
    return batch


FALLBACK_TEXTS = ("a short test input", "another one")


def _made_up_examples(task: Any) -> list[Any]:
    """Inputs for a run without eval data. A generation model computes logits only for a
    target (T5 needs decoder inputs, GPT-2 the target tokens after the prompt), so these get
    one; a classifier's logits need none."""
    from finetune.tasks.generation import GenerationTask

    examples = task.examples_from_texts(list(FALLBACK_TEXTS))
    if isinstance(task, GenerationTask):
        examples = [replace(ex, target=[ex.source]) for ex in examples]
    return examples


def _logits(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    with torch.inference_mode():
        return model(**batch).logits.float()


def merge_run(
    run_dir: Path, out: Path, overwrite: bool = False, tolerance: float = 1e-4
) -> MergeResult:
    from finetune.run.reload import load_run

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(
            f"{out}: exists and is not empty", fix="pass --overwrite or another --out"
        )
    run = load_run(run_dir, full_precision_base=True)  # QLoRA: into the de-quantised base
    method = METHODS[run.info["method"]]
    if not method.mergeable:
        raise FinetuneError(
            f"method {method.name} cannot be merged into the base weights (it adds modules "
            "or virtual tokens that have no place in the base architecture)",
            fix="use the run directly with `finetune predict`, or train a mergeable method "
            f"({', '.join(mergeable_names())})",
        )
    batch = _parity_batch(run)
    before = _logits(run.model, batch)
    merged: Any = method.merge(run.model)
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
        run.task.tokenizer.save_pretrained(tmp)
        if RunPaths(run_dir).card.exists():
            shutil.copy(RunPaths(run_dir).card, tmp / CARD)
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


def push_run(run_dir: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Merge into a temporary directory and upload it (model, tokenizer, card) to the Hub."""
    from finetune.logs import redact

    with tempfile.TemporaryDirectory(prefix="finetune-push-") as tmp:
        folder = Path(tmp) / "merged"
        merge_run(run_dir, folder)
        try:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
            api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(folder), repo_id=repo_id, commit_message=f"finetune: {run_dir.name}"
            )
        except Exception as exc:
            raise FinetuneError(
                f"push to {repo_id} failed: {redact(first_line(exc))}",
                fix="check the repo id, your network and your token (huggingface-cli login "
                "or HF_TOKEN); the merged model can be written locally with `finetune merge`",
            ) from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")
