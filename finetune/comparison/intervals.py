"""Noise bars for `compare` and `sweep`: 95% bootstrap intervals over eval examples.

A difference of two points on 872 SST-2 sentences is within noise; a report that ranks it
anyway invites a wrong verdict. Each run's quality is recomputed on resamples of its eval
examples (the same resampled indices for every run, so differences are paired): accuracy from
per-example correctness, ROUGE from per-example scores (it is a mean), and BLEU from per-example
n-gram statistics summed per resample, which is exactly corpus BLEU recomputed on the resample.
Matthews correlation, F1 and Pearson / Spearman correlation are recomputed from each resample's
(prediction, reference) pairs (`resampled.py`); the MSE is a mean of squared errors.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.comparison.runner import Row
    from finetune.types import JSON, JSONObject

from finetune.comparison.resampled import (
    CLASS_METRICS,
    CORRELATIONS,
    class_metric,
    regression_metric,
)
from finetune.jsonvalues import number
from finetune.tasks.main_metric import lower_is_better

RESAMPLES = 1000  # enough for a stable 95% interval, fast for thousands of examples
SEED = 0


@dataclass
class Scores:
    """One run's eval examples, scored so that any resample's metric is cheap to compute."""

    n: int
    value: Callable[[Sequence[int]], float]  # the metric on a resample (a list of indices)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> list[list[int]]:
    """Seeded bootstrap resamples of range(n); shared by every run of a report (pairing)."""
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(resamples)]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """The central 95% of bootstrap values (resamples where the metric is undefined, such as a
    correlation of a constant, are left out)."""
    defined = [v for v in values if not math.isnan(v)]
    return percentile(defined, 0.025), percentile(defined, 0.975)


def mean_scores(per_example: list[float]) -> Scores:
    """A metric that is the mean of per-example scores (accuracy, ROUGE)."""

    def value(idx: Sequence[int]) -> float:
        return sum(per_example[i] for i in idx) / max(len(idx), 1)

    return Scores(n=len(per_example), value=value)


def bleu_scores(predictions: list[str], references: list[list[str]], lang: str | None) -> Scores:
    """Corpus BLEU on any resample, from each example's n-gram statistics (sacreBLEU's)."""
    from finetune.tasks.metrics import bleu_metric, reference_streams

    metric = bleu_metric(lang)
    stats = metric._extract_corpus_statistics(predictions, reference_streams(references))

    def value(idx: Sequence[int]) -> float:
        total = [sum(stats[i][k] for i in idx) for k in range(len(stats[0]))]
        return float(metric._compute_score_from_stats(total).score)

    return Scores(n=len(predictions), value=value)


def read_predictions(path: Path) -> list[JSONObject]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def references(record: Mapping[str, JSON]) -> list[str]:
    """A generation record's reference texts: `references`, else the one `reference`."""
    refs = record.get("references")
    if isinstance(refs, list) and refs:
        return [str(ref) for ref in refs]
    return [str(record.get("reference") or "")]


def run_scores(run_dir: Path, metric: str) -> Scores | None:
    """The run's eval examples scored for `metric`; None without references to score against."""
    from finetune.run.layout import RunPaths

    paths = RunPaths(run_dir)
    if not paths.predictions.is_file():
        return None
    records = read_predictions(paths.predictions)
    if not records or "reference" not in records[0]:
        return None
    if metric == "accuracy":
        return mean_scores([float(r["label"] == r["reference"]) for r in records])
    if metric in CLASS_METRICS:
        return Scores(len(records), class_metric(records, _labels(paths.run_info), metric))
    if metric == "mse":  # a mean of squared errors: it resamples as a mean
        return mean_scores([(_real(r["score"]) - _real(r["reference"])) ** 2 for r in records])
    if metric in CORRELATIONS:
        return Scores(len(records), regression_metric(records, metric))
    predictions = [str(r.get("prediction", "")) for r in records]
    refs = [references(r) for r in records]
    if metric.startswith("rouge"):
        from finetune.tasks.metrics import rouge

        return mean_scores([rouge([p], [rs])[metric] for p, rs in zip(predictions, refs)])
    if metric == "bleu":
        return bleu_scores(predictions, refs, _target_lang(paths.recipe))
    return None


def one_answer(run_dir: Path) -> bool:
    """Whether a classification run gave every eval example the same label. Its score is then
    the score of always answering that class (on MRPC's hold-out, F1 0.77 for "paraphrase"),
    which can lie within noise of a run that learned: a rate search must not read it as one."""
    from finetune.run.layout import RunPaths

    path = RunPaths(run_dir).predictions
    if not path.is_file():
        return False
    labels = {json.dumps(r.get("label")) for r in read_predictions(path) if "label" in r}
    return len(labels) == 1


def _real(value: JSON) -> float:
    """A regression score or target of predictions.jsonl (written as a number)."""
    found = number(value)
    if found is None:
        raise ValueError(f"not a number in predictions.jsonl: {value!r}")
    return found


def _labels(run_info: Path) -> list[str]:
    """The run's label set in its order (run.json), which fixes the positive class."""
    if not run_info.is_file():
        return []
    info = json.loads(run_info.read_text(encoding="utf-8"))
    return list((info.get("task_state") or {}).get("labels") or [])


def _target_lang(recipe_file: Path) -> str | None:
    import yaml

    if not recipe_file.is_file():
        return None
    data = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
    return (data.get("task") or {}).get("target_lang")


def bootstrap(scores: list[Scores], samples: list[list[int]]) -> list[float]:
    """The mean over runs (seeds) of the metric, on each resample."""
    return [sum(s.value(idx) for s in scores) / len(scores) for idx in samples]


def paired_within_noise(a: list[float], b: list[float]) -> bool:
    """Whether the 95% interval of the paired difference a - b (same resamples) contains 0."""
    lo, hi = interval([x - y for x, y in zip(a, b)])
    return lo <= 0.0 <= hi


def overlapping(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def add_intervals(rows: list[Row], out: Path) -> None:
    """Fill each ok row's 95% interval and mark rows within noise of the best one.

    Runs evaluated on the same examples share the resamples, so the comparison with the best
    row is a paired bootstrap (the interval of the difference); runs on different eval sets
    (a sweep over data options) fall back to whether the two intervals overlap."""
    boots: dict[int, list[float]] = {}
    sizes: dict[int, int] = {}
    samples: dict[int, list[list[int]]] = {}
    for i, row in enumerate(rows):
        if row.status != "ok" or row.quality is None:
            continue
        found = [run_scores(out / name, row.quality_metric) for name in row.runs or [row.name]]
        scores = [s for s in found if s is not None and s.n > 0]
        if not scores or len(scores) < len(found):
            continue
        n = scores[0].n
        if n not in samples:
            samples[n] = resample_indices(n)
        sizes[i] = n
        boots[i] = bootstrap(scores, samples[n])
        row.quality_low, row.quality_high = (round(v, 6) for v in interval(boots[i]))
    mark_noise(rows, boots, sizes)


def _bounds(row: Row) -> tuple[float, float] | None:
    """The row's 95% interval, when `add_intervals` could compute one."""
    if row.quality_low is None or row.quality_high is None:
        return None
    return row.quality_low, row.quality_high


def mark_noise(rows: list[Row], boots: dict[int, list[float]], sizes: dict[int, int]) -> None:
    ranked = [i for i, r in enumerate(rows) if r.status == "ok" and r.quality is not None]
    if len(ranked) < 2:
        return
    sign = -1.0 if lower_is_better(rows[ranked[0]].quality_metric) else 1.0
    best = max(ranked, key=lambda i: sign * (rows[i].quality or 0.0))  # ranked: all scored
    rows[best].verdict = "best"
    for i in ranked:
        mine, theirs = _bounds(rows[i]), _bounds(rows[best])
        if i == best:
            continue
        if i in boots and best in boots and sizes[i] == sizes[best]:
            rows[i].within_noise = paired_within_noise(boots[best], boots[i])
        elif mine is not None and theirs is not None:
            rows[i].within_noise = overlapping(mine, theirs)
    verdicts = {True: "within noise of best", False: "below best"}
    for i in ranked:
        noise = rows[i].within_noise
        if i != best:
            rows[i].verdict = "" if noise is None else verdicts[noise]
