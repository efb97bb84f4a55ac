"""A suite's numbers: each task's score in points, each method's average over tasks and its mean
rank, as adapter papers compute them (the report and the plots read these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune.comparison.plan import Outcome
from finetune.comparison.runner import Row, higher_is_better

POINTS_METRICS = ("rouge", "bleu", "chrf")  # already 0-100; every other score is a fraction


@dataclass
class SuiteRow:
    """One method across the suite's tasks."""

    method: str
    cells: dict[str, Row] = field(default_factory=dict)  # task -> the method's row there
    average: float | None = None
    mean_rank: float | None = None
    seed_averages: dict[int, float] = field(default_factory=dict)  # seed -> average that seed
    average_std: float | None = None  # of seed_averages (suite_seeds.py)

    def mean_of(self, attribute: str) -> float | None:
        values = [getattr(r, attribute) for r in self.cells.values() if r.status == "ok"]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    def total_of(self, attribute: str) -> float | None:
        values = [getattr(r, attribute) for r in self.cells.values() if r.status == "ok"]
        values = [v for v in values if v is not None]
        return sum(values) if values else None


def scaled(metric: str, value: float) -> float:
    """x100 for the fraction metrics (accuracy, F1, correlations), so every score reads in
    points beside ROUGE and BLEU."""
    return value if metric.lower().startswith(POINTS_METRICS) else 100 * value


def score(row: Row) -> float | None:
    """The row's quality in points, or None (failed, no eval data, or a loss)."""
    if row.status != "ok" or row.quality is None or not higher_is_better(row.quality_metric):
        return None
    return scaled(row.quality_metric, row.quality)


def suite_rows(tasks: list[str], outcomes: list[Outcome]) -> list[SuiteRow]:
    methods = list(dict.fromkeys(o.method for o in outcomes))
    rows = [SuiteRow(m) for m in methods]
    for row in rows:
        row.cells = {o.task: o.row for o in outcomes if o.method == row.method}
    for row in rows:
        scores = [score(row.cells[t]) for t in tasks if t in row.cells]
        known = [s for s in scores if s is not None]
        row.average = sum(known) / len(known) if known and len(known) == len(tasks) else None
    _rank(rows, tasks)
    return rows


def _rank(rows: list[SuiteRow], tasks: list[str]) -> None:
    """Per task, rank 1 is the best score (ties share the mean of their places); the mean
    rank is over the tasks where the method has a score."""
    ranks: dict[str, list[float]] = {row.method: [] for row in rows}
    for task in tasks:
        scored: list[tuple[float, str]] = []
        for r in rows:
            value = score(r.cells[task]) if task in r.cells else None
            if value is not None:
                scored.append((value, r.method))
        ordered = sorted(scored, key=lambda item: -item[0])
        for value, method in ordered:
            places = [i + 1 for i, (v, _) in enumerate(ordered) if v == value]
            ranks[method].append(sum(places) / len(places))
    for row in rows:
        found = ranks[row.method]
        row.mean_rank = sum(found) / len(found) if found else None
