"""Our metric wrappers against the reference implementations called directly."""

from __future__ import annotations

import pytest

from finetune.tasks.metrics import bleu, chrf, reference_streams, rouge, sentence_lines

HYPS = [
    "The cat sat on the mat.",
    "A man is walking his dog in the park. It is sunny.",
    "Two people are talking about dinner tomorrow.",
    "completely unrelated words here",
]
REFS = [
    ["The cat is sitting on the mat.", "A cat sat on a mat."],
    ["A man walks a dog through the park. The sun shines."],
    ["Two people discuss tomorrow's dinner.", "They talk about dinner.", "Dinner plans."],
    ["Nothing matches this reference at all."],
]


def test_sacrebleu_equals_corpus_bleu_with_reference_streams():
    import sacrebleu

    streams = [
        [REFS[0][0], REFS[1][0], REFS[2][0], REFS[3][0]],
        [REFS[0][1], None, REFS[2][1], None],
        [None, None, REFS[2][2], None],
    ]
    assert reference_streams(REFS) == streams
    got = bleu(HYPS, REFS)
    want = sacrebleu.corpus_bleu(HYPS, streams)
    assert got["bleu"] == pytest.approx(want.score, abs=1e-4)
    assert got["bleu"] > 0
    assert got["bleu_signature"].startswith("nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp")
    assert got["bleu_signature"].endswith("version:" + sacrebleu.__version__)
    # one reference each: the signature says so, and the score matches the single stream
    single = bleu(HYPS, [r[:1] for r in REFS])
    assert single["bleu_signature"].startswith("nrefs:1|")
    assert single["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPS, [[r[0] for r in REFS]]).score, abs=1e-4
    )
    # more references can only help BLEU here
    assert got["bleu"] > single["bleu"]


def test_chrf_equals_corpus_chrf():
    import sacrebleu

    got = chrf(HYPS, REFS)
    want = sacrebleu.corpus_chrf(HYPS, reference_streams(REFS))
    assert got["chrf"] == pytest.approx(want.score, abs=1e-4)
    assert got["chrf_signature"].startswith("nrefs:var|case:mixed|eff:yes|nc:6|nw:0")


def test_multi_reference_rouge_is_mean_of_rouge_score_max():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    got = rouge(HYPS, REFS)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        best = []
        for hyp, refs in zip(HYPS, REFS):
            scores = [
                scorer.score(sentence_lines(r), sentence_lines(hyp))[key].fmeasure for r in refs
            ]
            best.append(max(scores))
        assert got[key] == pytest.approx(100 * sum(best) / len(best), abs=1e-3), key


def test_rouge_takes_the_best_reference_and_stems():
    exact_second = rouge(["dinner plans"], [["a b c d", "Dinner plans."]])
    assert exact_second["rouge1"] == pytest.approx(100.0)
    stemmed = rouge(["the dogs were running"], [["the dog was run"]])
    assert stemmed["rouge1"] == pytest.approx(75.0)  # dogs/dog and running/run match


def test_rouge_lsum_uses_sentence_lines():
    assert sentence_lines("One here. Two there! Three?  Four") == (
        "One here.\nTwo there!\nThree?\nFour"
    )
    # sentence order swapped: L (one LCS) drops, Lsum (per-sentence union LCS) does not
    hyp, ref = "b c d. a x y.", "a x y. b c d."
    got = rouge([hyp], [[ref]])
    assert got["rougeLsum"] == pytest.approx(100.0)
    assert got["rougeL"] < 100.0


def test_mismatched_lengths_are_errors():
    with pytest.raises(ValueError):
        bleu(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError):
        rouge(["a"], [[]])
