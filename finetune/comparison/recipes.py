"""The recipes a comparison runs: the base recipe read once (overrides applied, local data
paths made absolute so each run's recipe works from the report's folder), then one copy per
method at that method's rate, and the seeds to run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune.errors import RecipeError
from finetune.methods import METHODS
from finetune.recipe.io import apply_overrides, read_yaml

RecipeData = dict[str, Any]  # a recipe as YAML holds it, before validation


def read_base(recipe_path: Path, overrides: list[str]) -> RecipeData:
    data, problems = read_yaml(recipe_path)
    if data is None:
        raise RecipeError(problems)
    problems = apply_overrides(data, overrides)
    if problems:
        raise RecipeError(problems)
    absolute_data_paths(data, recipe_path.parent)
    return data


def absolute_data_paths(data: RecipeData, base_dir: Path) -> None:
    """Resolve local data paths as `run` would, so the per-method recipes run from anywhere.

    A `data:` section that does not validate is left as written: the method's run reports it.
    """
    from pydantic import ValidationError

    from finetune.recipe.sections import DataConfig
    from finetune.run.artifacts import absolute_sources

    try:
        section = DataConfig.model_validate(data.get("data") or {})
    except ValidationError:
        return
    absolute_sources(section, base_dir)
    data["data"] = section.model_dump(mode="json", exclude_defaults=True)


def method_recipe(base: RecipeData, method: str) -> RecipeData:
    """The base recipe with this method. The recipe's own method keeps its options and lr;
    the others run at their registry `default_lr`: one rate for all would favour whichever
    method it was tuned for. `NAME:INIT` (lora:pissa) is the method with that `method.init`."""
    data = json.loads(json.dumps(base))
    name, _, init = method.partition(":")
    section = data.get("method") or {}
    if init and section.get("name") == name:  # the recipe's method, only its init changed
        data["method"] = {**section, "init": init}
    elif section.get("name") != method:
        data["method"] = {"name": name, **({"init": init} if init else {})}
        data.setdefault("train", {})["lr"] = METHODS[name].default_lr
    data.setdefault("train", {}).setdefault("lr", METHODS[name].default_lr)
    data.pop("output", None)
    data.pop("name", None)
    return data


def rate_origin(base: RecipeData, method: str) -> str:
    own = (base.get("method") or {}).get("name") == method
    return "the recipe's" if own and (base.get("train") or {}).get("lr") else "registry default"


def seed_list(base: RecipeData, seeds: int) -> list[int]:
    first = int((base.get("train") or {}).get("seed", 42))
    return [first + k for k in range(seeds)]
