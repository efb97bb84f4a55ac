"""`finetune eval` and `finetune predict` on finished runs: everything is in the run dir."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.pipeline.inference import Record, evaluate, predict, predict_many, result_name
from finetune.setup.data import saved_split
from finetune.setup.run_setup import RunSetup
from finetune.setup.several import load_runs

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSONObject


def evaluate_run(path: Path, split: str = "eval", data: str | None = None) -> JSONObject:
    """Metrics of a saved run on its eval/test split or another file; writes eval_<name>.json."""
    setup = RunSetup.from_run_dir(path)
    examples = saved_split(setup.task, setup.recipe, split, data)
    return evaluate(setup, examples, result_name(split, data))


def predict_texts(paths: Path | list[Path], texts: list[str]) -> list[Record]:
    """One record per text for one run; for several runs one per run per text, each with the
    run's directory under "run" (runs of one base model share it: setup/several.py)."""
    if isinstance(paths, list) and len(paths) > 1:
        return predict_many(load_runs(paths), texts)
    path = paths[0] if isinstance(paths, list) else paths
    return predict(RunSetup.from_run_dir(path), texts)


def read_inputs(texts: list[str], file: Path | None) -> list[str]:
    """`predict`'s inputs: the --text values, then the non-empty lines of --file."""
    inputs = list(texts)
    if file is not None:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FinetuneError(
                f"--file {file}: cannot be read ({exc})",
                fix="pass a UTF-8 text file, one input per line",
            ) from None
        inputs += [line for line in lines if line.strip()]
    if not inputs:
        raise FinetuneError("nothing to predict", fix='pass --text "..." or --file inputs.txt')
    return inputs
