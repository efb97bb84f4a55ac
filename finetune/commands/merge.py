"""`finetune merge` and `finetune push`: fold the adapter into the base weights and publish.

`push` uploads the merged model, or with `--adapter` the run's artefact as trained (every
method: peft's format, finetune's own, or the full model), each with its own model card.

Merging is checked, not trusted: the merged model must give the same outputs as the adapter
model on real eval inputs, or nothing is written. "The same" is relative + absolute, like
`torch.isclose`: every logit may differ by `tolerance + RELATIVE_TOLERANCE * scale`, where
`scale` is the largest |logit| at that position. Float noise grows with the size of the logits
(a big model's ~100 carry noise far above 1e-4), a wrong merge does not hide in it. The result
is a plain transformers model (`from_pretrained` needs neither peft nor finetune) with its
tokenizer and model card.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError, RunDirError, first_line
from finetune.methods import METHODS, mergeable_names
from finetune.run.card import render_model_card
from finetune.run.files import atomic_dir
from finetune.run.layout import (
    ADAPTER_CONFIG,
    CARD,
    FINISHED,
    METRICS,
    RECIPE,
    RUN_INFO,
    TOKENIZER,
    RunPaths,
)
from finetune.run.snippets import CardKind

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
    run_dir: Path,
    out: Path,
    overwrite: bool = False,
    tolerance: float = 1e-4,
    card_ref: str | None = None,
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
        write_card(run, tmp / CARD, "merged", card_ref or str(out))
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


def write_card(run: Any, path: Path, kind: CardKind, ref: str) -> None:
    """The card of a merged model or a pushed adapter, from the run's recipe, run.json, metrics."""
    metrics_path = RunPaths(run.path).metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    path.write_text(render_model_card(run.recipe, run.info, metrics, kind, ref), encoding="utf-8")


# what `push --adapter` uploads besides the artefact: enough for `finetune predict` to reload it
ADAPTER_REPO_FILES = (RECIPE, RUN_INFO, METRICS, FINISHED)


def stage_adapter(run_dir: Path, folder: Path, repo_id: str) -> None:
    """The run's artefact as trained (adapter/ or model/), tokenizer and card, unmerged.

    The layout is the run directory's (adapter/ or model/, tokenizer/, recipe.yaml, run.json), so
    a downloaded copy works with `finetune predict` for every method, and peft or transformers
    load their part with `subfolder=`. A peft adapter's `base_model_name_or_path` becomes the
    base model's Hub id where there is one, so `AutoPeftModel` finds the base from the Hub.
    """
    from finetune.models.names import hub_id
    from finetune.run.reload import open_run

    recipe, info = open_run(run_dir)
    paths = RunPaths(run_dir)
    folder.mkdir(parents=True)
    artifact = info["artifact_dir"]
    shutil.copytree(paths.artifact(artifact), folder / artifact)
    shutil.copytree(paths.tokenizer, folder / TOKENIZER)
    for name in ADAPTER_REPO_FILES:
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, folder / name)
    config = folder / artifact / ADAPTER_CONFIG
    base_id = hub_id(recipe.model.name)
    if base_id and config.exists():
        data = json.loads(config.read_text(encoding="utf-8"))
        if "base_model_name_or_path" in data:
            data["base_model_name_or_path"] = base_id
            config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    metrics = json.loads(paths.metrics.read_text()) if paths.metrics.exists() else {}
    card = render_model_card(recipe, info, metrics, "adapter", repo_id)
    (folder / CARD).write_text(card, encoding="utf-8")


def hub_client(repo_id: str, private: bool, token: str | None) -> Any:
    """An HfApi with the repository created (or already there): a bad token or repo id fails
    here, before any merging. HF_ENDPOINT and HF_TOKEN are read by huggingface_hub itself."""
    from huggingface_hub import HfApi

    with _push_errors(repo_id):
        api = HfApi(token=token)
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    return api


def upload_folder(api: Any, folder: Path, repo_id: str) -> str:
    """One commit holding every file of `folder`; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd

    with _push_errors(repo_id):
        operations = [
            CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=p)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
        info = api.create_commit(
            repo_id=repo_id, operations=operations, commit_message=f"finetune push: {repo_id}"
        )
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


@contextmanager
def _push_errors(repo_id: str) -> Iterator[None]:
    """Any Hub failure as a FinetuneError whose text is redacted: a token never reaches the
    screen, even when a server echoes it."""
    from finetune.redaction import redact

    try:
        yield
    except Exception as exc:
        raise FinetuneError(
            f"push to {repo_id} failed: {redact(first_line(exc))}",
            fix="check the repo id, your network and your token (hf auth login or HF_TOKEN); "
            "the model can be written locally with `finetune merge`",
        ) from None


def push_run(
    run_dir: Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    adapter: bool = False,
) -> str:
    """Upload the merged model (default) or, with `adapter`, the artefact as trained.

    Both carry their own card (`merged` / `adapter` kind) whose snippet names `repo_id`.
    """
    from finetune.run.reload import open_run

    _, info = open_run(run_dir)
    method = METHODS[info["method"]]
    if not adapter and not method.mergeable:
        raise FinetuneError(
            f"method {method.name} cannot be merged into the base weights, so there is no "
            "merged model to push",
            fix=f"push the adapter itself: finetune push {run_dir} --repo-id {repo_id} --adapter",
        )
    api = hub_client(repo_id, private, token)
    with tempfile.TemporaryDirectory(prefix="finetune-push-") as tmp:
        folder = Path(tmp) / "upload"
        if adapter:
            stage_adapter(run_dir, folder, repo_id)
        else:
            merge_run(run_dir, folder, card_ref=repo_id)
        return upload_folder(api, folder, repo_id)
