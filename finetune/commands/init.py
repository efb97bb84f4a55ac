"""`finetune init DATA_FILE`: a commented recipe guessed from a data file's columns.

A newcomer has a CSV, not a recipe. `init` reads the header and a sample of rows with the same
readers `run` uses, guesses the task from column names and value types (text + label ->
classification, document + summary -> summarization, two language-code columns or aligned
`train.{lang}` files -> translation), finds the eval split beside the file (dev/valid/...) or
holds out 10%, sets the length limits from the sampled rows as the model's tokenizer encodes
them (setup/lengths.py), and writes a recipe whose comments say what each choice was and how to
change it. The recipe is then checked by `check_recipe`, the function behind `finetune validate`, so
what `init` writes is what `run` accepts. When the columns do not say which is which, it stops
and names the flag to pass (`--text`, `--label`, ...) instead of guessing wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from finetune.data.readers import LANG_PLACEHOLDER
from finetune.errors import (
    FinetuneError,
    Problem,
    RecipeError,
    first_line,
)
from finetune.methods import METHODS
from finetune.recipe.guess import (
    DEFAULT_MODEL,
    EVAL_FRACTION,
    EVAL_WORDS,
    GENERATION_MODEL_HINT,
    TEST_WORDS,
    TRAIN_WORDS,
    InitOptions,
    Sample,
    TaskGuess,
    aligned_lang,
)
from finetune.recipe.guess_layout import Layout, read_laid_out
from finetune.recipe.guess_regression import guess_task_of
from finetune.tasks import TASKS

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    from finetune.recipe.schema import Recipe
    from finetune.setup.lengths import LengthGuess
    from finetune.types import JSON

COMMENT_COLUMN = 32


@dataclass
class InitResult:
    path: Path
    task: str
    summary: str
    eval_note: str
    lengths_note: str


# --------------------------------------------------------------------------- entry point


def init_recipe(data_file: Path, opts: InitOptions) -> InitResult:
    """Read, guess, render, check with `check_recipe`, then write (never half a recipe)."""
    out = opts.out or default_recipe_path(data_file)
    if out.exists() and not opts.force:
        raise FinetuneError(
            f"{out}: already exists; refusing to overwrite it",
            fix="pass --force to replace it, or --out another.yaml",
        )
    if opts.method not in METHODS:
        raise FinetuneError(
            f"--method {opts.method}: unknown method", fix="choose from " + ", ".join(METHODS)
        )
    if opts.quoting not in (None, "rfc4180", "none"):
        raise FinetuneError(f"--quoting {opts.quoting}: unknown", fix="use rfc4180 or none")
    if opts.task is not None and opts.task not in TASKS:
        raise FinetuneError(
            f"--task {opts.task}: unknown task", fix="choose from " + ", ".join(TASKS)
        )
    sample, layout = read_laid_out(data_file, opts.header, opts.quoting)
    guess, layout = guess_task_of(sample, opts, layout)
    splits, eval_note = find_splits(sample)
    text = render_recipe(out, sample, guess, splits, opts, layout)
    try:
        recipe = checked(out, text)
    except RecipeError as exc:  # GLUE's test files carry no labels: a test split to skip
        if "test" not in splits or not all(".test" in p.where for p in exc.problems):
            raise
        left_out = Path(str(splits.pop("test"))).name
        eval_note += f"; {left_out} left out ({exc.problems[0].message})"
        text = render_recipe(out, sample, guess, splits, opts, layout)
        recipe = checked(out, text)
    lengths, lengths_note = guess_lengths(recipe, sample, layout)
    if lengths:
        text = render_recipe(out, sample, guess, splits, opts, layout, lengths)
    write_checked(out, text)
    return InitResult(out, guess.type, guess.summary, eval_note, lengths_note)


def guess_lengths(
    recipe: Recipe, sample: Sample, layout: Layout | None = None
) -> tuple[list[LengthGuess], str]:
    """The length limits the sample's rows need under the recipe's tokenizer, and a line for
    the terminal. A tokenizer that cannot load here (a Hub id not downloaded, offline) or a
    row `run` would refuse leaves the defaults: the recipe is still written, and `run` warns
    of whatever it truncates. A headerless file's rows take the names the layout gives its
    columns (`data.columns`), as `run` reads them."""
    from finetune.data.readers import Table
    from finetune.setup.lengths import measure_lengths

    rename: dict[str, str] = {}
    if layout is not None and layout.columns is not None:  # column1 .. -> the names given
        rename = dict(zip(sample.columns, layout.columns, strict=False))
    rows = [{rename.get(k, k): v for k, v in row.items()} for row in sample.rows]
    columns = [rename.get(c, c) for c in sample.columns]
    table = Table(rows, sample.recipe_path, first_line=0, columns=columns)
    try:
        lengths = measure_lengths(recipe, table)
    except Exception as exc:  # a measurement: never a reason to write no recipe
        return [], f"lengths: not measured ({first_line(exc)}); train.max_length stays 128"
    if not lengths:
        return [], "lengths: not measured (no rows); train.max_length stays 128"
    said = ", ".join(f"train.{g.key} {g.value} (longest {g.longest})" for g in lengths)
    return lengths, f"lengths: {said}, from {lengths[0].rows} sampled rows"


def default_recipe_path(data_file: Path) -> Path:
    """`data.csv` -> `data.yaml` in the working directory; `sst2/train.tsv` -> `sst2.yaml`."""
    stem = data_file.name.split(".")[0] if aligned_lang(data_file) else data_file.stem
    if stem.lower() in TRAIN_WORDS and data_file.resolve().parent.name:
        stem = data_file.resolve().parent.name
    return Path(f"{stem}.yaml")


# --------------------------------------------------------------------------- eval split


def _sibling_names(data_file: Path, word: str) -> list[str]:
    """dev.csv, or sst2-dev.csv for sst2-train.csv: the names an eval split goes by."""
    name = data_file.name
    names = [word + name[len(name.split(".")[0]) :]]
    for train in TRAIN_WORDS:
        if train in name.split(".")[0].lower():
            stem = name.split(".")[0]
            at = stem.lower().index(train)
            names.append(stem[:at] + word + stem[at + len(train) :] + name[len(stem) :])
    return [n for n in dict.fromkeys(names) if n != name]


def _exists(sample: Sample, candidate: Path) -> bool:
    """The split's file, or for aligned translation files every language's."""
    if not sample.langs:
        return candidate.is_file()
    return all(
        Path(str(candidate).replace(LANG_PLACEHOLDER, lang)).is_file() for lang in sample.langs
    )


def _prefixed(sample: Sample, word: str) -> list[Path]:
    """Files named for the split plus a qualifier, with the training file's extension:
    Multi30k's `test_2016_flickr.en`, `dev-clean.csv`. Sorted, so the pick is stable."""
    suffix = sample.path.name[len(sample.path.name.split(".")[0]) :]
    found: list[Path] = []
    for path in sorted(sample.path.parent.iterdir()):
        stem = path.name.split(".")[0]
        candidate = path.parent / (stem + suffix)
        if (
            stem.lower().startswith((f"{word}_", f"{word}-"))
            and candidate not in found
            and _exists(sample, candidate)
        ):
            found.append(candidate)
    return found


def _sibling(sample: Sample, words: tuple[str, ...]) -> tuple[Path | None, list[Path]]:
    """The split's file and any others that could be it (the note names them)."""
    folder = sample.path.parent
    for word in words:
        for name in _sibling_names(sample.path, word):
            if _exists(sample, folder / name):
                return folder / name, []
    for word in words:
        if found := _prefixed(sample, word):
            return found[0], found[1:]
    return None, []


def find_splits(sample: Sample) -> tuple[dict[str, Path | float], str]:
    """The data: section's eval/test entries and a one-line note on what was found."""
    evaluation, other_evals = _sibling(sample, EVAL_WORDS)
    test, other_tests = _sibling(sample, TEST_WORDS)
    if evaluation is None and test is not None:
        also = f"; also there: {', '.join(p.name for p in other_tests)}" if other_tests else ""
        return {"eval": test}, f"eval: {test.name} (no dev/valid file; test used as eval{also})"
    if evaluation is None:
        return {"eval_fraction": EVAL_FRACTION}, (
            f"eval: {EVAL_FRACTION:.0%} of the training rows (no dev/valid/test file beside it)"
        )
    found: dict[str, Path | float] = {"eval": evaluation}
    if test is not None:
        found["test"] = test
    note = f"eval: {evaluation.name}" + (f", test: {test.name}" if test else "")
    others = [path.name for path in other_evals + other_tests]
    return found, note + (f" (also there: {', '.join(others)})" if others else "")


# --------------------------------------------------------------------------- rendering


def _scalar(value: JSON) -> str:
    """One YAML value on one line, quoted only when YAML needs it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _line(indent: int, key: str, value: JSON, comment: str = "") -> str:
    text = " " * indent + f"{key}: {_scalar(value)}"
    return f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}" if comment else text


def _path_for_recipe(path: Path, recipe: Path) -> str:
    """Relative to the recipe's directory when the data lies under it, else absolute."""
    absolute = Path(os.path.abspath(path))
    folder = Path(os.path.abspath(recipe)).parent
    try:
        return str(absolute.relative_to(folder))
    except ValueError:
        return str(absolute)


def _model_lines(guess: TaskGuess, opts: InitOptions) -> list[str]:
    name = opts.model or DEFAULT_MODEL
    if TASKS[guess.type].is_generation and name == DEFAULT_MODEL:
        comment = (
            "runs offline as bert2bert (new cross-attention: learns slowly); for real output "
            f"use a seq2seq model id, e.g. --model {GENERATION_MODEL_HINT}, or the bundled "
            "decoder --model bundled:smollm2-135m"
        )
    else:
        comment = "a hub id, a local directory, or a bundled alias"
    return ["model:", _line(2, "name", name, comment)]


def _prompt_lines(guess: TaskGuess, model: str) -> list[str]:
    """A decoder generation task: how its prompts are built (tasks/chat.py), the instruction's
    default shown, so the recipe says which prompt `run`, `eval` and `predict` will use."""
    from finetune.models.detect import architecture_of
    from finetune.tasks.generation import GenerationTask

    task = TASKS[guess.type]
    try:
        decoder = architecture_of(model).shape == "decoder"
    except FinetuneError:
        decoder = False
    if not decoder or not issubclass(task, GenerationTask):
        return []
    cfg = task.config_class.model_validate({"type": guess.type, **guess.keys})
    default = task.default_instruction(cfg)
    return [
        _line(2, "prompt", "auto", "auto | chat | plain: chat = the model's chat template"),
        _line(2, "# instruction", default, "chat: the user turn's first line (default shown)"),
        _line(2, "# system", None, "chat: a system message"),
    ]


def _method_lines(method: str) -> list[str]:
    """The method with each of its options commented out at its default and described."""
    choices = " | ".join(METHODS)
    lines = ["method:", _line(2, "name", method, choices)]
    for key, info in METHODS[method].config_class.model_fields.items():
        if key == "name":
            continue
        lines.append(_line(2, f"# {key}", info.default, info.description or ""))
    return lines


def _train_lines(method: str, lengths: Sequence[LengthGuess] = ()) -> list[str]:
    from finetune.docs.methods import format_lr

    mantissa, _, exponent = format_lr(METHODS[method].default_lr).partition("e")
    mantissa += "" if "." in mantissa or not exponent else ".0"  # YAML reads 2.0e-3, not 2e-3
    lr = f"{mantissa}e{exponent}" if exponent else mantissa
    text = f"  # lr: {lr}".ljust(COMMENT_COLUMN - 1)
    return [
        "train:",
        _line(2, "epochs", 1, "passes over the training data"),
        _line(2, "batch_size", 32),
        *_length_lines(lengths),
        f"{text} # unset: {method}'s default_lr (README, Learning rates)",
        _line(2, "seed", 42),
    ]


LENGTH_WORDS = {"max_length": "input tokens", "max_target_length": "target tokens"}


def _length_lines(lengths: Sequence[LengthGuess]) -> list[str]:
    """max_length (and max_target_length) as measured on the sample, else today's default."""
    if not lengths:
        return [_line(2, "max_length", 128, "input tokens; longer is truncated")]
    return [_line(2, g.key, g.value, g.comment(LENGTH_WORDS[g.key])) for g in lengths]


def _source_lines(key: str, path: Path, out: Path, layout: Layout, comment: str) -> list[str]:
    """One `data.<key>` entry: the path alone, or a block with the layout's options (train's
    with a comment on why)."""
    options = layout.options()
    if not options:
        return [_line(2, key, _path_for_recipe(path, out), comment)]
    head = f"  {key}:"
    lines = [f"{head.ljust(COMMENT_COLUMN - 1)} # {comment}" if comment else head]
    lines.append(_line(4, "path", _path_for_recipe(path, out)))
    for option, value in options.items():
        why = layout.notes.get(option, "") if key == "train" else ""
        lines.append(_line(4, option, value, why))
    return lines


def _data_lines(
    out: Path, sample: Sample, splits: dict[str, Path | float], layout: Layout
) -> list[str]:
    lines = ["data:", *_source_lines("train", Path(sample.recipe_path), out, layout, "")]
    for key, value in splits.items():
        if isinstance(value, Path):
            lines += _source_lines(key, value, out, layout, "found beside train")
        else:
            lines.append(_line(2, key, value, "held out of train (seeded): no dev file found"))
    return lines


def render_recipe(
    out: Path,
    sample: Sample,
    guess: TaskGuess,
    splits: dict[str, Path | float],
    opts: InitOptions,
    layout: Layout | None = None,
    lengths: Sequence[LengthGuess] = (),
) -> str:
    """The recipe text: a description line, the launch line, then each section, commented."""
    source = Path(sample.recipe_path)
    lines = [
        f"# {guess.type.capitalize()} of {source.name} ({guess.summary}), written by "
        "`finetune init`.",
        f"# finetune run {out}",
        "# Edit freely: `finetune options` lists every key; `finetune validate` checks the file.",
        *_model_lines(guess, opts),
    ]
    lines.append("task:")
    for key, value in guess.keys.items():
        lines.append(_line(2, key, value, guess.comments.get(key, "")))
    lines += _prompt_lines(guess, opts.model or DEFAULT_MODEL)
    lines += _data_lines(out, sample, splits, layout or Layout())
    lines += _method_lines(opts.method)
    lines += _train_lines(opts.method, lengths)
    lines += ["output:", _line(2, "dir", f"runs/{out.stem}")]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- checking


def write_checked(out: Path, text: str) -> None:
    """Check the text as `finetune validate` would, from where it will live, then write it."""
    from finetune.run.files import atomic_write_text

    checked(out, text)
    atomic_write_text(out, text)


def checked(out: Path, text: str) -> Recipe:
    """The recipe the text makes, checked as `finetune validate` would from where it will
    live; RecipeError naming `out` when anything is wrong."""
    from finetune.setup.checks import check_recipe

    out.parent.mkdir(parents=True, exist_ok=True)
    draft = out.with_name(f".{out.name}.init")
    draft.write_text(text, encoding="utf-8")
    try:
        recipe, problems = check_recipe(draft)
    finally:
        draft.unlink(missing_ok=True)
    if problems or recipe is None:
        raise RecipeError([_renamed(p, draft, out) for p in problems])
    return recipe


def _renamed(problem: Problem, draft: Path, out: Path) -> Problem:
    return Problem(problem.where.replace(str(draft), str(out)), problem.message, problem.fix)
