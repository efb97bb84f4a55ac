"""`finetune compare`: one recipe, several methods -> one table and one plot.

Each method runs as its own `finetune run` subprocess, so a crash or an unsupported combination
costs one row, not the whole comparison, and each run's peak memory is its own (in-process runs
would report the high-water mark of every run before it). Rows come from each run's
`metrics.json`: quality, trainable parameters, peak memory, training time, size on disk.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from finetune.commands.validate import check_recipe
from finetune.errors import FinetuneError, RecipeError
from finetune.methods import METHODS
from finetune.recipe.io import apply_overrides, read_yaml
from finetune.recipe.schema import METHOD_NAMES
from finetune.run.files import atomic_write_json, atomic_write_text
from finetune.run.layout import RunPaths
from finetune.tasks import TASKS

log = logging.getLogger(__name__)

# Methods other than the recipe's own (whose lr the recipe already tunes) run at their
# registry `default_lr`: one rate for all would favour whichever method it was tuned for.
QUALITY_KEYS = tuple(task.main_metric for task in TASKS.values())


@dataclass
class Row:
    method: str
    status: str
    quality_metric: str = ""
    quality: float | None = None
    trainable: int | None = None
    total: int | None = None
    peak_memory_bytes: int | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    artifact_bytes: int | None = None
    lr: float | None = None
    log: str | None = None  # the method's `finetune run` output: why it failed, in full


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if names == ["all"]:
        return list(METHOD_NAMES)
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown or not names:
        raise FinetuneError(
            f"--methods: unknown method {', '.join(unknown) or '(none given)'}",
            fix="choose from " + ", ".join(METHOD_NAMES) + ", or all",
        )
    return names


def method_recipe(base: dict[str, Any], method: str, out: Path) -> dict[str, Any]:
    """The base recipe with this method; the recipe's own method keeps its options and lr."""
    data = json.loads(json.dumps(base))
    own = (data.get("method") or {}).get("name") == method
    if not own:
        data["method"] = {"name": method}
        data.setdefault("train", {})["lr"] = METHODS[method].default_lr
    data["output"] = {"dir": str(out / method)}
    return data


def run_one(recipe_file: Path, overwrite: bool) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "finetune", "run", str(recipe_file), "--no-progress"]
    if overwrite:
        cmd.append("--overwrite")
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    return done.returncode, done.stderr, time.perf_counter() - started


def row_from_run(method: str, run_dir: Path, wall: float, lr: float | None) -> Row:
    metrics = json.loads(RunPaths(run_dir).metrics.read_text(encoding="utf-8"))
    key = next((k for k in (*QUALITY_KEYS, "loss") if metrics.get(k) is not None), "")
    return Row(
        method=method,
        status="ok",
        quality_metric=key,  # "" and quality None: the recipe has no eval data
        quality=metrics.get(key),
        trainable=metrics.get("trainable_parameters"),
        total=metrics.get("total_parameters"),
        peak_memory_bytes=metrics.get("peak_memory_bytes"),
        train_seconds=metrics.get("train_seconds"),
        wall_seconds=round(wall, 1),
        artifact_bytes=metrics.get("artifact_bytes"),
        lr=lr,
    )


def compare(
    recipe_path: Path,
    methods: list[str],
    overrides: list[str] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
) -> tuple[list[Row], Path]:
    data, problems = read_yaml(recipe_path)
    if data is None:
        raise RecipeError(problems)
    problems = apply_overrides(data, overrides or [])
    if problems:
        raise RecipeError(problems)
    out = out or Path("runs") / f"compare-{recipe_path.stem}"
    out.mkdir(parents=True, exist_ok=True)
    rows = [_compare_one(data, method, recipe_path, out, overwrite) for method in methods]
    write_report(rows, out, recipe_path)
    return rows, out


def absolute_data_paths(data: dict[str, Any], base_dir: Path) -> None:
    """Resolve local data paths as `run` would, so the per-method recipes run from anywhere.

    A `data:` section that does not validate is left as written: the method's run reports it.
    """
    from pydantic import ValidationError

    from finetune.recipe.schema import DataConfig
    from finetune.run.artifacts import absolute_sources

    try:
        section = DataConfig.model_validate(data.get("data") or {})
    except ValidationError:
        return
    absolute_sources(section, base_dir)
    data["data"] = section.model_dump(mode="json", exclude_defaults=True)


def _compare_one(base: dict, method: str, recipe_path: Path, out: Path, overwrite: bool) -> Row:
    data = method_recipe(base, method, out)
    absolute_data_paths(data, recipe_path.parent)
    recipe_file = out / f"{method}.yaml"
    lr = (data.get("train") or {}).get("lr") or METHODS[method].default_lr
    atomic_write_text(recipe_file, yaml.safe_dump(data, sort_keys=False))
    _, problems = check_recipe(recipe_file)
    if problems:
        reason = problems[0].message
        log.warning("%s: skipped (%s)", method, reason)
        return Row(method=method, status=f"not run: {reason}")
    log.info("compare: running %s", method)
    code, stderr, wall = run_one(recipe_file, overwrite)
    log_file = out / f"{method}.log"
    atomic_write_text(log_file, stderr)
    if code != 0:
        reason = error_line(stderr)
        log.warning("%s: failed: %s (full output: %s)", method, reason, log_file)
        return Row(method=method, status=f"failed: {reason}", lr=lr, log=str(log_file))
    row = row_from_run(method, out / method, wall, lr)
    row.log = str(log_file)
    return row


def error_line(stderr: str) -> str:
    """The first line of the error `finetune run` printed, with its code: the reason, not the
    catalogue pointer that ends the message ("(E202; see docs/errors.md)")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith(("error:", "unexpected error:"))]
    if not starts:
        return lines[-1] if lines else "no output"
    first = lines[starts[-1]].removeprefix("error:").strip()
    code = next((c for c in lines[starts[-1] :] if re.fullmatch(r"\(E\d{3};.*\)", c)), "")
    return f"{first} {code.split(';')[0]})" if code else first


# --------------------------------------------------------------------------- report


def human_size(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| method | quality | trainable parameters | peak memory | train time | size on disk |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.status != "ok":
            why = r.status + (f" (log: {r.log})" if r.log else "")
            lines.append(f"| `{r.method}` | {_cell(why)} | | | | |")
            continue
        share = 100 * (r.trainable or 0) / max(r.total or 1, 1)
        memory, size = human_size(r.peak_memory_bytes), human_size(r.artifact_bytes)
        seconds = "–" if r.train_seconds is None else f"{r.train_seconds:.0f} s"
        lines.append(
            f"| `{r.method}` | {quality_cell(r)} | {r.trainable or 0:,} ({share:.2f}%) "
            f"| {memory} | {seconds} | {size} |"
        )
    return "\n".join(lines) + "\n"


def quality_cell(row: Row) -> str:
    """A run without eval data has no quality to show: say so instead of a number."""
    if row.quality is None:
        return "no eval data"
    return f"{row.quality_metric} {row.quality:.4f}"


def _cell(text: str) -> str:
    """One markdown table cell: a '|' or line break in an error message would split the row."""
    return " ".join(text.split()).replace("|", "\\|")


def write_report(rows: list[Row], out: Path, recipe_path: Path) -> None:
    table = markdown(rows)
    atomic_write_text(out / "report.md", f"# finetune compare: {recipe_path}\n\n{table}")
    atomic_write_json(out / "report.json", [asdict(r) for r in rows])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    atomic_write_text(out / "report.csv", buffer.getvalue())
    plot(rows, out / "report.png")


def plot(rows: list[Row], path: Path) -> None:
    """Quality against trainable parameters (log scale), one labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.status == "ok" and r.quality is not None and r.trainable]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in done:
        ax.scatter(float(r.trainable or 0), float(r.quality or 0), s=60)
        label = f"{r.method}\n{r.train_seconds or 0:.0f} s, {human_size(r.artifact_bytes)}"
        ax.annotate(
            label, (r.trainable, r.quality), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    ax.set_xscale("log")
    ax.margins(x=0.35, y=0.2)  # room for the labels of the outermost points
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(done[0].quality_metric if done else "quality")
    ax.set_title("finetune compare: quality vs trainable parameters")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
