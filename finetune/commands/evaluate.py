"""`finetune eval` and `finetune predict` on a finished run: everything is in the run dir."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from finetune.commands.build import load_split
from finetune.data.encoding import encode_features
from finetune.data.readers import read_source
from finetune.data.sources import LocalSource
from finetune.errors import FinetuneError
from finetune.run.artifacts import write_predictions, write_report
from finetune.run.files import atomic_write_json
from finetune.run.reload import LoadedRun, load_run, load_runs
from finetune.tasks import Example
from finetune.train.evaluation import make_eval_loader, run_eval

log = logging.getLogger(__name__)


def evaluate_run(path: Path, split: str = "eval", data: str | None = None) -> dict[str, Any]:
    """Metrics of a saved run on its eval/test split or another file; writes eval_<name>.json."""
    run = load_run(path)
    examples = examples_for(run, split, data)
    dataset = encode_features(run.task, examples, training=False, cache=run.recipe.data.cache)
    accelerator = inference_accelerator(run.recipe)
    model = accelerator.prepare_model(run.model, evaluation_mode=True)
    loader = make_eval_loader(dataset, run.task, run.recipe.eval.batch_size, accelerator)
    metrics, predictions = run_eval(model, run.task, loader, examples, accelerator)
    name = Path(data).stem if data else split
    if accelerator.is_main_process:
        atomic_write_json(path / f"eval_{name}.json", metrics)
        write_predictions(path / f"predictions_{name}.jsonl", run.task, predictions, examples)
        if predictions is not None:
            write_report(path, run.task, predictions, examples, suffix=f"_{name}")
    return metrics


def examples_for(run: LoadedRun, split: str, data: str | None) -> list[Example]:
    if data:
        source = laid_out_like(run, data)
        table = read_source(source, None, None, run.task.languages(run.recipe))
        examples = run.task.examples(table, "eval")
    else:
        if split not in ("eval", "test", "train"):
            raise FinetuneError(f"--split {split}: unknown split", fix="use eval, test or train")
        source = getattr(run.recipe.data, split)
        held_out = split == "eval" and source is None and bool(run.recipe.data.eval_fraction)
        if source is None and not held_out:
            raise FinetuneError(
                f"the run's recipe has no data.{split}",
                fix="pass --data FILE to evaluate on a file",
            )
        if held_out:
            examples = _held_out_eval(run)
        else:
            examples = load_split(run.task, run.recipe, split, None) or []
        if split != "train" and run.recipe.data.max_eval_samples:
            examples = examples[: run.recipe.data.max_eval_samples]
    for example in examples:
        run.task.check_example(example)
    return examples


def laid_out_like(run: LoadedRun, data: str) -> LocalSource:
    """`--data FILE` read as the run read its own data when FILE has the same extension: the
    header, column names and quoting of GLUE-style files (say CoLA's header-less dev_ood.tsv
    after training on its header-less train.tsv) carry over; otherwise the file's defaults."""
    template = run.recipe.data.eval or run.recipe.data.train
    if isinstance(template, LocalSource) and Path(data).suffix == Path(template.path).suffix:
        return template.model_copy(update={"path": data})
    return LocalSource(path=data)


def _held_out_eval(run: LoadedRun) -> list[Example]:
    """The rows `data.eval_fraction` carved out of train, labelled with run.json's labels.

    Not `load_splits`: it re-learns the label set from today's train file (`task.fit`), which
    may have changed since training; ids would then no longer match the trained head.
    """
    from finetune.commands.build import hold_out

    train = load_split(run.task, run.recipe, "train", None) or []
    _, held = hold_out(train, run.recipe.data.eval_fraction or 0.0, run.recipe.train.seed)
    return held


def predict_texts(paths: Path | list[Path], texts: list[str]) -> list[dict[str, Any]]:
    """One record per text for one run; for several runs one per run per text, each with the
    run's directory under "run" (runs of one base model share it: `load_runs`)."""
    several = isinstance(paths, list) and len(paths) > 1
    runs = load_runs(paths if isinstance(paths, list) else [paths])
    per_run = [_predict_one(run, texts) for run in runs]
    if not several:
        return per_run[0]
    return [
        {"run": str(run.path), **records[i]}
        for i in range(len(texts))
        for run, records in zip(runs, per_run)
    ]


def _predict_one(run: LoadedRun, texts: list[str]) -> list[dict[str, Any]]:
    """The run's records in input order (its adapter activated first on a shared base)."""
    import torch
    from accelerate.utils import send_to_device

    run.activate()
    examples = run.task.examples_from_texts(texts)
    features = run.task.encode(examples, training=False)
    accelerator = inference_accelerator(run.recipe)
    model = accelerator.prepare_model(run.model, evaluation_mode=True)
    records: list[dict[str, Any]] = [{} for _ in examples]
    batch_size = run.recipe.eval.batch_size
    with torch.inference_mode(), accelerator.autocast():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = send_to_device(run.task.collate(chunk), accelerator.device)
            _, preds = run.task.eval_batch(model, batch, predict=True)
            for feat, pred in zip(chunk, preds or []):
                records[feat["idx"]] = run.task.prediction_record(pred, examples[feat["idx"]])
    return records


def inference_accelerator(recipe: Any) -> Any:
    """The one device choice of `eval` and `predict`: the GPU when there is one, else CPU, with
    the mixed precision the run trained in (a recipe's fp16 on a machine without CUDA: fp32)."""
    from finetune.commands.build import new_accelerator, precision_for

    try:
        precision = precision_for(recipe)
    except FinetuneError:
        precision = "no"
    return new_accelerator(precision)
