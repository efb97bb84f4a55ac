"""What a checkpoint must still match for `--resume` to continue it exactly.

Every checkpoint records the run's fingerprint: the resolved recipe flattened to dotted keys
(less `RESUMABLE_KEYS`, which may change on resume because they do not touch the training
arithmetic), a SHA-256 of the training data's bytes (streamed, so any file size), and the
number of processes (the sampler's shards and the position in the epoch depend on it).
`--resume` recomputes it and refuses, naming every difference, rather than silently mixing
two trainings into one run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.sources import LocalSource
from finetune.jsonvalues import as_object
from finetune.recipe.schema import Recipe
from finetune.run.files import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON, JSONObject

# Keys (a dotted key, or a whole section) that may change on --resume: where the run is
# written, how often it logs, checkpoints and evaluates, eval batch sizes, and whether
# tokenised data is cached. Evaluation runs under its own random state, so none of them
# changes a training step.
RESUMABLE_KEYS = (
    "output",
    "train.logging_steps",
    "train.save_steps",
    "train.keep_checkpoints",
    "train.eval_steps",
    "eval.batch_size",
    "eval.generation.batch_size",
    "data.test",
    "data.cache",
)


def may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def flatten(value: JSON, prefix: str = "") -> JSONObject:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: JSONObject = {}
    for key, sub in value.items():
        flat.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def data_files(source: LocalSource, base_dir: Path | None) -> list[Path]:
    """The files a local source reads: one file, or every `train.{lang}` sibling."""
    from finetune.data.readers import LANG_PLACEHOLDER, resolve_path

    path = resolve_path(source.path, base_dir)
    if LANG_PLACEHOLDER in path.name:
        return sorted(path.parent.glob(path.name.replace(LANG_PLACEHOLDER, "*")))
    return [path]


def run_fingerprint(recipe: Recipe, base_dir: Path | None, processes: int) -> JSONObject:
    """The recipe keys that fix the training, the train data's hash and the process count.

    A local train file is compared by content, not by path (moving the file is fine, editing
    it is not); a Hub source is compared by its id, config, split and revision.
    """
    flat = flatten(recipe.model_dump(mode="json"))
    data: dict[str, str] = {}
    train = recipe.data.train
    if isinstance(train, LocalSource):
        flat = {k: v for k, v in flat.items() if not k.startswith("data.train.path")}
        for path in data_files(train, base_dir):
            data[path.name] = file_sha256(path)
    kept = {k: v for k, v in sorted(flat.items()) if not may_change(k)}
    return {"recipe": kept, "train_data": data, "processes": processes}


def differences(saved: Mapping[str, JSON], current: Mapping[str, JSON]) -> list[str]:
    """What changed between a checkpoint's fingerprint and this run's, one entry per key."""
    if not saved:  # a checkpoint written before fingerprints existed: nothing to compare
        return []
    found: list[str] = []
    before, after = as_object(saved.get("recipe")), as_object(current.get("recipe"))
    for key in sorted(set(before) | set(after)):
        if may_change(key) or before.get(key) == after.get(key):
            continue
        found.append(f"{key}: {_shown(before, key)} -> {_shown(after, key)}")
    old_data, new_data = as_object(saved.get("train_data")), as_object(current.get("train_data"))
    if old_data != new_data:
        names = sorted(
            n for n in set(old_data) | set(new_data) if old_data.get(n) != new_data.get(n)
        )
        found.append(f"train data changed (content hash of {', '.join(names)})")
    if saved.get("processes") != current.get("processes"):
        found.append(f"processes: {saved.get('processes')} -> {current.get('processes')}")
    return found


def _shown(values: Mapping[str, JSON], key: str) -> str:
    return json.dumps(values[key]) if key in values else "(not set)"
