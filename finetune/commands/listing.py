"""`finetune recipes` and `finetune options`: what the tool ships and accepts, as lines of
rich markup (the CLI prints them)."""

from __future__ import annotations

from pathlib import Path

from finetune.console import escape
from finetune.errors import FinetuneError


def recipe_lines(directory: Path | None) -> list[str]:
    """Each recipe in `directory` (default: the bundled ones) with its one-line description."""
    from finetune.recipe.io import recipe_description

    root = directory or _bundled_recipe_dir()
    if root is None or not root.is_dir():
        raise FinetuneError("no recipes directory found", fix="pass one: finetune recipes DIR")
    return [
        f"[bold]{escape(str(path))}[/]  {escape(recipe_description(path))}"
        for path in sorted(root.glob("*.yaml"))
    ]


def _bundled_recipe_dir() -> Path | None:
    here = Path(__file__).resolve().parent.parent.parent / "recipes"
    for candidate in (Path("recipes"), here):
        if candidate.is_dir():
            return candidate
    return None


def option_lines(section: str | None) -> list[str]:
    """Every recipe option (or one section's) with its type, default and description."""
    from finetune.docs.options import option_rows

    rows = option_rows(section)
    if not rows:
        from finetune.recipe.schema import Recipe

        raise FinetuneError(
            f"no recipe option {section!r}",
            fix="name a section: "
            + ", ".join(Recipe.model_fields)
            + " (or a key in one, e.g. train.lr)",
        )
    return [
        f"[bold]{row.key}[/]  [dim]{escape(row.type)} = {escape(row.default)}[/]  "
        f"{escape(row.description)}"
        for row in rows
    ]
