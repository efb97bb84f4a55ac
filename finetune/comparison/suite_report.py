"""The report of a suite, as adapter papers print theirs: methods x tasks, then the average.

Rows are methods; each task's column holds its main metric with the 95% bootstrap interval (or
the seeds' mean ± std); then the average over tasks (± the std of each seed's average) and
the mean rank, trainable parameters, peak memory, training time and size on disk; with several
seeds, each seed's order and the pairs that change places (suite_seeds.py). Scores in [0, 1]
(accuracy, F1, Matthews and Pearson/Spearman correlations) are shown x100, as GLUE tables are,
so they average with ROUGE and BLEU; a task scored by its eval loss joins neither the average
nor the ranks. A cell whose run failed holds its reason and the log's path, and never sinks the
table. Written as report.md/.csv/.json, a LaTeX `tabular` (report.tex), and two plots: the
average against trainable parameters (report.png) and the methods x tasks heatmap (heatmap.png).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.comparison.plan import Outcome
from finetune.comparison.report import human_size
from finetune.comparison.runner import Row, higher_is_better
from finetune.comparison.suite_scores import SuiteRow, scaled, score, suite_rows
from finetune.comparison.suite_seeds import add_seed_averages, verdict
from finetune.run.files import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSONObject


def cell(row: Row) -> str:
    if row.status != "ok":
        return row.status + (f" (log: {row.log})" if row.log else "")
    if row.quality is None:
        return "no eval data"
    metric = row.quality_metric
    value = scaled(metric, row.quality)
    text = f"{value:.1f}" if higher_is_better(metric) else f"loss {row.quality:.4f}"
    if row.quality_std is not None:
        text += f" ± {scaled(metric, row.quality_std):.1f}"
    if row.quality_low is not None and row.quality_high is not None:
        low, high = scaled(metric, row.quality_low), scaled(metric, row.quality_high)
        text += f" [{low:.1f}, {high:.1f}]"
    return text


def _metrics_line(tasks: list[str], outcomes: list[Outcome]) -> str:
    named = []
    for task in tasks:
        metric = next(
            (o.row.quality_metric for o in outcomes if o.task == task and o.row.quality_metric),
            "–",
        )
        named.append(f"{task}: {metric}")
    return "Main metric per task (x100 where it is a fraction): " + ", ".join(named) + "."


HEAD = ["average", "mean rank", "trainable (mean)", "peak memory (max)", "train time (sum)"]


def markdown(title: str, header: list[str], tasks: list[str], rows: list[SuiteRow]) -> str:
    columns = ["method", *tasks, *HEAD, "size on disk (mean)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"`{row.method}`"]
        cells += [_md(cell(row.cells[t])) if t in row.cells else "–" for t in tasks]
        cells += _summary_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    body = [f"# {title}\n", *(h + "\n" for h in header), "\n".join(lines) + "\n"]
    seeds = verdict(rows)
    return "\n".join(body + (["\n".join(seeds) + "\n"] if seeds else []))


def _summary_cells(row: SuiteRow) -> list[str]:
    trainable = row.mean_of("trainable")
    peak = max((r.peak_memory_bytes or 0 for r in row.cells.values()), default=0) or None
    seconds = row.total_of("train_seconds")
    average = "–" if row.average is None else f"{row.average:.1f}"
    if row.average is not None and row.average_std is not None:
        average += f" ± {row.average_std:.1f}"
    return [
        average,
        "–" if row.mean_rank is None else f"{row.mean_rank:.2f}",
        "–" if trainable is None else f"{trainable:,.0f}",
        human_size(peak),
        "–" if seconds is None else f"{seconds:.0f} s",
        human_size(row.mean_of("artifact_bytes")),
    ]


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def latex(tasks: list[str], rows: list[SuiteRow]) -> str:
    """A `tabular` to paste into a paper: scores x100, the best of each column in bold."""
    best = {t: max((s for r in rows if (s := _score_of(r, t)) is not None), default=None)
            for t in tasks}  # fmt: skip
    top = max((r.average for r in rows if r.average is not None), default=None)
    lines = [
        "\\begin{tabular}{l" + "r" * (len(tasks) + 2) + "}",
        "\\toprule",
        "Method & " + " & ".join(_tex(t) for t in tasks) + " & Avg. & Params \\\\",
        "\\midrule",
    ]
    for row in rows:
        values = []
        for task in tasks:
            value = _score_of(row, task)
            text = "--" if value is None else f"{value:.1f}"
            top_here = value is not None and value == best[task]
            values.append(f"\\textbf{{{text}}}" if top_here else text)
        avg = "--" if row.average is None else f"{row.average:.1f}"
        avg = f"\\textbf{{{avg}}}" if row.average is not None and row.average == top else avg
        trainable = row.mean_of("trainable")
        params = "--" if trainable is None else f"{trainable:,.0f}".replace(",", "{,}")
        lines.append(f"{_tex(row.method)} & " + " & ".join(values) + f" & {avg} & {params} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _score_of(row: SuiteRow, task: str) -> float | None:
    return score(row.cells[task]) if task in row.cells else None


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&")


def write_suite_report(
    out: Path, title: str, header: list[str], tasks: list[str], outcomes: list[Outcome]
) -> list[SuiteRow]:
    rows = suite_rows(tasks, outcomes)
    add_seed_averages(rows, tasks)
    header = [*header, _metrics_line(tasks, outcomes)]
    atomic_write_text(out / "report.md", markdown(title, header, tasks, rows))
    atomic_write_text(out / "report.tex", latex(tasks, rows))
    atomic_write_json(out / "report.json", [_record(row, tasks) for row in rows])
    atomic_write_text(out / "report.csv", _csv(rows, tasks))
    from finetune.comparison.suite_plots import heatmap, scatter

    scatter(rows, out / "report.png", title)
    heatmap(rows, tasks, out / "heatmap.png", title)
    return rows


def _record(row: SuiteRow, tasks: list[str]) -> JSONObject:
    return {
        "method": row.method,
        "average": row.average,
        "average_std": row.average_std,
        "seed_averages": {str(seed): value for seed, value in row.seed_averages.items()},
        "mean_rank": row.mean_rank,
        "trainable_mean": row.mean_of("trainable"),
        "tasks": {
            t: {
                "status": r.status,
                "metric": r.quality_metric,
                "quality": r.quality,
                "low": r.quality_low,
                "high": r.quality_high,
                "std": r.quality_std,
                "seeds": list(r.seeds),
                "per_seed": list(r.per_seed),
                "score": score(r),
                "log": r.log,
            }
            for t, r in row.cells.items()
        },
    }


def _csv(rows: list[SuiteRow], tasks: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", *tasks, "average", "average_std", "mean_rank", "trainable_mean"])
    for row in rows:
        scores = [_score_of(row, t) for t in tasks]
        summary = [row.average, row.average_std, row.mean_rank, row.mean_of("trainable")]
        writer.writerow([row.method, *scores, *summary])
    return buffer.getvalue()
