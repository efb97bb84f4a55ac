"""curves.png: train loss, eval loss and the main metric against step, drawn from log.jsonl.

People look at curves, they do not read log.jsonl. Training records carry `loss`; evaluation
records carry `eval_*` keys (see `commands/run.py`), so one pass over the file splits them.
Matplotlib with the Agg backend: no display needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from finetune.types import JSON, JSONObject

Points = list[tuple[int, float]]


def read_log(path: Path) -> list[JSONObject]:
    """The records of a log.jsonl, skipping a torn last line (an interrupted write)."""
    records: list[JSONObject] = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def step_of(record: Mapping[str, JSON]) -> int | None:
    """The optimizer step a log record belongs to; None for a record without one."""
    step = record.get("step")
    return int(step) if isinstance(step, (int, float)) else None


def eval_history(path: Path) -> list[JSONObject]:
    """Every evaluation of the run in step order, one per step (the last where a resumed run
    evaluated a step twice): log.jsonl outlives an interruption, the loop's memory does not."""
    by_step: dict[int, JSONObject] = {}
    for record in read_log(path):
        step = step_of(record)
        if step is not None and any(k.startswith("eval_") for k in record):
            by_step[step] = record
    return [by_step[step] for step in sorted(by_step)]


def series(records: list[JSONObject], key: str, evaluation: bool) -> Points:
    """(step, value) of one key, from training or evaluation records; the last value wins
    where a resumed run logged a step twice."""
    points: dict[int, float] = {}
    for record in records:
        is_eval = any(k.startswith("eval_") for k in record)
        value, step = record.get(key), step_of(record)
        if is_eval == evaluation and isinstance(value, (int, float)) and step is not None:
            points[step] = float(value)
    return sorted(points.items())


def write_curves(
    log_path: Path, out: Path, main_metric: str | None, best_step: int | None = None
) -> bool:
    """Draw the curves into `out`; False (and nothing written) when the log has no points."""
    records = read_log(log_path)
    train = series(records, "loss", evaluation=False)
    evaluation = series(records, "eval_loss", evaluation=True)
    metric = series(records, f"eval_{main_metric}", True) if main_metric else []
    if not (train or evaluation or metric):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if metric else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    _line(ax, train, "train loss", "-")
    _line(ax, evaluation, "eval loss", "o-")
    ax.set(xlabel="step", ylabel="loss (per label token)", title="loss")
    if metric:
        _line(axes[0][1], metric, f"eval {main_metric}", "o-")
        axes[0][1].set(xlabel="step", ylabel=main_metric, title=str(main_metric))
    for axis in axes[0]:
        if best_step is not None:
            axis.axvline(best_step, color="grey", linestyle="--", label=f"kept (step {best_step})")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(out)
    return True


def _line(ax: Axes, points: Points, label: str, style: str) -> None:
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, style, label=label, markersize=4)
