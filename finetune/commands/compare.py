"""`finetune compare`: one recipe, several methods -> one table and one plot.

Each method is one point of the shared runner (commands/runner.py: one `finetune run`
subprocess per point, resumable, timed with the machine's load) and the rows go through the
shared report writer (commands/report.py) that `sweep` uses too. With `--tune`, each method's
learning rate comes from a short search on data held out from train (commands/tune.py); with
`--seeds N`, each method runs N seeds. Every quality figure gets a bootstrap interval
(commands/intervals.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from finetune.comparison.intervals import add_intervals
from finetune.comparison.report import write_report
from finetune.comparison.runner import Row, run_seeds
from finetune.comparison.tune import HOLD_OUT, TuneOptions, search_split, tune_method
from finetune.errors import FinetuneError, RecipeError
from finetune.methods import METHODS
from finetune.recipe.io import apply_overrides, read_yaml
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
        elif item in METHOD_NAMES:
            names.append(item)
        else:
            unknown.append(item)
    if unknown or not names:
        raise FinetuneError(
            f"--methods: unknown method {', '.join(unknown) or '(none given)'}",
            fix="choose from " + ", ".join(METHOD_NAMES) + "; or all, " + ", ".join(GROUPS),
        )
    return list(dict.fromkeys(names))


def method_recipe(base: dict[str, Any], method: str) -> dict[str, Any]:
    """The base recipe with this method. The recipe's own method keeps its options and lr;
    the others run at their registry `default_lr`: one rate for all would favour whichever
    method it was tuned for."""
    data = json.loads(json.dumps(base))
    own = (data.get("method") or {}).get("name") == method
    if not own:
        data["method"] = {"name": method}
        data.setdefault("train", {})["lr"] = METHODS[method].default_lr
    data.setdefault("train", {}).setdefault("lr", METHODS[method].default_lr)
    data.pop("output", None)
    return data


def rate_origin(base: dict[str, Any], method: str) -> str:
    own = (base.get("method") or {}).get("name") == method
    return "the recipe's" if own and (base.get("train") or {}).get("lr") else "registry default"


def absolute_data_paths(data: dict[str, Any], base_dir: Path) -> None:
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


def read_base(recipe_path: Path, overrides: list[str]) -> dict[str, Any]:
    data, problems = read_yaml(recipe_path)
    if data is None:
        raise RecipeError(problems)
    problems = apply_overrides(data, overrides)
    if problems:
        raise RecipeError(problems)
    absolute_data_paths(data, recipe_path.parent)
    return data


def seed_list(base: dict[str, Any], seeds: int) -> list[int]:
    first = int((base.get("train") or {}).get("seed", 42))
    return [first + k for k in range(seeds)]


def compare(
    recipe_path: Path,
    methods: list[str],
    overrides: list[str] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    tune: TuneOptions | None = None,
    seeds: int = 1,
) -> tuple[list[Row], Path]:
    base = read_base(recipe_path, overrides or [])
    out = out or Path("runs") / f"compare-{recipe_path.stem}"
    out.mkdir(parents=True, exist_ok=True)
    split = search_split(base, recipe_path.parent, out, tune.seed) if tune else None
    rows = []
    for method in methods:
        data = method_recipe(base, method)
        search: list[dict[str, Any]] = []
        if tune is not None and split is not None:
            log.info("compare: tuning the learning rate of %s", method)
            data["train"]["lr"], search = tune_method(data, method, split, out, overwrite, tune)
        log.info("compare: running %s", method)
        row = run_seeds(data, method, method, out, overwrite, seed_list(base, seeds))
        row.tuned, row.search = tune is not None, search
        rows.append(row)
    add_intervals(rows, out)
    header = rates_header(base, methods, rows, tune) + seeds_header(seeds)
    write_report(rows, out, f"finetune compare: {recipe_path}", header)
    return rows, out


def rates_header(
    base: dict[str, Any], methods: list[str], rows: list[Row], tune: TuneOptions | None
) -> list[str]:
    if tune is None:
        used = ", ".join(
            f"{m} {method_recipe(base, m)['train']['lr']:g} ({rate_origin(base, m)})"
            for m in methods
        )
        return [
            f"**Learning rates were not tuned.** Used: {used}. A method at a guessed rate can "
            "lose for that reason alone; rerun with `--tune` for a per-method search."
        ]
    chosen = ", ".join(f"{r.method} {r.lr:g}" for r in rows if r.lr is not None)
    return [
        f"**Learning rates were tuned per method**: {tune.rates} log-spaced rates around each "
        f"method's default, {tune.budget:.0%} of the training steps each, scored on a "
        f"seeded {HOLD_OUT:.0%} hold-out of the training rows (never on the eval split "
        f"below). Chosen: {chosen}. The search tables are at the end."
    ]


def seeds_header(seeds: int) -> list[str]:
    if seeds <= 1:
        return ["One seed per method: the interval covers eval-example noise, not seed noise."]
    return [f"{seeds} seeds per method: quality is their mean ± standard deviation."]
