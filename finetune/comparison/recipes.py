"""The recipes a comparison runs: the base recipe read once (overrides applied, local data
paths made absolute so each run's recipe works from the report's folder), then one copy per
method at that method's rate, and the seeds to run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import RecipeError
from finetune.jsonvalues import as_object, child, copy_object, integer
from finetune.methods import METHODS
from finetune.recipe.io import apply_overrides, build_recipe, read_yaml
from finetune.recipe.sections import default_lr
from finetune.types import JSONObject

if TYPE_CHECKING:  # pragma: no cover
    from finetune.methods.base import Method
    from finetune.types import JSON

RecipeData = JSONObject  # a recipe as YAML holds it, before validation


def read_base(recipe_path: Path, overrides: list[str]) -> RecipeData:
    """The recipe with the command line's overrides, refused (exit 2, every problem named)
    when they do not make a valid recipe: a misspelt key would otherwise fail every point
    alone, as a row of the report, and the command would end as if it had worked."""
    data, problems = read_yaml(recipe_path)
    if data is None:
        raise RecipeError(problems)
    problems = apply_overrides(data, overrides)
    if problems:
        raise RecipeError(problems)
    check_schema(data, str(recipe_path))
    absolute_data_paths(data, recipe_path.parent)
    return data


def check_schema(data: RecipeData, where: str) -> None:
    """RecipeError with every schema problem of `data` (keys, types, ranges); files, model
    and method support are each point's own run's to report."""
    _, problems = build_recipe(copy_object(data), where)
    if problems:
        raise RecipeError(problems)


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


def method_recipe(base: Mapping[str, JSON], method: str) -> RecipeData:
    """The base recipe with this method. The recipe's own method keeps its options and lr;
    the others run at their registry `default_lr`: one rate for all would favour whichever
    method it was tuned for. An unset lr (missing or null) is the method's `default_lr`, as a
    run resolves it, so the rate search starts from a number. `NAME:INIT` (lora:pissa) is the
    method with that `method.init`."""
    data = copy_object(base)
    name, _, init = method.partition(":")
    section = as_object(data.get("method"))
    if init and section.get("name") == name:  # the recipe's method, only its init changed
        data["method"] = {**section, "init": init}
    elif section.get("name") != method:
        data["method"] = {"name": name, **({"init": init} if init else {})}
        child(data, "train")["lr"] = None  # the recipe's rate was for its own method
    train = child(data, "train")
    if train.get("lr") is None:
        train["lr"] = default_lr(METHODS[name].default_lr, train.get("optimizer"))
    data.pop("output", None)
    data.pop("name", None)
    return data


def rate_origin(base: Mapping[str, JSON], method: str) -> str:
    own = as_object(base.get("method")).get("name") == method
    lr = as_object(base.get("train")).get("lr")
    return "the recipe's" if own and lr else "registry default"


def seed_list(base: Mapping[str, JSON], seeds: int) -> list[int]:
    first = integer(as_object(base.get("train")).get("seed", 42), 42)
    return [first + k for k in range(seeds)]


def method_entry(method: str) -> Method:
    """The registry entry of a compared method (`lora:pissa` is LoRA's)."""
    return METHODS[method.partition(":")[0]]


def baseline_first(methods: list[str], base: RecipeData) -> list[str]:
    """Methods that train nothing (the zero-shot row) first, so the report reads from the base
    model down. `--methods all` leaves them out for classification, whose fresh head has no
    zero-shot score (naming `none` explicitly still shows the reason as a "not run" row)."""
    from finetune.recipe.schema import METHOD_NAMES

    untrained = [m for m in methods if not method_entry(m).trains]
    if (
        methods == list(METHOD_NAMES)
        and as_object(base.get("task")).get("type") == "classification"
    ):
        untrained = []
    return untrained + [m for m in methods if method_entry(m).trains]
