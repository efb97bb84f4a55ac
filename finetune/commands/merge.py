"""`finetune merge` and `finetune push`: fold the adapter into the base weights and publish.

Merging is checked, not trusted: the merged model must give the same outputs as the adapter
model on real eval inputs, or nothing is written. The result is a plain transformers model
(`from_pretrained` needs neither peft nor finetune) with its tokenizer and model card.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError, RunDirError, first_line
from finetune.methods import METHODS, mergeable_names
from finetune.run.files import atomic_dir
from finetune.run.layout import CARD, RunPaths

log = logging.getLogger(__name__)

PARITY_EXAMPLES = 16


@dataclass
class MergeResult:
    out: Path
    max_abs_diff: float
    examples: int


def _parity_batch(run: Any) -> dict[str, Any]:
    """A batch of real inputs (with targets, so generation models return logits too)."""
    from finetune.commands.evaluate import examples_for

    try:
        examples = examples_for(run, "eval", None)[:PARITY_EXAMPLES]
    except FinetuneError:
        examples = []
    if not examples:
        examples = run.task.examples_from_texts(["a short test input", "another one"])
    features = run.task.encode(examples, training=examples[0].target is not None)
    batch = run.task.collate(features)
    batch.pop("idx", None)
    return batch


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
    run = load_run(run_dir)
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
    merged = method.merge(run.model)
    after = _logits(merged, batch)
    diff = float((before - after).abs().max())
    if diff > tolerance:
        raise FinetuneError(
            f"merged model outputs differ from the adapter model by {diff:.2e} "
            f"(tolerance {tolerance:.0e}); nothing was written",
            fix="use the adapter directly, or raise --tolerance if the difference is expected",
        )
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        run.task.tokenizer.save_pretrained(tmp)
        if RunPaths(run_dir).card.exists():
            shutil.copy(RunPaths(run_dir).card, tmp / CARD)
    log.info(
        "merged %s into %s (max |diff| %.2e on %d inputs)", method.name, out, diff, before.shape[0]
    )
    return MergeResult(out=out, max_abs_diff=diff, examples=int(before.shape[0]))


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
