"""Extra metrics from Hugging Face `evaluate` (the recipe's `eval.metrics`).

The built-in metrics stay computed with scikit-learn / rouge_score / sacreBLEU directly (same
numbers, no download). `eval.metrics` adds any `evaluate` module on top, computed on the same
predictions and references, and written to metrics.json and the model card:

- a local metric directory (`./metrics/exact_match`, holding `exact_match.py`) or script works
  offline: `evaluate.load` imports it like any module;
- a Hub metric name (`accuracy`, `owner/metric`) needs the Hub once (then evaluate's cache).

Inputs: classification gives label ids (predicted, true), regression the predicted and true
numbers; generation gives the generated texts
and, as references, one string per example, or a list of strings per example when the metric
declares list references (or an example has several references).

`validate` loads every listed metric (so a run cannot fail after training because a metric is
missing) and rewrites local paths as resolved, as the run directory records data paths.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from finetune.errors import MetricError, Problem, first_line

if TYPE_CHECKING:  # pragma: no cover
    from evaluate import EvaluationModule

    from finetune.recipe.sections import EvalConfig
    from finetune.tasks.base import Example, Task
    from finetune.types import JSON, JSONObject

log = logging.getLogger(__name__)

LOCAL_FIX = (
    "a Hub metric needs the network once; offline, point eval.metrics at a local metric "
    "directory instead (a folder NAME/ holding NAME.py, an evaluate.Metric subclass), "
    "e.g. eval.metrics: [./metrics/my_metric]"
)


def local_path(spec: str, base_dir: Path | None = None) -> Path | None:
    """The local file or directory `spec` names, or None when it is a Hub metric name."""
    from finetune.data.readers import resolve_path

    path = resolve_path(spec, base_dir)
    if path.exists():
        return path.resolve()
    explicit = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(".py")
    return path if explicit else None


@functools.cache
def load_metric(spec: str) -> EvaluationModule:
    """`evaluate.load` once per process; failures become a MetricError naming the fix."""
    path = local_path(spec)
    if path is not None and not path.exists():
        raise MetricError(
            f"eval.metrics: {spec!r}: no such metric file or directory",
            fix="a local metric is a directory NAME/ holding NAME.py (or the .py file itself)",
        )
    try:
        import evaluate

        evaluate.logging.set_verbosity_error()
        # in memory: no cache files that two processes of a distributed run would fight over
        return evaluate.load(str(path) if path is not None else spec, keep_in_memory=True)
    except Exception as exc:
        message = first_line(exc)
        fix = LOCAL_FIX if path is None else "check the script: it must define one evaluate.Metric"
        raise MetricError(f"eval.metrics: {spec!r} cannot be loaded: {message}", fix=fix) from None


def metric_problems(evaluation: EvalConfig, recipe_path: Path) -> list[Problem]:
    """Load every `eval.metrics` entry now (validate), with local paths resolved in place."""
    problems = []
    resolved = []
    for i, spec in enumerate(evaluation.metrics):
        path = local_path(spec, recipe_path.parent)
        name = str(path) if path is not None and path.exists() else spec
        resolved.append(name)
        try:
            load_metric(name)
        except MetricError as exc:
            problems.append(Problem(f"{recipe_path}: eval.metrics[{i}]", exc.message, exc.fix))
    evaluation.metrics = resolved
    return problems


def _wants_lists(module: EvaluationModule) -> bool | None:
    """Whether the module declares list references (True), single ones (False) or both (None)."""
    features = getattr(module, "features", None)
    if features is None or isinstance(features, list):
        return None
    ref = features.get("references")
    return isinstance(ref, list) or type(ref).__name__ in ("Sequence", "List", "LargeList")


def metric_inputs(
    task: Task, module: EvaluationModule, predictions: list[Any], examples: list[Example]
) -> tuple[Sequence[object], Sequence[object]]:
    """(predictions, references) in the form `evaluate` modules take for this task."""
    if not task.is_generation:  # class ids, or numbers for regression
        return task.evaluate_inputs(predictions, examples)  # type: ignore[attr-defined]
    references = [list(ex.target) for ex in examples]
    wants = _wants_lists(module)
    several = any(len(refs) != 1 for refs in references)
    if wants is False and several:
        raise MetricError(
            f"eval.metrics: {module.name!r} takes one reference per example, and some examples "
            "have several",
            fix="use one reference column, or a metric that accepts lists of references",
        )
    if wants is True or (wants is None and several):
        return list(predictions), references
    return list(predictions), [refs[0] for refs in references]


def _plain(value: object) -> JSON:
    """numpy scalars/arrays -> JSON values; NaN -> None (metrics.json stays strict JSON)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return cast("JSON", value)  # what `compute` returns besides containers: numbers, text


def extra_metrics(
    task: Task, predictions: list[Any], examples: list[Example], taken: set[str]
) -> JSONObject:
    """The recipe's `eval.metrics`, computed; a key already taken gets the module's name first."""
    results: JSONObject = {}
    for spec in task.settings.extra_metrics:
        module = load_metric(spec)
        preds, refs = metric_inputs(task, module, predictions, examples)
        try:
            scores = module.compute(predictions=preds, references=refs) or {}
        except Exception as exc:
            raise MetricError(
                f"eval.metrics: {spec!r} failed on this task's predictions: {first_line(exc)}",
                fix="classification passes label ids, regression numbers, generation texts "
                "(see README, 'Extra metrics')",
            ) from None
        for key, value in scores.items():
            name = key if key not in taken and key not in results else f"{module.name}_{key}"
            results[name] = _plain(value)
    return results
