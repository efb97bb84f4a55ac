"""The `finetune` command line: parse, call one function per command, print. No logic here.

Imports of torch/transformers happen inside the commands, so `finetune --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from finetune import __version__
from finetune.errors import FinetuneError, first_line

app = typer.Typer(
    name="finetune",
    help="Parameter-efficient fine-tuning of Hugging Face Transformers from one YAML recipe.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

STATE: dict[str, Any] = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"finetune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Fine-tune BERT, GPT-2 and T5 models with LoRA, adapters or full fine-tuning."""
    STATE["debug"] = debug


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes: message + fix, exit 2. Bugs: one line + a log file path, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from finetune.logs import redact, setup_logging, write_crash_log

        setup_logging(debug=STATE["debug"])
        try:
            return func(*args, **kwargs)
        except FinetuneError as exc:
            _err(f"[bold red]error:[/] {_escape(redact(exc.render()))}")
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if STATE["debug"]:
                raise
            path = write_crash_log(exc)
            cause = redact(first_line(exc))
            _err(f"[bold red]unexpected error:[/] {type(exc).__name__}: {_escape(cause)}")
            _err(f"full traceback in {path}; rerun with --debug to see it here")
            raise typer.Exit(1) from None

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _err(message: str) -> None:
    from finetune.console import err_console

    err_console().print(message, highlight=False)


def _out(message: str) -> None:
    from finetune.console import out_console

    out_console().print(message, highlight=False)


# --------------------------------------------------------------------------- commands


@app.command()
@handle_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Dotted overrides, e.g. train.epochs=3 method.r=16.", show_default=False
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Train a method on a model as the recipe says; writes a run directory.

    Every option is listed by `finetune options`.
    """
    from finetune.commands.run import run as run_recipe

    summary = run_recipe(
        recipe, overrides or [], overwrite=overwrite, resume=resume, progress=progress
    )
    _out(f"[bold green]done[/] in {summary.seconds:.0f}s: {summary.run_dir}")
    _print_metrics(summary.metrics)


@app.command()
@handle_errors
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Recipe files or directories of recipes.")],
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override, e.g. --set train.lr=1e-4.")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Read only the data files' headers, not every row.")
    ] = False,
) -> None:
    """Check recipes (schema, files, columns, every data row, model family, method support)
    without loading any weights; reports every problem at once."""
    from finetune.commands.validate import check_recipe

    files = _expand_recipes(paths)
    failed = 0
    for path in files:
        _, problems = check_recipe(path, overrides or [], scan_rows=not quick)
        if problems:
            failed += 1
            _err(f"[bold red]✗[/] {_escape(str(path))}: {len(problems)} problem(s)")
            for problem in problems:
                _err("  - " + _escape(problem.render()))
        else:
            _out(f"[green]✓[/] {_escape(str(path))}")
    if failed:
        raise typer.Exit(2)


def _expand_recipes(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*.y*ml") if "data" not in p.parts[len(path.parts) :]
            )
            if not found:
                raise FinetuneError(
                    f"{path}: no .yaml recipes in this directory",
                    fix="name recipe files or a directory holding them",
                )
            files.extend(found)
        else:
            files.append(path)
    return files


@app.command()
@handle_errors
def compare(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (the base of every run).")],
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(help="Dotted overrides applied to every run.", show_default=False),
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods, or all.")
    ] = "full,lora,houlsby",
    out: Annotated[Optional[Path], typer.Option(help="Default: runs/compare-<recipe>.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace finished runs.")] = False,
) -> None:
    """Run one recipe with several methods; writes report.md/.csv/.json and report.png:
    quality, trainable parameters, peak memory, time and size on disk."""
    from finetune.commands.compare import compare as run_compare
    from finetune.commands.compare import markdown, parse_methods

    rows, where = run_compare(recipe, parse_methods(methods), overrides or [], out, overwrite)
    _out(markdown(rows))
    _out(f"report: {where / 'report.md'} and {where / 'report.png'}")


@app.command()
@handle_errors
def merge(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path, typer.Option(help="Where to write the merged model.")],
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            help="Absolute part of the parity tolerance (plus 1e-3 x the largest |logit|)."
        ),
    ] = 1e-4,
) -> None:
    """Fold the adapter into the base weights; refuses if merged outputs differ."""
    from finetune.commands.merge import merge_run

    result = merge_run(run_dir, out, overwrite=overwrite, tolerance=tolerance)
    _out(
        f"[green]merged[/] into {result.out} (max |diff| {result.max_abs_diff:.2e} "
        f"on {result.examples} inputs)"
    )


@app.command()
@handle_errors
def push(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    repo_id: Annotated[str, typer.Option(help="Hub repository, e.g. me/bert-sst2-lora.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
) -> None:
    """Merge and upload model + tokenizer + model card to the Hugging Face Hub.

    The token comes from HF_TOKEN or `huggingface-cli login`; it is never printed."""
    from finetune.commands.merge import push_run

    url = push_run(run_dir, repo_id, private=private)
    _out(f"[green]pushed[/] {url}")


@app.command("eval")
@handle_errors
def eval_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    split: Annotated[str, typer.Option(help="eval, test or train (from the recipe).")] = "eval",
    data: Annotated[Optional[str], typer.Option(help="Evaluate on this file instead.")] = None,
) -> None:
    """Reload a saved run and compute its metrics (writes eval_<split>.json)."""
    from finetune.commands.evaluate import evaluate_run

    metrics = evaluate_run(run_dir, split=split, data=data)
    _print_metrics(metrics)


@app.command()
@handle_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    text: Annotated[Optional[list[str]], typer.Option(help="Input text (repeatable).")] = None,
    file: Annotated[Optional[Path], typer.Option(help="File with one input per line.")] = None,
) -> None:
    """Predict labels (with probability) or generate text; prints JSON lines."""
    from finetune.commands.evaluate import predict_texts

    inputs = list(text or [])
    if file is not None:
        try:
            inputs += [
                line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        except (OSError, UnicodeDecodeError) as exc:
            raise FinetuneError(
                f"--file {file}: cannot be read ({exc})",
                fix="pass a UTF-8 text file, one input per line",
            ) from None
    if not inputs:
        raise FinetuneError("nothing to predict", fix='pass --text "..." or --file inputs.txt')
    for record in predict_texts(run_dir, inputs):
        typer.echo(json.dumps(record, ensure_ascii=False))


@app.command()
@handle_errors
def recipes(
    directory: Annotated[Optional[Path], typer.Argument(help="Where to look.")] = None,
) -> None:
    """List the bundled recipes with their one-line description."""
    from finetune.recipe.io import recipe_description

    root = directory or _bundled_recipe_dir()
    if root is None or not root.is_dir():
        raise FinetuneError("no recipes directory found", fix="pass one: finetune recipes DIR")
    for path in sorted(root.glob("*.yaml")):
        _out(f"[bold]{_escape(str(path))}[/]  {_escape(recipe_description(path))}")


def _bundled_recipe_dir() -> Path | None:
    for candidate in (Path("recipes"), Path(__file__).resolve().parent.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    return None


@app.command()
@handle_errors
def options(
    section: Annotated[Optional[str], typer.Argument(help="Only this section, e.g. train.")] = None,
) -> None:
    """Every recipe option with its type, default and description (from the schema)."""
    from finetune.recipe.docs import option_rows

    for row in option_rows(section):
        _out(
            f"[bold]{row.key}[/]  [dim]{_escape(row.type)} = {_escape(row.default)}[/]  "
            f"{_escape(row.description)}"
        )


@app.command()
@handle_errors
def models() -> None:
    """Every supported architecture (config.json model_type): shape, tasks, LoRA targets,
    LayerNorm placement and refused methods, with the reasons (the README's table)."""
    from finetune.models.table import render_table

    typer.echo(render_table(), nl=False)


def _print_metrics(metrics: dict[str, Any]) -> None:
    from finetune.console import metric_items

    for key, shown in metric_items(metrics):
        _out(f"  {key}: {shown}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
