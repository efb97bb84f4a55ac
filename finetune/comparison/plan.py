"""What `compare` runs, for one recipe or a suite of them: every method on every task, after
an optional learning-rate search, with every seed, `--jobs` points at a time.

The work is planned as flat lists of points (all searches' current rates at once, then every
final run), so `--jobs N` keeps N processes busy across methods, tasks and seeds instead of
waiting for one method to finish. Each task keeps its own folder (runs, search split, its own
per-task report), as a one-recipe `compare` always did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from finetune.comparison.intervals import add_intervals
from finetune.comparison.jobs import Slot, run_all
from finetune.comparison.recipes import (
    RecipeData,
    baseline_first,
    method_entry,
    method_recipe,
    seed_list,
)
from finetune.comparison.runner import Point, Row, fold_point, run_point, seeded_points
from finetune.comparison.tune import Search, TuneOptions, new_search, search_split
from finetune.jsonvalues import child

log = logging.getLogger(__name__)


@dataclass
class TaskSpec:
    """One task of a comparison: its name (the report's column), its recipe (overrides
    applied, data paths absolute), where the recipe lives, and the folder of its runs."""

    name: str
    base: RecipeData
    recipe_path: Path
    out: Path


@dataclass
class Outcome:
    """A method's row on one task, and its rate search when `--tune` ran one."""

    task: str
    method: str
    row: Row
    search: Search | None = None


def compare_tasks(
    tasks: list[TaskSpec],
    methods: list[str],
    tune: TuneOptions | None,
    seeds: int,
    jobs: int,
    overwrite: bool,
) -> list[Outcome]:
    """Every (task, method) pair tuned (if asked) and run; rows carry bootstrap intervals."""
    searches = _tune(tasks, methods, tune, jobs, overwrite) if tune else {}
    finals: list[tuple[TaskSpec, str, Point]] = []
    for task in tasks:
        for method in baseline_first(methods, task.base):
            data = method_recipe(task.base, method)
            search = searches.get((task.name, method))
            if search is not None:
                child(data, "train")["lr"] = search.chosen
            name = method_entry(method).label or method
            finals.append((task, method, Point(data, name, method)))
    outcomes = _run_finals(finals, seeds, jobs, overwrite)
    for outcome in outcomes:
        outcome.search = searches.get((outcome.task, outcome.method))
        if outcome.search is not None:
            outcome.row.tuned, outcome.row.search = True, outcome.search.table
    for task in tasks:
        add_intervals([o.row for o in outcomes if o.task == task.name], task.out)
    return outcomes


def _tune(
    tasks: list[TaskSpec], methods: list[str], tune: TuneOptions, jobs: int, overwrite: bool
) -> dict[tuple[str, str], Search]:
    """Every pair's search, round by round: all pending rates of all searches run together."""
    searches: dict[tuple[str, str], Search] = {}
    for task in tasks:
        split = search_split(task.base, task.recipe_path.parent, task.out, tune.seed)
        for method in (m for m in methods if method_entry(m).trains):  # the baseline has no rate
            name = method if len(tasks) == 1 else f"{task.name}/{method}"
            data = method_recipe(task.base, method)
            searches[(task.name, method)] = new_search(name, data, method, split, task.out, tune)
    while any(s.pending for s in searches.values()):
        work = [(s, point) for s in searches.values() for point in s.points()]
        log.info("compare: %d learning-rate search run(s)", len(work))

        def run(item: tuple[Search, Point], slot: Slot) -> Row:
            return run_point(item[1], item[0].out, overwrite, slot)

        def label(item: tuple[Search, Point]) -> str:
            return f"{item[0].name} search {item[1].name}"

        rows = run_all(work, run, jobs, label)
        for search in searches.values():
            search.record([row for (s, _), row in zip(work, rows) if s is search])
    return searches


def _run_finals(
    finals: list[tuple[TaskSpec, str, Point]], seeds: int, jobs: int, overwrite: bool
) -> list[Outcome]:
    """Every final run (each seed a point of its own), then each pair's seeds folded."""
    work: list[tuple[TaskSpec, Point]] = []
    plans: list[tuple[TaskSpec, str, Point, list[int], int, int]] = []
    for task, method, point in finals:
        # nothing trains under the baseline: one run, whatever the seeds
        chosen = seed_list(task.base, seeds if method_entry(method).trains else 1)
        points = seeded_points(point, chosen)
        plans.append((task, method, point, chosen, len(work), len(points)))
        work += [(task, p) for p in points]
    log.info("compare: %d run(s)", len(work))
    several = len({task.name for task, _, _ in finals}) > 1

    def run(item: tuple[TaskSpec, Point], slot: Slot) -> Row:
        return run_point(item[1], item[0].out, overwrite, slot)

    def label(item: tuple[TaskSpec, Point]) -> str:
        return f"{item[0].name}/{item[1].name}" if several else item[1].name

    rows = run_all(work, run, jobs, label)
    outcomes = [
        Outcome(task.name, method, fold_point(rows[start : start + count], point, chosen))
        for task, method, point, chosen, start, count in plans
    ]
    for outcome in outcomes:
        if not method_entry(outcome.method).trains:  # the zero-shot row: no rate, the others' base
            outcome.row.baseline, outcome.row.lr = True, None
    return outcomes
