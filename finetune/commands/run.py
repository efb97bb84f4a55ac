"""`finetune run`: recipe -> checked recipe -> claimed run directory -> RunSetup -> training.

Everything that refuses a run (the recipe, the data, a finished or busy run directory, a
changed `--resume`) happens before any weight loads; `RunSetup.for_training` assembles the run
and `train_and_save` trains, evaluates and saves it (finetune/pipeline/training.py); a method
that trains nothing (`none`) is evaluated as it is instead (finetune/pipeline/zero_shot.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from finetune.errors import RecipeError
from finetune.pipeline.training import RunSummary, StartPlan, train_and_save
from finetune.pipeline.zero_shot import evaluate_untrained
from finetune.recipe.schema import Recipe
from finetune.run.claim import claimed
from finetune.run.fingerprint import run_fingerprint
from finetune.run.resume import choose_checkpoint, resume_command
from finetune.run.trackers import finish_trackers
from finetune.setup.accelerator import setup_accelerator
from finetune.setup.checks import check_recipe
from finetune.setup.run_setup import RunSetup


def output_dir(recipe: Recipe, recipe_path: Path) -> Path:
    return Path(recipe.output.dir) if recipe.output.dir else Path("runs") / recipe_path.stem


def load_checked(recipe_path: Path, overrides: list[str]) -> Recipe:
    recipe, problems = check_recipe(recipe_path, overrides)
    if problems or recipe is None:
        raise RecipeError(problems)
    return recipe.resolved()  # train.lr: null -> the method's default_lr, recorded as run


def run(
    recipe_path: Path,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> RunSummary:
    started = time.perf_counter()
    overrides = overrides or []
    recipe = load_checked(recipe_path, overrides)
    out = output_dir(recipe, recipe_path)
    accelerator = setup_accelerator(recipe, out)
    n = accelerator.num_processes
    command = resume_command(recipe_path, overrides, progress, n)

    def plan() -> StartPlan:
        """Under the lock, before any weight loads: the fingerprint `--resume` compares, and
        the verified checkpoint to continue from."""
        fingerprint = run_fingerprint(recipe, recipe_path.parent, n)
        checkpoint = None
        if resume:
            checkpoint = choose_checkpoint(out, fingerprint, recipe.train.keep_checkpoints)
        return StartPlan(command, recipe_path.parent, fingerprint, checkpoint)

    with claimed(out, accelerator, overwrite, resume, plan) as start:
        try:
            setup = RunSetup.for_training(recipe, recipe_path.parent, accelerator)
            # a method that trains nothing (the zero-shot baseline) is evaluated as it is
            verb = train_and_save if setup.method.trains else evaluate_untrained
            summary = verb(setup, out, start, progress)
        finally:
            finish_trackers(accelerator, recipe)
    summary.seconds = time.perf_counter() - started
    return summary
