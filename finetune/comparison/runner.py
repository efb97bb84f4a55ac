"""The one runner behind `compare` and `sweep`: a recipe per point, one `finetune run` each.

Each point runs as its own subprocess, so a crash or an unsupported combination costs one row,
not the whole report, and each run's peak memory is its own (in-process runs would report the
high-water mark of every run before it). Finished points are not rerun: a point whose run
directory is finished and whose recipe is unchanged is read back, so an interrupted comparison
or sweep resumes where it stopped. Each row records wall and CPU time (its own process's, also
when several run at once: `--jobs`, comparison/jobs.py) and the load average before and after,
because a training time measured on a busy machine says little.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import yaml

from finetune.comparison.jobs import Slot, cpu_cores
from finetune.jsonvalues import as_object, child, copy_object, number
from finetune.run.files import atomic_write_text, is_finished
from finetune.run.layout import RunPaths, complete_checkpoints
from finetune.setup.checks import check_recipe
from finetune.tasks import TASKS
from finetune.tasks.main_metric import lower_is_better

if TYPE_CHECKING:  # pragma: no cover
    from finetune.comparison.recipes import RecipeData
    from finetune.errors import Problem
    from finetune.types import JSON

log = logging.getLogger(__name__)

QUALITY_KEYS = tuple(task.main_metric for task in TASKS.values())


@dataclass
class Timing:
    wall_seconds: float
    cpu_seconds: float
    load_before: float
    load_after: float
    cores: int

    @property
    def busy(self) -> bool:
        """The machine ran more work than it has cores: times are stretched by sharing."""
        return max(self.load_before, self.load_after) > self.cores


class _SearchScore(TypedDict):
    lr: float
    steps: int
    metric: str
    score: float | None
    status: str


class SearchEntry(_SearchScore, total=False):
    """One rate of a `--tune` search and its held-out score (None: the run failed or had
    no score), with that score's 95% bootstrap interval over the held-out rows when known."""

    low: float | None
    high: float | None
    one_answer: bool  # the run gave every held-out row the same label: it learned nothing


@dataclass
class Row:
    method: str
    status: str
    name: str = ""  # the point's run directory under the report's folder
    point: dict[str, JSON] = field(default_factory=dict)  # sweep: the overrides of this point
    quality_metric: str = ""
    quality: float | None = None
    quality_low: float | None = None  # 95% bootstrap interval over eval examples
    quality_high: float | None = None
    quality_std: float | None = None  # across seeds (--seeds N > 1)
    seeds: list[int] = field(default_factory=list)
    per_seed: list[float] = field(default_factory=list)
    within_noise: bool | None = None  # of the best row's quality (paired bootstrap)
    verdict: str = ""  # "best", "within noise of best", "below best"
    baseline: bool = False  # the zero-shot row (a method that trains nothing)
    trainable: int | None = None
    total: int | None = None
    peak_memory_bytes: int | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    load_before: float | None = None
    load_after: float | None = None
    cores: int | None = None
    artifact_bytes: int | None = None
    lr: float | None = None
    tuned: bool = False
    search: list[SearchEntry] = field(default_factory=list)  # --tune: rate -> held-out score
    runs: list[str] = field(default_factory=list)  # run directories (one per seed)
    log: str | None = None  # the point's `finetune run` output: why it failed, in full


@dataclass
class Point:
    """One run of a comparison: its recipe, the name of its run directory under the report's
    folder, and the method it shows in the report."""

    data: RecipeData
    name: str
    method: str


def timed_run(cmd: list[str], log_file: Path, env: dict[str, str]) -> tuple[int, Timing]:
    """Run `cmd` with its output in `log_file`; its own CPU time comes from wait4, so runs in
    parallel (`--jobs`) do not count each other's."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with log_file.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=output, env={**os.environ, **env}
        )
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except KeyboardInterrupt:  # the run got the signal too: let it write its checkpoint
            process.wait()
            raise
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    cpu = usage.ru_utime + usage.ru_stime
    timing = Timing(round(wall, 1), round(cpu, 1), load_before, os.getloadavg()[0], cpu_cores())
    return process.returncode, timing


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


def recipe_text(data: Mapping[str, JSON]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def recipe_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reusable(recipe_file: Path, run_dir: Path, timing_file: Path, text: str) -> bool:
    """A finished run of exactly this recipe: read it back instead of training again. The
    digest is the one the runner wrote after that run succeeded (with its timing), so a
    recipe written for a point that was then refused or failed never vouches for an older
    run in the same directory. A run from before digests were kept counts when its recipe
    file is this text and was written before the run finished."""
    paths = RunPaths(run_dir)
    if not (paths.finished.is_file() and paths.metrics.is_file()):
        return False
    saved = json.loads(timing_file.read_text(encoding="utf-8")) if timing_file.is_file() else {}
    if "recipe_sha256" in saved:
        return bool(saved["recipe_sha256"] == recipe_digest(text))
    return (
        recipe_file.is_file()
        and recipe_file.read_text(encoding="utf-8") == text
        and recipe_file.stat().st_mtime <= paths.finished.stat().st_mtime
    )


def resumable(recipe_file: Path, run_dir: Path, text: str) -> bool:
    """An unfinished run of this same recipe with a complete checkpoint (a comparison
    interrupted in the middle of a point): continued with --resume rather than started
    again. A checkpoint cut off while being written is nothing to resume from."""
    return (
        run_dir.is_dir()
        and not is_finished(run_dir)
        and bool(complete_checkpoints(RunPaths(run_dir).checkpoints))
        and recipe_file.is_file()
        and recipe_file.read_text(encoding="utf-8") == text
    )


def run_point(point: Point, out: Path, overwrite: bool, slot: Slot | None = None) -> Row:
    """Write `out/<name>.yaml` (output in `out/<name>/`), run it unless it already finished."""
    name, method = point.name, point.method
    run_dir = out / name
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    output = {**as_object(point.data.get("output")), "dir": str(run_dir)}
    data: RecipeData = {**point.data, "output": output}
    text = recipe_text(data)
    recipe_file = out / f"{name}.yaml"
    lr = number(as_object(data.get("train")).get("lr"))
    log_file = out / f"{name}.log"
    timing_file = out / f"{name}.timing.json"
    if not overwrite and reusable(recipe_file, run_dir, timing_file, text):
        log.info("%s: finished earlier, reading it back", name)
        row = row_from_run(method, name, run_dir, lr, _saved_timing(timing_file))
        row.log = str(log_file)
        return row
    resume = not overwrite and resumable(recipe_file, run_dir, text)
    atomic_write_text(recipe_file, text)
    _, problems = check_recipe(recipe_file)
    if problems:
        reason = problem_line(problems[0])
        log.warning("%s: skipped (%s)", name, reason)
        return Row(method=method, name=name, status=f"not run: {reason}", lr=lr)
    cmd = [sys.executable, "-m", "finetune", "run", str(recipe_file), "--no-progress"]
    if resume:
        cmd.append("--resume")
        log.info("resuming %s from its checkpoint", name)
    elif run_dir.exists():  # this report's own point: replaced (a finished one only if changed)
        cmd.append("--overwrite")
    log.info("running %s", name)
    returncode, timing = timed_run(cmd, log_file, slot.env if slot else {})
    if resume and returncode == 2:  # the resume refused (changed data, no usable checkpoint)
        reason = error_line(log_file.read_text(encoding="utf-8", errors="replace"))
        log.warning("%s: could not resume (%s); training it again", name, reason)
        cmd = [*cmd[:-1], "--overwrite"]
        returncode, timing = timed_run(cmd, log_file, slot.env if slot else {})
    if returncode != 0:
        reason = error_line(log_file.read_text(encoding="utf-8", errors="replace"))
        log.warning("%s: failed: %s (full output: %s)", name, reason, log_file)
        return Row(method=method, name=name, status=f"failed: {reason}", lr=lr, log=str(log_file))
    record = {**timing.__dict__, "recipe_sha256": recipe_digest(text)}
    atomic_write_text(timing_file, json.dumps(record) + "\n")
    row = row_from_run(method, name, run_dir, lr, timing)
    row.log = str(log_file)
    return row


def _saved_timing(path: Path) -> Timing | None:
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return Timing(**{f.name: saved[f.name] for f in fields(Timing)})


def problem_line(problem: Problem) -> str:
    """A recipe problem as a report row shows it: the key and the reason, without the long
    path of the point's recipe file ("method.rr: unknown key (did you mean 'r'?)")."""
    key = problem.where.rpartition(": ")[2] if ": " in problem.where else ""
    text = f"{key}: {problem.message}" if key else problem.message
    return f"{text} ({problem.fix})" if problem.fix else text


def quality_key(metrics: Mapping[str, JSON], main: str | None = None) -> str:
    """The run's main metric (run.json's: `task.metric` or the task's default), else the eval
    loss; "" when the run had no eval data. Runs from before run.json named it: the first
    task default present."""
    keys = (main,) if main else QUALITY_KEYS
    return next((k for k in (*keys, "loss") if metrics.get(k) is not None), "")


def run_main_metric(run_dir: Path) -> str | None:
    """The main metric a finished run recorded in run.json (None: an older run)."""
    from finetune.run.info import RunInfo

    path = RunPaths(run_dir).run_info
    return RunInfo.read(path).main_metric if path.is_file() else None


def row_from_run(
    method: str, name: str, run_dir: Path, lr: float | None, timing: Timing | None
) -> Row:
    metrics = json.loads(RunPaths(run_dir).metrics.read_text(encoding="utf-8"))
    key = quality_key(metrics, run_main_metric(run_dir))
    row = Row(
        method=method,
        name=name,
        status="ok",
        quality_metric=key,  # "" and quality None: the recipe has no eval data
        quality=metrics.get(key),
        trainable=metrics.get("trainable_parameters"),
        total=metrics.get("total_parameters"),
        peak_memory_bytes=metrics.get("peak_memory_bytes"),
        train_seconds=metrics.get("train_seconds"),
        artifact_bytes=metrics.get("artifact_bytes"),
        lr=lr,
    )
    if timing is not None:
        row.wall_seconds, row.cpu_seconds = timing.wall_seconds, timing.cpu_seconds
        row.load_before, row.load_after = timing.load_before, timing.load_after
        row.cores = timing.cores
    return row


def seeded_points(point: Point, seeds: list[int]) -> list[Point]:
    """The point once per seed (`name-seedN` when several)."""
    if len(seeds) <= 1:
        return [point]
    out = []
    for seed in seeds:
        data = copy_object(point.data)
        child(data, "train")["seed"] = seed
        out.append(Point(data, f"{point.name}-seed{seed}", point.method))
    return out


def fold_point(rows: list[Row], point: Point, seeds: list[int]) -> Row:
    """The seeds' rows of one point folded into one row; the first failed seed's row if any."""
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        return failed[0]
    return fold_seeds(rows, point.name, seeds if len(seeds) > 1 else [])


def fold_seeds(rows: list[Row], name: str, seeds: list[int]) -> Row:
    first = rows[0]
    first.runs = [r.name for r in rows]
    first.name = name
    if len(rows) == 1:
        return first
    values = [r.quality for r in rows if r.quality is not None]
    if values:
        mean = sum(values) / len(values)
        first.quality, first.per_seed, first.seeds = mean, values, seeds
        first.quality_std = spread(values) or 0.0
    for key in ("train_seconds", "wall_seconds", "cpu_seconds"):
        times = [getattr(r, key) for r in rows]
        setattr(first, key, None if None in times else round(sum(times), 1))
    loads = [x for r in rows for x in (r.load_before, r.load_after) if x is not None]
    first.load_before, first.load_after = (loads[0], max(loads)) if loads else (None, None)
    return first


def spread(values: list[float]) -> float | None:
    """The sample standard deviation (n - 1) of the seeds' scores; None below two."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def higher_is_better(metric: str) -> bool:
    return not lower_is_better(metric)
