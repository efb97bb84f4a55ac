"""A suite's ranking seed by seed: each method's average over the tasks for each seed, the
methods' order on each seed, and the pairs that change places between seeds.

With several seeds the question a methods x tasks table raises is whether its order belongs to
the methods or to the seeds. A pair that changes places between seeds while their averages
± std overlap is a tie at this budget; a pair that changes places although those intervals are
apart means the printed intervals understate the noise. The report prints both, so a reader
sees which steps of the order hold, instead of trusting the order of the means.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

from finetune.comparison.runner import spread
from finetune.comparison.suite_scores import scaled, score

if TYPE_CHECKING:  # pragma: no cover
    from finetune.comparison.suite_scores import SuiteRow


@dataclass(frozen=True)
class Swap:
    """Two methods whose order on some seed is the reverse of their averages' order."""

    upper: str  # the higher average over the seeds
    lower: str
    reversed_on: tuple[int, ...]  # the seeds where `lower` scored above `upper`
    separated: bool  # the two averages ± std do not overlap


def seed_averages(row: SuiteRow, tasks: list[str]) -> dict[int, float]:
    """Per seed, the method's average over every task, in points; empty unless every task
    scored that seed (a failed cell, a loss-scored task or a single seed leaves none)."""
    per_task: list[dict[int, float]] = []
    for task in tasks:
        cell = row.cells.get(task)
        if cell is None or score(cell) is None or len(cell.seeds) != len(cell.per_seed):
            return {}
        per_task.append(
            {s: scaled(cell.quality_metric, v) for s, v in zip(cell.seeds, cell.per_seed)}
        )
    common = set.intersection(*(set(p) for p in per_task)) if per_task else set()
    if len(common) < 2:
        return {}
    return {seed: sum(p[seed] for p in per_task) / len(per_task) for seed in sorted(common)}


def add_seed_averages(rows: list[SuiteRow], tasks: list[str]) -> None:
    """Give each row its per-seed averages and their std, printed beside the average."""
    for row in rows:
        row.seed_averages = seed_averages(row, tasks)
        row.average_std = spread(list(row.seed_averages.values()))


def orders(rows: list[SuiteRow]) -> dict[int, list[tuple[str, float]]]:
    """Each seed's methods, best first, with that seed's average (seeds with two or more)."""
    seeds = sorted({s for row in rows for s in row.seed_averages})
    ordered = {
        seed: sorted(
            ((r.method, r.seed_averages[seed]) for r in rows if seed in r.seed_averages),
            key=lambda item: -item[1],
        )
        for seed in seeds
    }
    return {seed: methods for seed, methods in ordered.items() if len(methods) > 1}


def swaps(rows: list[SuiteRow]) -> list[Swap]:
    """Every pair whose order flips on at least one seed they share, upper method first."""
    seeded = [r for r in rows if r.seed_averages and r.average is not None]
    seeded.sort(key=lambda r: -(r.average or 0.0))
    found = []
    for upper, lower in combinations(seeded, 2):
        shared = sorted(set(upper.seed_averages) & set(lower.seed_averages))
        flipped = tuple(s for s in shared if lower.seed_averages[s] > upper.seed_averages[s])
        if not flipped:
            continue
        apart = (upper.average or 0.0) - (upper.average_std or 0.0) > (lower.average or 0.0) + (
            lower.average_std or 0.0
        )
        found.append(Swap(upper.method, lower.method, flipped, apart))
    return found


def verdict(rows: list[SuiteRow]) -> list[str]:
    """Markdown lines: the per-seed orders and whether the ranking holds within the printed
    intervals; none when fewer than two seeds were run."""
    by_seed = orders(rows)
    if len(by_seed) < 2:
        return []
    lines = [
        "## The ranking across seeds\n",
        "Each seed's average over the tasks (x100), the methods in that seed's order:\n",
        "| seed | order |",
        "|---|---|",
    ]
    for seed, ordered in by_seed.items():
        lines.append(f"| {seed} | " + " > ".join(f"{m} {v:.1f}" for m, v in ordered) + " |")
    lines.append("")
    found = swaps(rows)
    if not found:
        lines.append("**Stable:** every seed orders the methods the same way.")
        return lines
    apart = [s for s in found if s.separated]
    ties = [s for s in found if not s.separated]
    if apart:
        lines.append(
            f"**Not stable within the printed intervals:** {len(apart)} pair(s) change places "
            "between seeds although their averages ± std are apart: " + _pairs(apart) + "."
        )
    else:
        lines.append(
            "**Stable within the printed intervals:** every pair that changes places between "
            "seeds has overlapping averages ± std, a tie at this budget."
        )
    if ties:
        lines.append("Ties (change places, averages ± std overlap): " + _pairs(ties) + ".")
    firm = _firm_places(by_seed)
    if firm:
        lines.append("Same place on every seed: " + ", ".join(firm) + ".")
    return lines


def _pairs(found: list[Swap]) -> str:
    return "; ".join(
        f"`{s.upper}` / `{s.lower}` (reversed on seed{'s' if len(s.reversed_on) > 1 else ''} "
        + ", ".join(str(x) for x in s.reversed_on)
        + ")"
        for s in found
    )


def _firm_places(by_seed: dict[int, list[tuple[str, float]]]) -> list[str]:
    """Methods that hold one place on every seed (e.g. "full 1st")."""
    places: dict[str, list[int]] = {}
    for ordered in by_seed.values():
        for place, (method, _) in enumerate(ordered, start=1):
            places.setdefault(method, []).append(place)
    return [
        f"{m} {_ordinal(p[0])}"
        for m, p in places.items()
        if len(p) == len(by_seed) and len(set(p)) == 1
    ]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
