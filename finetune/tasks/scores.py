"""The metrics GLUE reports, computed by scikit-learn and scipy (imported when first used).

- classification: accuracy, macro-F1 and Matthews correlation (CoLA's metric) always; with
  exactly two labels also `f1`, the F1 of the positive class (MRPC's metric, beside accuracy);
- regression: Pearson and Spearman correlation (STS-B's metrics) and the mean squared error.

Names follow `evaluate`'s GLUE metric (`matthews_correlation`, `f1`, `pearson`, `spearmanr`),
so the figures read as papers and the Hub's model cards report them. The positive class of a
two-label task is the label written `1`, `true`, `yes` or `positive` (any case); failing that,
the second label in the task's label order (integers by value, text alphabetically).

A correlation is undefined when the predictions or references are constant (every eval score
the same): it is reported as null, never as a number, and never wins best-weights selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import SupportsFloat

POSITIVE_NAMES = ("1", "true", "yes", "positive")
CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "matthews_correlation", "f1")
BINARY_ONLY = ("f1",)  # computed only when the task has exactly two labels
REGRESSION_METRICS = ("pearson", "spearmanr", "mse")


def positive_label(labels: Sequence[str]) -> str | None:
    """The positive class of a two-label task (None for any other number of labels)."""
    if len(labels) != 2:
        return None
    named = [label for label in labels if label.strip().lower() in POSITIVE_NAMES]
    return named[0] if len(named) == 1 else labels[1]


def classification_scores(
    y_true: Sequence[int], y_pred: Sequence[int], positive: int | None
) -> dict[str, float]:
    """Accuracy, macro-F1 and Matthews correlation; `f1` of the class id `positive` when given.

    Macro-F1 averages over the classes present in the truth or the predictions (a training
    class that neither holds has no defined F1; counting it as 0 would punish a perfect run).
    """
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "matthews_correlation": float(matthews_corrcoef(y_true, y_pred)),
    }
    if positive is not None:
        scores["f1"] = float(
            f1_score(y_true, y_pred, pos_label=positive, average="binary", zero_division=0)
        )
    return scores


def _finite(value: SupportsFloat) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def regression_scores(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float | None]:
    """Pearson and Spearman correlation (scipy) and mean squared error (scikit-learn)."""
    import warnings

    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_squared_error

    if len(y_true) < 2 or len(set(y_true)) < 2 or len(set(y_pred)) < 2:
        pearson = spearman = None  # undefined: a constant has no correlation
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-constant input: scipy warns, the value stands
            pearson = _finite(pearsonr(y_true, y_pred)[0])
            spearman = _finite(spearmanr(y_true, y_pred)[0])
    return {
        "pearson": pearson,
        "spearmanr": spearman,
        "mse": float(mean_squared_error(y_true, y_pred)),
    }
