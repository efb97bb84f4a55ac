"""The zero-shot verb: a set-up run whose method trains nothing (`method: none`), evaluated
once as it is and saved as a run directory without weights.

The evaluation is the one a trained run ends with: the same eval loader, prompts (chat
template or plain), generation settings and mixed precision, on the model as `eval` prepares
it; so a zero-shot row and a trained row of `compare` differ by the training alone, and
`finetune eval` on the run directory reproduces its metrics. The directory holds recipe.yaml,
run.json, tokenizer/, metrics.json, predictions.jsonl, log.jsonl (the one evaluation), the card
and `.finished`; no adapter, no checkpoints.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.pipeline.training import Metrics, RunSummary, StartPlan, format_metrics
from finetune.run.artifacts import save_run_artifacts, write_run_start
from finetune.run.files import append_jsonl
from finetune.run.layout import RunPaths
from finetune.run.trackers import log_record, start_trackers
from finetune.train.device import device_metrics
from finetune.train.evaluation import make_eval_loader, run_eval

if TYPE_CHECKING:  # pragma: no cover
    from finetune.setup.run_setup import RunSetup

log = logging.getLogger(__name__)


def evaluate_untrained(
    setup: RunSetup, out: Path, plan: StartPlan, progress: bool = False
) -> RunSummary:
    """Evaluate the set-up base model on the recipe's eval split and save it as a run."""
    recipe, accelerator, parts = setup.recipe, setup.accelerator, setup.training
    if accelerator is None or parts is None:
        raise ValueError("RunSetup.for_training sets up the run's data and Accelerator")
    if parts.eval_set is None or not parts.splits.eval:
        raise FinetuneError(
            f"method {setup.method.name}: evaluates the base model, but there is no eval data",
            fix="set data.eval (or data.eval_fraction)",
        )
    if accelerator.is_main_process:
        info = setup.run_info()
        write_run_start(
            out, recipe, info, setup.task.tokenizer, setup.revision, False, plan.base_dir
        )
    start_trackers(accelerator, recipe, out)
    log.info("method %s: evaluating the base model as it is (nothing trains)", setup.method.name)
    started = time.perf_counter()
    loader = make_eval_loader(parts.eval_set, setup.task, recipe.eval.batch_size, accelerator)
    metrics, predictions = run_eval(setup.model, setup.task, loader, parts.splits.eval, accelerator)
    # log.jsonl's one record holds what a trained run's evaluations hold: no run facts
    record = {"step": 0, "epoch": 0, **{f"eval_{k}": v for k, v in metrics.items()}}
    metrics = {**metrics, **_run_facts(setup, time.perf_counter() - started)}
    log_record(accelerator, record)
    if accelerator.is_main_process:
        append_jsonl(RunPaths(out).log, record)
        save_run_artifacts(
            out,
            recipe,
            setup.task,
            setup.method,
            accelerator.unwrap_model(setup.model),
            metrics,
            predictions,
            parts.splits.eval,
        )
        log.info("zero-shot: %s", format_metrics(metrics))
        log.info("run saved to %s", out)
    accelerator.wait_for_everyone()
    counts = setup.parameters
    return RunSummary(out, metrics, counts.trainable, counts.total)


def _run_facts(setup: RunSetup, seconds: float) -> Metrics:
    """The machine facts a trained run reports, less the training's (batch, steps, loss)."""
    assert setup.accelerator is not None
    facts = device_metrics(setup.accelerator, setup.recipe.eval.batch_size, 1)
    facts.pop("effective_batch", None)  # a training fact: nothing trained
    return {"eval_seconds": round(seconds, 2), **facts}
