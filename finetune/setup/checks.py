"""Checking a recipe before any weight loads: `finetune validate`, the first step of
`finetune run`, and what `init`, `compare` and `sweep` check their recipes with.

Schema problems come from pydantic; then files, columns, model family and method support are
checked from headers and config.json alone, so a typo costs a second, not a model load.
`validate` also parses every data row (`scan_rows`: streamed, every bad row listed), so a bad
row deep in a file is found before training, not by `run` after minutes; `run` itself reads
every row anyway and skips that pass, as does `validate --quick`.
"""

from __future__ import annotations

from pathlib import Path

from finetune.data.readers import detect_format, peek_columns, resolve_path
from finetune.data.scan import RowCheck, scan_local
from finetune.errors import DataError, FinetuneError, ModelError, Problem
from finetune.methods import METHODS
from finetune.models.architecture import Architecture
from finetune.recipe.io import build_recipe, read_yaml
from finetune.recipe.schema import HubSource, LocalSource, Recipe
from finetune.setup.architecture import recipe_architecture
from finetune.setup.method_checks import method_problems
from finetune.setup.model import quantization_problems


def check_recipe(
    path: Path, overrides: list[str] | None = None, scan_rows: bool = False
) -> tuple[Recipe | None, list[Problem]]:
    """Every problem of a recipe; `scan_rows` also parses every row of its local data files."""
    data, problems = read_yaml(path)
    if data is None:
        return None, problems
    recipe, problems = build_recipe(data, str(path), overrides)
    if recipe is None:
        return None, problems + _missing_files(data, path)
    return recipe, check_semantics(recipe, path, scan_rows)


def _missing_files(data: dict, path: Path) -> list[Problem]:
    """With schema errors elsewhere, still report missing data files: every problem at once."""
    from pydantic import ValidationError

    from finetune.recipe.sections import DataConfig

    try:
        section = DataConfig.model_validate(data.get("data"))
    except ValidationError:
        return []
    problems = []
    for split in ("train", "eval", "test"):
        source = getattr(section, split)
        local = isinstance(source, LocalSource) and "{lang}" not in source.path
        if local and not resolve_path(source.path, path.parent).exists():
            problems.append(
                Problem(f"{path}: data.{split}", f"file not found: {source.path}", "check the path")
            )
    return problems


def check_semantics(recipe: Recipe, path: Path, scan_rows: bool = False) -> list[Problem]:
    from finetune.tasks import TASKS, model_kind

    where = str(path)
    problems: list[Problem] = []
    family: Architecture | None = None
    try:
        family = recipe_architecture(recipe)
    except ModelError as exc:
        problems.append(Problem(where, exc.message, exc.fix))
    if recipe.task.type not in TASKS:
        problems.append(
            Problem(
                f"{where}: task.type",
                f"task {recipe.task.type!r} is not available in this version",
                "available: " + ", ".join(TASKS),
            )
        )
        return problems
    task = TASKS[recipe.task.type]
    if family is not None:
        method = METHODS[recipe.method.name]
        reason = method.unsupported_reason(family, model_kind(recipe.task.type, family))
        if reason:
            problems.append(Problem(f"{where}: method.name", reason, "pick another method"))
    problems.extend(check_training_options(recipe, where))
    problems.extend(evaluation_problems(recipe, where))
    problems.extend(eval_split_problems(recipe, where))
    problems.extend(method_problems(recipe, where))  # train.optimizer, method.init, ...
    problems.extend(template_problems(recipe, where, family))  # task.prompt: chat, no template
    problems.extend(quantization_problems(recipe, where))
    columns, langs = task.required_columns(recipe.task), task.languages(recipe.task)
    check = task.row_checker(recipe.task)
    problems.extend(_check_data(recipe, path, columns, langs, scan_rows, check))
    if recipe.eval.metrics:
        from finetune.tasks.extra_metrics import metric_problems

        problems.extend(metric_problems(recipe.eval, path))
    return problems


def check_training_options(recipe: Recipe, where: str) -> list[Problem]:
    """Best-weights selection, early stopping and trackers (their packages installed)."""
    from finetune.run.trackers import check_trackers
    from finetune.train.selection import check_selection

    return check_selection(recipe, where) + check_trackers(recipe, where)


def eval_split_problems(recipe: Recipe, where: str) -> list[Problem]:
    """data.eval beside data.eval_fraction: the fraction holds rows out of train only without
    data.eval, so one of them is ignored. Checked here rather than in the schema, so the run
    directories of versions that accepted both still load for eval, predict and merge."""
    if recipe.data.eval is None or recipe.data.eval_fraction is None:
        return []
    return [
        Problem(
            f"{where}: data.eval_fraction",
            "set beside data.eval, which it would be ignored for (it holds rows out of train "
            "only when there is no data.eval)",
            "remove data.eval_fraction, or data.eval to hold rows out of train instead",
        )
    ]


def evaluation_problems(recipe: Recipe, where: str) -> list[Problem]:
    """A method that trains nothing (`none`) only evaluates: without eval data it does nothing."""
    method = METHODS[recipe.method.name]
    if method.trains or recipe.data.eval is not None or recipe.data.eval_fraction:
        return []
    return [
        Problem(
            f"{where}: data.eval",
            f"method {method.name} trains nothing and evaluates the base model, but the recipe "
            "has no eval data",
            "set data.eval (or data.eval_fraction)",
        )
    ]


def _check_data(
    recipe: Recipe,
    path: Path,
    columns: list[str],
    langs: list[str],
    scan_rows: bool,
    check: RowCheck | None = None,
) -> list[Problem]:
    problems: list[Problem] = []
    base = path.parent
    for split in ("train", "eval", "test"):
        source = getattr(recipe.data, split)
        if source is None or isinstance(source, HubSource):
            continue  # Hub datasets are checked when they are loaded
        key = f"{path}: data.{split}"
        found = _check_local(source, base, key, columns, langs)
        if not found and scan_rows:
            found = _scan_local(source, base, key, columns, langs, check)
        problems.extend(found)
    return problems


def _scan_local(
    source: LocalSource,
    base: Path,
    key: str,
    columns: list[str],
    langs: list[str],
    check: RowCheck | None = None,
) -> list[Problem]:
    """Every row parsed, none kept; each bad row (up to a cap, then a count) is a problem."""
    try:
        scan = scan_local(source, base, langs, columns, check)
    except DataError as exc:
        return [Problem(key, exc.message, exc.fix)]
    except OSError as exc:
        return [Problem(key, f"cannot read {source.path} ({exc.strerror})", "check permissions")]
    problems = [Problem(key, exc.message, exc.fix) for exc in scan.problems]
    if not problems and not scan.rows:
        problems.append(Problem(key, f"{source.path} has no rows", "add examples to the file"))
    return problems


def _check_local(
    source: LocalSource, base: Path, key: str, columns: list[str], langs: list[str]
) -> list[Problem]:
    resolved = resolve_path(source.path, base)
    try:
        fmt = detect_format(source, resolved)
    except FinetuneError as exc:
        return [Problem(key, exc.message, exc.fix)]
    if fmt == "text":
        missing = [
            str(resolved).replace("{lang}", lang)
            for lang in langs
            if not Path(str(resolved).replace("{lang}", lang)).exists()
        ]
        if missing:
            return [Problem(key, f"file not found: {', '.join(missing)}", "check the path")]
        return []
    if not resolved.exists():
        return [
            Problem(
                key,
                f"file not found: {source.path}",
                "check the path (relative paths "
                "are read from the working directory, then beside the recipe)",
            )
        ]
    if resolved.is_dir():
        return [Problem(key, f"{source.path} is a directory", "name a data file")]
    try:
        present = peek_columns(source, base, langs)
    except DataError as exc:
        return [Problem(key, exc.message, exc.fix)]
    except OSError as exc:
        return [Problem(key, f"cannot read {source.path} ({exc.strerror})", "check permissions")]
    if not present:  # parquet columns come from its schema: no rows are read
        return [Problem(key, f"{source.path} is empty", "add rows")]
    missing = [c for c in columns if c not in present]
    if missing:
        return [
            Problem(
                key,
                f"{source.path} has no column {', '.join(repr(c) for c in missing)} "
                f"(found: {', '.join(present)})",
                "rename the column in the file or set the task's column option (task.text, "
                "task.label, ...)",
            )
        ]
    return []


def template_problems(recipe: Recipe, where: str, family: Architecture | None) -> list[Problem]:
    """`validate`: `task.prompt: chat` on a decoder whose tokenizer has no template."""
    if getattr(recipe.task, "prompt", None) != "chat" or family is None:
        return []
    if family.shape != "decoder" or recipe.task.type == "classification":
        return []
    from finetune.tasks.chat import PLAIN_FIX, template_known

    if template_known(recipe.model.name, recipe.model.revision) is not False:
        return []
    return [
        Problem(
            f"{where}: task.prompt",
            f"chat, but the tokenizer of {recipe.model.name} has no chat template",
            PLAIN_FIX + ", or use an instruction-tuned model",
        )
    ]
