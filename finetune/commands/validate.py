"""`finetune validate`: every problem of every recipe named (or found in a directory) at once,
checked by `check_recipe` (finetune/setup/checks.py) without loading any weights."""

from __future__ import annotations

from pathlib import Path

from finetune.console import escape, print_err, print_out
from finetune.errors import FinetuneError
from finetune.setup.checks import check_recipe

__all__ = ["check_recipe", "expand_recipes", "validate_all"]


def validate_all(paths: list[Path], overrides: list[str], scan_rows: bool) -> int:
    """Check every recipe named or found, printing a ✓ or its problems; how many failed."""
    failed = 0
    for path in expand_recipes(paths):
        _, problems = check_recipe(path, overrides, scan_rows=scan_rows)
        if problems:
            failed += 1
            print_err(f"[bold red]✗[/] {escape(str(path))}: {len(problems)} problem(s)")
            for problem in problems:
                print_err("  - " + escape(problem.render()))
        else:
            print_out(f"[green]✓[/] {escape(str(path))}")
    return failed


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
