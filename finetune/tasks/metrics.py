"""Standard text-generation metrics, computed offline from the reference implementations.

ROUGE comes from Google's `rouge_score` with Porter stemming, sacreBLEU and chrF from `sacrebleu`
(never `evaluate.load`, which downloads metric scripts from the Hub). Scores are on the usual
0-100 scale. Every example may have several references:

- ROUGE: per example, the reference with the best F-measure counts (`RougeScorer.score_multi`),
  then F-measures are averaged over examples (plain mean, no bootstrap).
- BLEU / chrF: one reference stream per reference position; examples with fewer references pad
  their streams with None, which sacreBLEU skips (its "nrefs:var" signature).
- ROUGE-Lsum needs one sentence per line, as in the Hugging Face summarization examples; they use
  nltk's punkt, which needs a download, so sentences are split on terminal punctuation instead.
"""

from __future__ import annotations

import re
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_lines(text: str) -> str:
    """One sentence per line, for ROUGE-Lsum (which splits summaries on newlines)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return "\n".join(p for p in parts if p)


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE F-measures x100; each example scored against its best reference."""
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        best = scorer.score_multi([sentence_lines(r) for r in refs], sentence_lines(prediction))
        for key in ROUGE_TYPES:
            totals[key] += best[key].fmeasure
    n = max(len(predictions), 1)
    return {key: round(100 * value / n, 4) for key, value in totals.items()}


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacreBLEU streams (one per reference position)."""
    width = max((len(refs) for refs in references), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu(predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
    """sacreBLEU corpus BLEU (default 13a tokenisation) and its signature string."""
    from sacrebleu.metrics import BLEU

    _check_lengths(predictions, references)
    metric = BLEU()
    score = metric.corpus_score(predictions, reference_streams(references))
    return {"bleu": round(score.score, 4), "bleu_signature": str(metric.get_signature())}


def chrf(predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
    """sacreBLEU chrF (character 6-grams, beta 2) and its signature string."""
    from sacrebleu.metrics import CHRF

    _check_lengths(predictions, references)
    metric = CHRF()
    score = metric.corpus_score(predictions, reference_streams(references))
    return {"chrf": round(score.score, 4), "chrf_signature": str(metric.get_signature())}


def length_stats(predictions: list[str]) -> dict[str, float]:
    """Mean generated length in words: a collapsed model shows up here before in ROUGE."""
    n = max(len(predictions), 1)
    return {"gen_len_words": round(sum(len(p.split()) for p in predictions) / n, 2)}


def _check_lengths(predictions: list[str], references: list[list[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"example {empty[0]} has no reference")
