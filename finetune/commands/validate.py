"""`finetune validate`: every problem of every recipe named (or found in a directory) at once,
checked by `check_recipe` (finetune/setup/checks.py) without loading any weights."""

from __future__ import annotations

from pathlib import Path

from finetune.errors import FinetuneError
from finetune.setup.checks import check_recipe

__all__ = ["check_recipe", "expand_recipes"]


def expand_recipes(paths: list[Path]) -> list[Path]:
    """Recipe files named, or found under named directories (not their data/ or accelerate/)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # data/ holds data files, accelerate/ launcher configs (recipes/accelerate/), suites/
            # lists of recipes (recipes/suites/)
            skipped = {"data", "accelerate", "suites"}
            found = sorted(
                p
                for p in path.rglob("*.y*ml")
                if not skipped.intersection(p.parts[len(path.parts) :])
            )
            if not found:
                raise FinetuneError(
                    f"{path}: no .yaml recipes in this directory",
                    fix="name recipe files or a directory holding them",
                )
            files.extend(found)
        elif "=" in path.name and not path.exists():
            raise FinetuneError(
                f"{path}: no such recipe; it looks like an override",
                fix=f"validate takes overrides as --set {path} (run takes both forms)",
            )
        else:
            files.append(path)
    return files
