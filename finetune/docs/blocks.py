"""Generated blocks in the docs: the text between a begin and an end marker comment.

The option, support, learning-rate and architecture tables are generated from the registries and
written between markers in README.md and docs/; tests compare the committed block with a fresh
rendering, so the docs cannot drift from the code.
"""

from __future__ import annotations


def replace_between(text: str, begin: str, end: str, block: str) -> str:
    """`text` with everything between the two markers replaced by `block`."""
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n\n" + block + "\n" + text[stop:]


def between(text: str, begin: str, end: str) -> str:
    """The committed block between the two markers, normalised as `replace_between` writes it."""
    return text[text.index(begin) + len(begin) : text.index(end)].strip("\n") + "\n"
