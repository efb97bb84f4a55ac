"""A suite: several recipes compared as one table, one task per recipe.

`finetune compare A.yaml B.yaml ...` makes a suite of the recipes named, each task named
after its recipe's `name:` or else its file; a suite file (`recipes/suites/*.yaml`) lists
recipe paths, relative to itself, with optional overrides per task:

    name: glue_small
    tasks:
      - recipe: ../glue_cola.yaml
      - recipe: ../glue_mrpc.yaml
        name: mrpc
        overrides: [data.max_train_samples=2000]

Overrides given on the command line apply to every task, after the suite's own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from finetune.comparison.plan import TaskSpec
from finetune.comparison.recipes import read_base
from finetune.errors import FinetuneError, RecipeError
from finetune.recipe.io import read_yaml
from finetune.recipe.section import Section


class SuiteTask(Section):
    recipe: str = Field(description="Recipe file, relative to the suite file.")
    name: str | None = Field(
        None, description="The task's column in the report; default: the recipe's name or file."
    )
    overrides: list[str] = Field(
        default_factory=list, description="Dotted key=value overrides for this task's recipe."
    )


class Suite(Section):
    name: str | None = Field(None, description="The suite's name; default: its file name.")
    tasks: list[SuiteTask] = Field(min_length=1, description="The recipes compared, in order.")


def is_suite_file(path: Path) -> bool:
    """A YAML file whose top level has `tasks:` (a recipe never has)."""
    data, _ = read_yaml(path)
    return isinstance(data, dict) and "tasks" in data


def read_suite(path: Path) -> Suite:
    data, problems = read_yaml(path)
    if data is None:
        raise RecipeError(problems)
    from pydantic import ValidationError

    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise FinetuneError(
            f"{path}: not a valid suite file ({fields})",
            fix="a suite file holds `tasks:`, a list of {recipe, name, overrides}",
        ) from None


def suite_tasks(paths: list[Path], overrides: list[str], out: Path) -> list[TaskSpec]:
    """One TaskSpec per recipe named or listed by a suite file, each in `out/<name>/` (a lone
    recipe keeps `out` itself, as a one-recipe compare always did)."""
    entries: list[tuple[str | None, Path, list[str]]] = []
    for path in paths:
        if is_suite_file(path):
            suite = read_suite(path)
            for task in suite.tasks:
                recipe = (path.parent / task.recipe).resolve()
                if not recipe.is_file():
                    raise FinetuneError(
                        f"{path}: task recipe {task.recipe} not found ({recipe})",
                        fix="recipe paths in a suite file are relative to the suite file",
                    )
                entries.append((task.name, recipe, list(task.overrides)))
        else:
            entries.append((None, path, []))
    single = len(entries) == 1 and not any(is_suite_file(p) for p in paths)
    specs = [_spec(name, recipe, own + overrides, out, single) for name, recipe, own in entries]
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FinetuneError(
            f"compare: two tasks are named {', '.join(duplicates)}",
            fix="give each task its own `name:` (in its recipe or the suite file)",
        )
    return specs


def _spec(
    name: str | None, recipe: Path, overrides: list[str], out: Path, single: bool
) -> TaskSpec:
    data = read_base(recipe, overrides)
    task_name = name or data.get("name") or recipe.stem
    return TaskSpec(str(task_name), data, recipe, out if single else out / str(task_name))


def default_out(paths: list[Path]) -> Path:
    """runs/compare-<recipe or suite name>; several recipes: runs/compare-<first>-and-<n>."""
    first = paths[0]
    if is_suite_file(first):
        name = read_suite(first).name or first.stem
    else:
        name = first.stem
    if len(paths) > 1:
        name += f"-and-{len(paths) - 1}"
    return Path("runs") / f"compare-{name}"
