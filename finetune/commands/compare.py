"""`finetune compare`: recipes x methods -> one table and one plot.

One recipe compares its methods (report.md/.csv/.json/.png in the output folder, as always);
several recipes, or a suite file listing them (comparison/suite.py), compare them across tasks:
each task keeps its own folder and report, and the suite's report sets methods against tasks
with the average and mean rank (comparison/suite_report.py). Every run is one point of the
shared runner (one `finetune run` process each, finished runs read back), `--jobs` of them at
once (comparison/jobs.py); `--tune` searches each method's rate per task on data held out from
train first (comparison/tune.py); every quality figure gets a bootstrap interval.
"""

from __future__ import annotations

import logging
from pathlib import Path

from finetune.comparison.plan import Outcome, TaskSpec, compare_tasks
from finetune.comparison.recipes import RecipeData, method_entry, method_recipe, rate_origin
from finetune.comparison.report import write_report
from finetune.comparison.runner import Row
from finetune.comparison.suite import default_out, suite_tasks
from finetune.comparison.suite_report import write_suite_report
from finetune.comparison.tune import HOLD_OUT, WIDEN, TuneOptions
from finetune.errors import FinetuneError
from finetune.jsonvalues import as_object, number
from finetune.methods import METHODS
from finetune.recipe.schema import METHOD_NAMES

log = logging.getLogger(__name__)


def parse_methods(text: str) -> list[str]:
    """Method names, `all` (every registered method) or a group of them (`lora-family`,
    `adapters`, `prompts`: Method.group), comma-separated, each method once, in order."""
    from finetune.methods import GROUPS, group_names

    names: list[str] = []
    unknown: list[str] = []
    for item in (m.strip() for m in text.split(",")):
        if not item:
            continue
        if item == "all":
            names += METHOD_NAMES
        elif item in GROUPS:
            names += group_names(item)
        elif item in METHOD_NAMES or is_variant(item):
            names.append(item)
        else:
            unknown.append(item)
    if unknown or not names:
        raise FinetuneError(
            f"--methods: unknown method {', '.join(unknown) or '(none given)'}",
            fix="choose from "
            + ", ".join(METHOD_NAMES)
            + "; or all, "
            + ", ".join(GROUPS)
            + "; or a LoRA init as lora:pissa",
        )
    return list(dict.fromkeys(names))


def is_variant(item: str) -> bool:
    """`NAME:INIT`: a method with an `init` option (LoRA's) at one of its values."""
    from typing import get_args

    name, _, init = item.partition(":")
    if name not in METHOD_NAMES or not init:
        return False
    field = METHODS[name].config_class.model_fields.get("init")
    return field is not None and init in get_args(field.annotation)


def compare(
    recipes: Path | list[Path],
    methods: list[str],
    overrides: list[str] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    tune: TuneOptions | None = None,
    seeds: int = 1,
    jobs: int = 1,
) -> tuple[list[Outcome], Path]:
    paths = recipes if isinstance(recipes, list) else [recipes]
    out = out or default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    tasks = suite_tasks(paths, overrides or [], out)
    outcomes = compare_tasks(tasks, methods, tune, seeds, jobs, overwrite)
    header = seeds_header(seeds) + jobs_header(jobs)
    for task in tasks:
        rows = [o.row for o in outcomes if o.task == task.name]
        trained = [m for m in methods if method_entry(m).trains]
        task_header = rates_header(task, trained, rows, tune) + header
        write_report(rows, task.out, f"finetune compare: {task.recipe_path}", task_header)
    if len(tasks) > 1:
        names = [task.name for task in tasks]
        title = f"finetune compare: {len(tasks)} tasks ({', '.join(names)})"
        suite_header = [_suite_rates(tune), *header]
        write_suite_report(out, title, suite_header, names, outcomes)
    return outcomes, out


def _rate(data: RecipeData) -> str:
    """The recipe's learning rate as the report shows it (YAML 1.1 reads `1e-4` as text)."""
    lr = number(as_object(data.get("train")).get("lr"))
    return f"{lr:g}" if lr is not None else "unset"


def rates_header(
    task: TaskSpec, methods: list[str], rows: list[Row], tune: TuneOptions | None
) -> list[str]:
    if tune is None and not methods:
        return []
    if tune is None:
        used = ", ".join(
            f"{m} {_rate(method_recipe(task.base, m))} ({rate_origin(task.base, m)})"
            for m in methods
        )
        return [
            f"**Learning rates were not tuned.** Used: {used}. A method at a guessed rate can "
            "lose for that reason alone; rerun with `--tune` for a per-method search."
        ]
    chosen = ", ".join(f"{r.method} {r.lr:g}" for r in rows if r.lr is not None)
    return [
        f"**Learning rates were tuned per method**: {tune.rates} log-spaced rates around each "
        f"method's default (up to {WIDEN} more past an edge when the best one lies on it), "
        f"{tune.budget:.0%} of the training steps each, scored on a seeded {HOLD_OUT:.0%} "
        f"hold-out of the training rows (never on the eval split below); the best rate, or the "
        f"one below it when the rate above the best collapsed. Chosen: {chosen}. "
        "The search tables are at the end."
    ]


def _suite_rates(tune: TuneOptions | None) -> str:
    if tune is None:
        return (
            "**Learning rates were not tuned**: each method ran at its recipe's or registry "
            "rate on every task (each task's report names them)."
        )
    return (
        f"**Learning rates were tuned per method and per task** ({tune.rates} rates, widened "
        "past an edge when the best lay on it, stepped down from a best rate next to a "
        "collapse; each task's report holds its search tables)."
    )


def seeds_header(seeds: int) -> list[str]:
    if seeds <= 1:
        return ["One seed per method: the interval covers eval-example noise, not seed noise."]
    return [f"{seeds} seeds per method: quality is their mean ± standard deviation."]


def jobs_header(jobs: int) -> list[str]:
    if jobs <= 1:
        return []
    return [
        f"{jobs} runs at a time (`--jobs {jobs}`), the machine split among them: training "
        "times are shared-machine times; quality does not depend on it."
    ]


def recipes_and_overrides(args: list[str]) -> tuple[list[Path], list[str]]:
    """Recipe and suite files first, then key=value overrides (a file name may hold '=' only
    if it exists)."""
    paths = [Path(a) for a in args if "=" not in a or Path(a).exists()]
    overrides = [a for a in args if "=" in a and not Path(a).exists()]
    if not paths:
        raise FinetuneError(
            "compare: no recipe given", fix="finetune compare RECIPE.yaml [RECIPE.yaml ...]"
        )
    return paths, overrides


def _tune_rates(count: int) -> int:
    if count not in (3, 5):
        raise FinetuneError(f"--tune-rates {count}: must be 3 or 5", fix="use --tune-rates 3 or 5")
    return count


def _budget(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise FinetuneError(
            f"--tune-budget {fraction}: must be in (0, 1]", fix="e.g. --tune-budget 0.3"
        )
    return fraction


def tune_options(rates: int, budget: float) -> TuneOptions:
    return TuneOptions(rates=_tune_rates(rates), budget=_budget(budget))
