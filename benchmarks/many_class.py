"""A synthetic 36-intent classification set, built deterministically, for the fairness benchmarks.

Each intent is an (action, object) pair, 6 x 6, and each appears only through one of three
synonyms inside filler words, so the model must read two words together and the 36-way head
must learn a lot: with a head at full fine-tuning's 5e-5 it is visibly slow (the issue-#15
trap), with a faster head it is learnable in a few hundred steps. Written as TSV
(text<TAB>label, string labels) like the bundled SST-2 sample.

    python benchmarks/many_class.py OUT_DIR [--train 1800] [--test 720]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ACTIONS = {
    "cancel": ["cancel", "stop", "terminate"],
    "change": ["change", "update", "modify"],
    "check": ["check", "verify", "confirm"],
    "order": ["order", "buy", "purchase"],
    "return": ["return", "refund", "send back"],
    "track": ["track", "locate", "find"],
}
OBJECTS = {
    "card": ["card", "credit card", "debit card"],
    "account": ["account", "profile", "login"],
    "delivery": ["delivery", "parcel", "package"],
    "address": ["address", "home address", "postcode"],
    "subscription": ["subscription", "membership", "plan"],
    "payment": ["payment", "transfer", "transaction"],
}
FILLER = [
    "please",
    "today",
    "now",
    "hi",
    "hello",
    "i",
    "need",
    "to",
    "want",
    "would",
    "like",
    "can",
    "you",
    "help",
    "me",
    "with",
    "my",
    "the",
    "a",
    "quickly",
    "asap",
    "thanks",
    "urgent",
    "again",
    "soon",
    "really",
    "just",
    "could",
    "someone",
    "kindly",
    "how",
    "do",
]


def sentence(rng: random.Random, action: str, obj: str) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    verb, noun = rng.choice(ACTIONS[action]), "my " + rng.choice(OBJECTS[obj])
    i = rng.randint(0, len(words))
    words[i:i] = [verb, noun]
    return " ".join(words)


def rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    labels = [(a, o) for a in ACTIONS for o in OBJECTS]
    out = []
    for k in range(n):
        action, obj = labels[k % len(labels)]
        out.append((sentence(rng, action, obj), f"{action}_{obj}"))
    rng.shuffle(out)
    return out


def write(out: Path, train: int = 1800, test: int = 720) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, n, seed in (("train", train, 1), ("test", test, 2)):
        path = out / f"{name}.tsv"
        body = "".join(f"{text}\t{label}\n" for text, label in rows(n, seed))
        path.write_text("text\tlabel\n" + body, encoding="utf-8")
        files.append(path)
    return files[0], files[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=1800)
    parser.add_argument("--test", type=int, default=720)
    args = parser.parse_args()
    print(*write(args.out, args.train, args.test))
