"""The `finetune` command line: parse, call one function per command, print. No logic here.

Imports of torch/transformers happen inside the commands, so `finetune --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from finetune import __version__
from finetune.console import escape as _escape
from finetune.console import print_metrics
from finetune.console import print_out as _out
from finetune.exits import STATE, handle_errors, rerun_to_continue

app = typer.Typer(
    name="finetune",
    help="Parameter-efficient fine-tuning of Hugging Face Transformers from one YAML recipe.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override as validate takes it (the same as key=value)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Train a method on a model as the recipe says; writes a run directory.

    Every option is listed by `finetune options`.
    """
    from finetune.commands.run import run as run_recipe
    from finetune.logs import is_main_rank

    changes = [*(overrides or []), *(set_ or [])]
    summary = run_recipe(recipe, changes, overwrite=overwrite, resume=resume, progress=progress)
    if not is_main_rank():  # one summary per run, not one per process
        return
    _out(f"[bold green]done[/] in {summary.seconds:.0f}s: {summary.run_dir}")
    print_metrics(summary.metrics)


@app.command()
@handle_errors
def init(
    data_file: Annotated[Path, typer.Argument(help="Training data: csv/tsv/jsonl/json/parquet.")],
    task: Annotated[
        Optional[str],
        typer.Option(help="classification, regression, summarization or translation."),
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Default: bundled:minilm-l6.")] = None,
    method: Annotated[str, typer.Option(help="Any method of `finetune options method`.")] = "lora",
    out: Annotated[
        Optional[Path], typer.Option(help="Recipe to write; default <data>.yaml.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing recipe file.")] = False,
    text: Annotated[Optional[str], typer.Option(help="Column with the input text.")] = None,
    text_pair: Annotated[Optional[str], typer.Option(help="Second text column (pairs).")] = None,
    label: Annotated[Optional[str], typer.Option(help="Column with the label.")] = None,
    summary: Annotated[Optional[str], typer.Option(help="Column with the summary.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Translation source column.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Translation target column.")] = None,
    header: Annotated[
        Optional[bool], typer.Option("--header/--no-header", help="csv/tsv: line 1 names columns.")
    ] = None,
    quoting: Annotated[Optional[str], typer.Option(help="csv/tsv quotes: rfc4180 or none.")] = None,
) -> None:
    """Write a commented recipe guessed from a data file's columns, checked like `validate`."""
    from finetune.commands.init import InitOptions, init_recipe

    options = InitOptions(
        task=task,
        model=model,
        method=method,
        out=out,
        force=force,
        text=text,
        text_pair=text_pair,
        label=label,
        summary=summary,
        source=source,
        target=target,
        header=header,
        quoting=quoting,
    )
    result = init_recipe(data_file, options)
    _out(f"[green]wrote[/] {_escape(str(result.path))}: {result.task} ({_escape(result.summary)})")
    _out(f"  {_escape(result.eval_note)}")
    _out(f"  {_escape(result.lengths_note)}")
    _out(f"next: finetune run {_escape(str(result.path))}")


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
    from finetune.commands.validate import validate_all

    if validate_all(paths, overrides or [], scan_rows=not quick):
        raise typer.Exit(2)


@app.command()
@handle_errors
def compare(
    recipes: Annotated[
        list[str],
        typer.Argument(
            help="Recipe YAML files (one task each) or suite files, then dotted overrides "
            "(key=value) applied to every run.",
            show_default=False,
        ),
    ],
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated methods or groups: all, lora-family, adapters, prompts."
        ),
    ] = "full,lora,houlsby",
    out: Annotated[Optional[Path], typer.Option(help="Default: runs/compare-<recipe>.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rerun finished runs.")] = False,
    tune: Annotated[
        bool, typer.Option(help="Search each method's learning rate on data held out from train.")
    ] = False,
    tune_rates: Annotated[int, typer.Option(help="Rates tried per method: 3 or 5.")] = 5,
    tune_budget: Annotated[
        float,
        typer.Option(
            help="Fraction of the training steps per search run (never under a floor of a "
            "few dozen steps, nor over the whole run)."
        ),
    ] = 0.3,
    seeds: Annotated[int, typer.Option(help="Seeds per method (mean ± std).", min=1)] = 1,
    jobs: Annotated[
        int, typer.Option(help="Runs at once: one GPU each, or a share of the CPU cores.", min=1)
    ] = 1,
) -> None:
    """Run recipes with several methods; writes report.md/.csv/.json and report.png: quality
    with 95% intervals, trainable parameters, peak memory, time and size on disk. Several
    recipes (or a suite file) also get a methods x tasks table with the average and mean rank."""
    from finetune.commands.compare import compare as run_compare
    from finetune.commands.compare import parse_methods, recipes_and_overrides, tune_options
    from finetune.comparison.report import table

    paths, overrides = recipes_and_overrides(recipes)
    options = tune_options(tune_rates, tune_budget)
    with rerun_to_continue("compare"):
        outcomes, where = run_compare(
            paths,
            parse_methods(methods),
            overrides,
            out,
            overwrite,
            options if tune else None,
            seeds,
            jobs,
        )
    if len({o.task for o in outcomes}) == 1:
        _out(table([o.row for o in outcomes]))
    else:
        _out((where / "report.md").read_text(encoding="utf-8"))
    _out(f"report: {where / 'report.md'} and {where / 'report.png'}")


@app.command()
@handle_errors
def sweep(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (the base of every point).")],
    axes: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="key=v1,v2,... (an axis of the grid) or key=value (every point).",
            show_default=False,
        ),
    ] = None,
    methods: Annotated[
        Optional[str], typer.Option(help="Comma-separated methods (default: the recipe's).")
    ] = None,
    random: Annotated[
        Optional[int], typer.Option(help="Run N points sampled from the grid (seeded).", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random's sampling.")] = 0,
    seeds: Annotated[int, typer.Option(help="Seeds per point (mean ± std).", min=1)] = 1,
    out: Annotated[Optional[Path], typer.Option(help="Default: runs/sweep-<recipe>.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rerun finished points.")] = False,
    jobs: Annotated[
        int, typer.Option(help="Runs at once: one GPU each, or a share of the CPU cores.", min=1)
    ] = 1,
) -> None:
    """Run a grid (or --random N points of it), one run per point, resumable; writes the
    compare report files plus best.yaml, the best point's recipe."""
    from finetune.commands.compare import parse_methods
    from finetune.commands.sweep import sweep as run_sweep
    from finetune.comparison.report import table

    chosen = parse_methods(methods) if methods else None
    with rerun_to_continue("sweep"):
        rows, where, keys = run_sweep(
            recipe, axes or [], chosen, out, overwrite, random, seed, seeds, jobs
        )
    _out(table(rows, keys))
    best = where / "best.yaml"
    found = f"best point's recipe: {best}" if best.is_file() else "no best point (no eval score)"
    _out(f"report: {where / 'report.md'}; {found}")


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


@app.command("merge-adapters")
@handle_errors
def merge_adapters(
    runs: Annotated[list[Path], typer.Argument(help="Finished LoRA runs of one base model.")],
    out: Annotated[Path, typer.Option(help="The new run directory.")],
    weights: Annotated[Optional[str], typer.Option(help="One per run, e.g. 0.5,0.5.")] = None,
    how: Annotated[str, typer.Option(help="linear, ties, dare_ties or cat.")] = "linear",
    density: Annotated[float, typer.Option(help="ties/dare_ties: share kept.")] = 0.2,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Combine LoRA runs into a new run that eval, predict, merge and push take (peft)."""
    from finetune.commands.merge_adapters import merge_adapter_runs

    result = merge_adapter_runs(runs, out, weights, how, density, overwrite)
    _out(f"[green]combined[/] {len(runs)} runs ({how}, rank {result.rank}) into {result.out}")
    print_metrics(result.metrics)


@app.command()
@handle_errors
def push(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    repo_id: Annotated[str, typer.Option(help="Hub repository, e.g. me/bert-sst2-lora.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
    adapter: Annotated[
        bool,
        typer.Option(
            "--adapter", help="Upload the adapter as trained (any method), not the merged model."
        ),
    ] = False,
) -> None:
    """Merge and upload model + tokenizer + model card to the Hugging Face Hub; with
    --adapter, upload the adapter (or full model) as trained, with its own card.

    HF_ENDPOINT picks the Hub; the token comes from HF_TOKEN or `hf auth login` and is
    never printed."""
    from finetune.commands.push import push_run

    url = push_run(run_dir, repo_id, private=private, adapter=adapter)
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
    print_metrics(metrics)


@app.command()
@handle_errors
def predict(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Finished run directories; several: one base model, one line each."),
    ],
    text: Annotated[
        Optional[list[str]],
        typer.Option(help="Input text (repeatable); a pair task's two texts separated by a tab."),
    ] = None,
    file: Annotated[
        Optional[Path],
        typer.Option(help="File with one input per line (a pair task: two texts, tab-separated)."),
    ] = None,
) -> None:
    """Predict labels (with probability), scores (regression) or texts; prints JSON lines.

    With several runs of one base model, the base loads once and each run's adapter is
    switched in (peft methods); each line then names its run."""
    from finetune.commands.evaluate import predict_texts, read_inputs

    inputs = read_inputs(text or [], file)
    for record in predict_texts(list(run_dirs), inputs):
        typer.echo(json.dumps(record, ensure_ascii=False))


@app.command()
@handle_errors
def recipes(
    directory: Annotated[Optional[Path], typer.Argument(help="Where to look.")] = None,
) -> None:
    """List the bundled recipes with their one-line description."""
    from finetune.commands.listing import recipe_lines

    for line in recipe_lines(directory):
        _out(line)


@app.command()
@handle_errors
def options(
    section: Annotated[Optional[str], typer.Argument(help="Only this section, e.g. train.")] = None,
) -> None:
    """Every recipe option with its type, default and description (from the schema)."""
    from finetune.commands.listing import option_lines

    for line in option_lines(section):
        _out(line)


@app.command()
@handle_errors
def models() -> None:
    """Every supported architecture (config.json model_type): shape, tasks, LoRA targets,
    LayerNorm placement and refused methods, with the reasons (the README's table); then the
    bundled models."""
    from finetune.docs.architectures import render_bundled, render_table

    typer.echo(render_table() + "\n" + render_bundled(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
