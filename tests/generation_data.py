"""Toy summarization and translation sets in the tiny models' vocabulary (tests.tiny_models.WORDS).

Both are learnable by a tiny model in a few steps: the summary is the subject-verb-object core
of a chatty sentence; the translation is a word-for-word English -> German mapping.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

EN_DE = {
    "a": "ein",
    "the": "der",
    "man": "mann",
    "woman": "frau",
    "dog": "hund",
    "cat": "katze",
    "runs": "läuft",
    "walks": "geht",
    "in": "im",
    "park": "park",
    "street": "straße",
    "and": "und",
    "with": "mit",
    "red": "rot",
    "blue": "blau",
    "green": "grün",
    "small": "klein",
    "big": "groß",
    "young": "jung",
    "old": "alt",
    "two": "zwei",
    "three": "drei",
    "people": "leute",
    "is": "ist",
}
SUBJECTS = ["man", "woman", "dog", "cat", "people"]
VERBS = ["runs", "walks"]
PLACES = ["park", "street"]
ADJECTIVES = ["red", "blue", "green", "small", "big", "young", "old"]
CHATTER = ["hello", "how", "are", "you", "doing", "today", "fine", "thanks", "talk", "about"]


def _clause(rng: random.Random) -> list[str]:
    return ["a", rng.choice(ADJECTIVES), rng.choice(SUBJECTS), rng.choice(VERBS), "in", "the"] + [
        rng.choice(PLACES)
    ]


def summary_rows(n: int, seed: int) -> list[dict]:
    """{dialogue, summary}: chatter around one clause; the summary is the clause."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        clause = _clause(rng)
        before = rng.sample(CHATTER, rng.randint(1, 5))
        after = rng.sample(CHATTER, rng.randint(0, 8))
        rows.append({"dialogue": " ".join(before + clause + after), "summary": " ".join(clause)})
    return rows


def translation_rows(n: int, seed: int) -> list[dict]:
    """{en, de}: word-for-word translations of short clauses."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = _clause(rng)[: rng.randint(3, 7)]
        rows.append({"en": " ".join(words), "de": " ".join(EN_DE[w] for w in words)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def write_aligned(directory: Path, split: str, rows: list[dict]) -> str:
    """rows -> split.en / split.de line-aligned files; returns the 'split.{lang}' pattern."""
    directory.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        lines = "".join(row[lang] + "\n" for row in rows)
        (directory / f"{split}.{lang}").write_text(lines, encoding="utf-8")
    return str(directory / f"{split}.{{lang}}")
