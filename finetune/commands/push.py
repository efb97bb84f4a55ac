"""`finetune push`: publish a run to the Hugging Face Hub.

`push` uploads the merged model (with the same output-parity check as `finetune merge`), or
with `--adapter` the run's artefact as trained (every method: peft's format, finetune's own, or
the full model), each with its own model card. Every Hub failure is one redacted line. A
zero-shot run (`method: none`) is refused: it holds no weights, and the base model is on the
Hub already.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.commands.merge import merge_run, refuse_untrained
from finetune.errors import FinetuneError, first_line
from finetune.run.card import render_model_card
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
from finetune.setup.run_setup import open_saved, read_run_dir

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import HfApi

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

    run = open_saved(run_dir)
    recipe, info = run.recipe, run.saved.info
    paths = RunPaths(run_dir)
    folder.mkdir(parents=True)
    artifact = info.artifact_dir
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
    card = render_model_card(recipe, info, run.method, metrics, "adapter", repo_id)
    (folder / CARD).write_text(card, encoding="utf-8")


def hub_client(repo_id: str, private: bool, token: str | None) -> HfApi:
    """An HfApi with the repository created (or already there): a bad token or repo id fails
    here, before any merging. HF_ENDPOINT and HF_TOKEN are read by huggingface_hub itself."""
    from huggingface_hub import HfApi

    with _push_errors(repo_id):
        api = HfApi(token=token)
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    return api


def upload_folder(api: HfApi, folder: Path, repo_id: str) -> str:
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


def _saved_token(repo_id: str) -> str:
    """HF_TOKEN or the token `hf auth login` saved. Without one the Hub's refusal arrives as
    a network or 401 error that never says a token is missing."""
    from huggingface_hub import get_token

    with _push_errors(repo_id):  # a saved login's refresh or exchange can fail too
        found = get_token()
    if not found:
        raise FinetuneError(
            f"push to {repo_id}: no Hugging Face token found",
            fix="log in with `hf auth login` (a token with write access), or set HF_TOKEN",
        )
    return found


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
    from finetune.methods import METHODS

    refuse_untrained(run_dir, "push")
    _, info = read_run_dir(run_dir)
    method = METHODS[info.method]
    if not adapter and not method.mergeable:
        raise FinetuneError(
            f"method {method.name} cannot be merged into the base weights, so there is no "
            "merged model to push",
            fix=f"push the adapter itself: finetune push {run_dir} --repo-id {repo_id} --adapter",
        )
    api = hub_client(repo_id, private, token or _saved_token(repo_id))
    with tempfile.TemporaryDirectory(prefix="finetune-push-") as tmp:
        folder = Path(tmp) / "upload"
        if adapter:
            stage_adapter(run_dir, folder, repo_id)
        else:
            merge_run(run_dir, folder, card_ref=repo_id)
        return upload_folder(api, folder, repo_id)
