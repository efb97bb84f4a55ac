"""`finetune sweep RECIPE train.lr=1e-4,5e-4,2e-3 method.r=8,16 [--methods ...] [--random N]`.

Every combination of the axes (or N of them, sampled with a seed) runs as one point of the
runner `compare` uses: one `finetune run` subprocess each, finished points read back instead
of rerun, so a sweep that was interrupted continues where it stopped. The report is
`compare`'s (report.md/.csv/.json/.png, intervals and verdicts) with one column per axis, plus
`best.yaml`: the best point's recipe, ready for `finetune run`.
"""

from __future__ import annotations

import itertools
import json
import logging
import random as random_module
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from finetune.comparison.intervals import add_intervals
from finetune.comparison.jobs import Slot, run_all
from finetune.comparison.recipes import (
    RecipeData,
    check_schema,
    method_recipe,
    read_base,
    seed_list,
)
from finetune.comparison.report import write_report
from finetune.comparison.runner import (
    Point,
    Row,
    fold_point,
    higher_is_better,
    recipe_text,
    run_point,
    seeded_points,
)
from finetune.errors import FinetuneError, RecipeError
from finetune.jsonvalues import as_object, copy_object
from finetune.methods import METHODS
from finetune.recipe.io import apply_overrides, parse_scalar
from finetune.run.files import atomic_write_text
from finetune.types import JSON

log = logging.getLogger(__name__)

Axes = dict[str, list[JSON]]  # dotted recipe key -> the values it takes
SweepPoint = dict[str, JSON]  # dotted recipe key -> this point's value
T = TypeVar("T")

BEST = "best.yaml"


def parse_axes(args: list[str]) -> tuple[Axes, list[str]]:
    """`key=v1,v2` -> an axis (values parsed as YAML scalars); `key=v` -> a fixed override.

    A value in brackets or braces (`method.target_modules=[query,value]`) is one value."""
    axes: Axes = {}
    fixed: list[str] = []
    for arg in args:
        key, sep, text = arg.partition("=")
        if not sep or not key:
            raise FinetuneError(f"sweep: {arg!r} is not key=value", fix="e.g. train.lr=1e-4,5e-4")
        if "," not in text or text.strip().startswith(("[", "{")):
            fixed.append(arg)
            continue
        values = [parse_scalar(v.strip()) for v in text.split(",") if v.strip()]
        if key in axes or len(values) < 2:
            raise FinetuneError(
                f"sweep: axis {key} given twice or with one value",
                fix="give each axis once, with comma-separated values",
            )
        axes[key] = values
    return axes, fixed


def grid(axes: Axes, methods: list[str]) -> list[tuple[str, SweepPoint]]:
    """(method, point) for every combination; `method.*` axes only for methods that have them,
    and an axis that none of them has is refused (a misspelt option would vanish silently)."""
    for key in axes:
        option = key.split(".")[1] if key.startswith("method.") else None
        if option and not any(option in METHODS[m].config_class.model_fields for m in methods):
            raise FinetuneError(
                f"sweep: axis {key}: no method swept ({', '.join(methods)}) has an option "
                f"{option!r}",
                fix="check the name with `finetune options method`, or add a method that has "
                "it with --methods",
            )
    points: list[tuple[str, SweepPoint]] = []
    for method in methods:
        fields = METHODS[method].config_class.model_fields
        keys = [k for k in axes if not k.startswith("method.") or k.split(".")[1] in fields]
        for combo in itertools.product(*(axes[k] for k in keys)):
            points.append((method, dict(zip(keys, combo))))
    return points


def sample(points: list[T], n: int | None, seed: int) -> list[T]:
    if n is None or n >= len(points):
        return points
    chosen = sorted(random_module.Random(seed).sample(range(len(points)), n))
    return [points[i] for i in chosen]


def point_name(method: str, point: Mapping[str, JSON]) -> str:
    parts = [method] + [f"{key.split('.')[-1]}{value}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", "-".join(parts))


def point_recipe(base: RecipeData, method: str, point: Mapping[str, JSON]) -> RecipeData:
    """The point's recipe; RecipeError (exit 2, before anything runs) when an axis value does
    not make a valid recipe (a misspelt key, a value of the wrong type or range)."""
    data = method_recipe(base, method)
    problems = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in point.items()])
    if problems:
        raise RecipeError(problems)
    check_schema(data, f"sweep point {point_name(method, point)}")
    return data


def sweep(
    recipe_path: Path,
    args: list[str],
    methods: list[str] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    random: int | None = None,
    seed: int = 0,
    seeds: int = 1,
    jobs: int = 1,
) -> tuple[list[Row], Path, list[str]]:
    axes, fixed = parse_axes(args)
    base = read_base(recipe_path, fixed)
    own = as_object(base.get("method")).get("name")
    methods = methods or [own if isinstance(own, str) and own else "lora"]
    points = sample(grid(axes, methods), random, seed)
    out = out or Path("runs") / f"sweep-{recipe_path.stem}"
    out.mkdir(parents=True, exist_ok=True)
    recipes = {point_name(m, p): point_recipe(base, m, p) for m, p in points}
    rows = run_points(
        [(Point(recipes[point_name(m, p)], point_name(m, p), m), p) for m, p in points],
        seed_list(base, seeds),
        out,
        overwrite,
        jobs,
    )
    add_intervals(rows, out)
    keys = list(axes)
    best = best_row(rows)
    header = [
        f"Sweep of {len(rows)} point(s) over {', '.join(keys) or 'no axis'}"
        + (f" ({random} sampled with seed {seed})" if random else "")
        + f"; methods: {', '.join(methods)}. "
        + (
            f"The best point's recipe is {BEST}."
            if best
            else f"No point finished with an eval score, so there is no {BEST}."
        )
    ]
    write_report(rows, out, f"finetune sweep: {recipe_path}", header, keys)
    write_best(best, recipes, out)
    return rows, out, keys


def run_points(
    points: list[tuple[Point, SweepPoint]],
    seeds: list[int],
    out: Path,
    overwrite: bool,
    jobs: int,
) -> list[Row]:
    """Every point at every seed, `jobs` at a time; each point's seeds folded into its row."""
    work = [(run, axes) for point, axes in points for run in seeded_points(point, seeds)]

    def run(item: tuple[Point, SweepPoint], slot: Slot) -> Row:
        return run_point(item[0], out, overwrite, slot)

    done = run_all(work, run, jobs, lambda item: item[0].name)
    rows, start = [], 0
    for point, axes in points:
        count = max(len(seeds), 1)
        row = fold_point(done[start : start + count], point, seeds)
        row.point = axes
        rows.append(row)
        start += count
    return rows


def best_row(rows: list[Row]) -> Row | None:
    """The point with the best eval score; None when no point finished with one."""
    done = [r for r in rows if r.status == "ok" and r.quality is not None]
    if not done:
        return None
    sign = 1.0 if higher_is_better(done[0].quality_metric) else -1.0
    return max(done, key=lambda r: sign * (r.quality or 0.0))


def write_best(best: Row | None, recipes: Mapping[str, RecipeData], out: Path) -> None:
    """The best point's recipe, its output directory `best/` beside the sweep's points; with
    no best point, an earlier sweep's best.yaml is removed rather than left to mislead."""
    if best is None:
        (out / BEST).unlink(missing_ok=True)
        log.warning("sweep: no point finished with an eval score; no %s written", BEST)
        return
    data = copy_object(recipes[best.name])
    data["output"] = {"dir": str(out / "best")}
    note = f"# best point of the sweep ({best.quality_metric} {best.quality}): {best.name}\n"
    atomic_write_text(out / BEST, note + recipe_text(data))
