"""GLUE's metrics recomputed on bootstrap resamples of a run's eval examples.

Matthews correlation, F1 and Pearson / Spearman correlation are not means of per-example
scores, so their intervals cannot come from averaging anything per example: each resample's
value is the metric computed afresh on the resampled (prediction, reference) pairs. Class
metrics come from the resample's confusion matrix (the formulas scikit-learn uses, checked
against it in the tests), which keeps 1,000 resamples of a few thousand examples fast;
correlations from the resampled pairs themselves (Spearman ranks each resample again, ties
included). The mean squared error is a mean, so it resamples like accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finetune.tasks.scores import positive_label

Metric = Callable[[Sequence[int]], float]
CLASS_METRICS = ("f1_macro", "matthews_correlation", "f1")
CORRELATIONS = ("pearson", "spearmanr")


def _confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(truth * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)


def mcc_of(matrix: np.ndarray) -> float:
    """Matthews correlation of a confusion matrix (rows: truth), multi-class (Gorodkin)."""
    t_sum, p_sum = matrix.sum(axis=1), matrix.sum(axis=0)
    n, correct = matrix.sum(), np.trace(matrix)
    cov_tp = correct * n - t_sum @ p_sum
    cov_pp = n * n - p_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    denominator = cov_tt * cov_pp
    return 0.0 if denominator == 0 else float(cov_tp / math.sqrt(denominator))


def f1s_of(matrix: np.ndarray) -> np.ndarray:
    """Each class's F1 (NaN for a class neither in the truth nor in the predictions)."""
    tp = np.diag(matrix)
    denominator = matrix.sum(axis=1) + matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def class_metric(records: list[dict[str, Any]], labels: list[str], metric: str) -> Metric:
    """`metric` of the predicted vs reference labels on any resample (a list of indices)."""
    names = list(labels) or sorted({str(r["reference"]) for r in records})
    names += sorted({str(r[k]) for r in records for k in ("label", "reference")} - set(names))
    ids = {name: i for i, name in enumerate(names)}
    truth = np.array([ids[str(r["reference"])] for r in records], dtype=np.int64)
    pred = np.array([ids[str(r["label"])] for r in records], dtype=np.int64)
    positive = positive_label(labels)
    k = len(names)

    def value(idx: Sequence[int]) -> float:
        at = np.asarray(idx, dtype=np.int64)
        matrix = _confusion(truth[at], pred[at], k)
        if metric == "matthews_correlation":
            return mcc_of(matrix)
        f1 = f1s_of(matrix)
        if metric == "f1":
            score = f1[ids[positive]] if positive is not None else math.nan
            return 0.0 if math.isnan(score) else float(score)  # sklearn's zero_division=0
        return float(np.nanmean(f1))

    return value


def regression_metric(records: list[dict[str, Any]], metric: str) -> Metric:
    """Pearson or Spearman correlation of the predicted vs reference numbers on a resample;
    NaN where a resample is constant (no correlation is defined there)."""
    from scipy.stats import rankdata

    pred = np.array([float(r["score"]) for r in records])
    truth = np.array([float(r["reference"]) for r in records])

    def value(idx: Sequence[int]) -> float:
        at = np.asarray(idx, dtype=np.int64)
        a, b = pred[at], truth[at]
        if metric == "spearmanr":
            a, b = rankdata(a), rankdata(b)
        if a.std() == 0 or b.std() == 0:
            return math.nan
        return float(np.corrcoef(a, b)[0, 1])

    return value
