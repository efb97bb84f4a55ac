"""Evaluating and predicting with a finished run (`finetune eval`, `finetune predict`).

Both run on the device `eval` picks (the GPU when there is one) with the mixed precision the
run trained in. Evaluation covers every example once and writes `eval_<name>.json` and
`predictions_<name>.jsonl` beside the run's own; prediction returns one record per input in
input order (several runs on one base switch adapters between them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.encoding import encode_features
from finetune.run.artifacts import write_predictions, write_report
from finetune.run.files import atomic_write_json
from finetune.setup.accelerator import inference_accelerator
from finetune.setup.model import store_frozen_weights
from finetune.train.evaluation import make_eval_loader, run_eval
from finetune.types import JSONObject

if TYPE_CHECKING:  # pragma: no cover
    from finetune.setup.run_setup import RunSetup
    from finetune.tasks import Example

Record = JSONObject  # one line of predictions: what the task's `prediction_record` makes


def evaluate(setup: RunSetup, examples: list[Example], name: str) -> JSONObject:
    """Metrics of the run on `examples`; writes eval_<name>.json and predictions_<name>.jsonl."""
    task, recipe, path = setup.task, setup.recipe, setup.run_dir
    dataset = encode_features(task, examples, training=False, cache=recipe.data.cache)
    accelerator = inference_accelerator(recipe)
    store_frozen_weights(recipe, setup.method, setup.model, accelerator, inference=True)
    model = accelerator.prepare_model(setup.model, evaluation_mode=True)
    loader = make_eval_loader(dataset, task, recipe.eval.batch_size, accelerator)
    metrics, predictions = run_eval(model, task, loader, examples, accelerator)
    if accelerator.is_main_process:
        atomic_write_json(path / f"eval_{name}.json", metrics)
        write_predictions(path / f"predictions_{name}.jsonl", task, predictions, examples)
        if predictions is not None:
            write_report(path, task, predictions, examples, suffix=f"_{name}")
    return metrics


def predict(setup: RunSetup, texts: list[str]) -> list[Record]:
    """The run's records in input order (its adapter activated first on a shared base)."""
    import torch
    from accelerate.utils import send_to_device

    setup.activate()
    task = setup.task
    examples = task.examples_from_texts(texts)
    features = task.encode(examples, training=False)
    accelerator = inference_accelerator(setup.recipe)
    store_frozen_weights(setup.recipe, setup.method, setup.model, accelerator, inference=True)
    model = accelerator.prepare_model(setup.model, evaluation_mode=True)
    records: list[Record] = [{} for _ in examples]
    batch_size = setup.recipe.eval.batch_size
    with torch.inference_mode(), accelerator.autocast():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = send_to_device(task.collate(chunk), accelerator.device)
            _, preds = task.eval_batch(model, batch, predict=True)
            for feat, pred in zip(chunk, preds or []):
                records[feat["idx"]] = task.prediction_record(pred, examples[feat["idx"]])
    return records


def predict_many(setups: list[RunSetup], texts: list[str]) -> list[Record]:
    """One record per run per text, text by text, each naming its run."""
    per_run = [predict(setup, texts) for setup in setups]
    return [
        {"run": str(setup.run_dir), **records[i]}
        for i in range(len(texts))
        for setup, records in zip(setups, per_run)
    ]


def result_name(split: str, data: str | None) -> str:
    """`eval_<name>.json`: the split, or the stem of the file evaluated."""
    return Path(data).stem if data else split
