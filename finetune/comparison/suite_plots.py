"""The two pictures of a suite: each method's average score against its trainable parameters
(the quality/size trade-off papers plot), and the methods x tasks heatmap of scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.comparison.suite_scores import SuiteRow


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fitted(title: str, width_inches: float) -> str:
    """The title wrapped to the figure's width: a narrow heatmap (two tasks) cut a long
    title off at both edges."""
    import textwrap

    return textwrap.fill(title, width=max(24, int(width_inches * 11)))


def scatter(rows: list[SuiteRow], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        trainable = row.mean_of("trainable")
        if row.average is None or not trainable:
            continue
        ax.plot([trainable], [row.average], "o", markersize=7)
        ax.annotate(row.method, (trainable, row.average), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.2)
    ax.set_xlabel("trainable parameters (mean over tasks, log scale)")
    ax.set_ylabel("average score over tasks (points)")
    ax.set_title(fitted(f"{title}: average quality vs trainable parameters", 7), fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmap(rows: list[SuiteRow], tasks: list[str], path: Path, title: str) -> None:
    """Scores in points; blank where a run failed or a task is scored by its loss."""
    from finetune.comparison.suite_scores import score

    plt = _pyplot()
    values = [[score(row.cells[t]) if t in row.cells else None for t in tasks] for row in rows]
    grid = [[float("nan") if v is None else v for v in line] for line in values]
    width = 1.6 + 1.1 * len(tasks)
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.45 * len(rows)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [row.method for row in rows])
    for i, line in enumerate(values):
        for j, value in enumerate(line):
            text = "–" if value is None else f"{value:.1f}"
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label="score (points)")
    ax.set_title(fitted(f"{title}: methods x tasks", width), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
