"""Regression: one number per text or text pair (STS-B's similarity score), on every family.

The model and the inputs are classification's (`AutoModelForSequenceClassification`, the same
pair encoding), with one output and `problem_type: regression`, so transformers computes the
mean squared error of the single logit against float32 targets (BERT-family encoders, GPT-2
style decoders from the last non-pad token, T5ForSequenceClassification alike). A merged model
is then an ordinary regression model: transformers' text-classification pipeline returns the
raw score. Targets are checked row by row: a value that is not a finite number is an error
naming the file, line and column. Metrics: Pearson, Spearman (STS-B's) and the MSE.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from finetune.errors import DataValueError
from finetune.recipe.section import Section
from finetune.tasks.base import Example, ModelOverrides
from finetune.tasks.classification import MODEL_INPUTS, ClassificationTask
from finetune.tasks.scores import regression_scores

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.features import Features
    from finetune.data.readers import Table
    from finetune.types import JSON, Batch, JSONObject, Model, TableRow

SCORE_NAME = "score"  # the single output's id2label name (what the pipeline prints)
log = logging.getLogger(__name__)


class RegressionConfig(Section):
    type: Literal["regression"] = Field(description="Task kind.")
    text: str = Field("text", description="Column with the input text.")
    text_pair: str | None = Field(None, description="Optional second text column (pairs).")
    label: str = Field("label", description="Column with the target number (e.g. 0-5 scores).")
    metric: Literal["auto", "pearson", "spearmanr", "mse"] = Field(
        "auto", description="Main metric (compare, best weights, card); auto: pearson."
    )


def parse_target(value: object, column: str, where: str) -> float:
    """A finite float from a number or its text, or a DataError naming the row and column."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataValueError(
            f"{where}: column '{column}' (target) is empty",
            fix="give the row a number or remove it",
        )
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise DataValueError(
            f"{where}: column '{column}' (target) is {value!r}, not a finite number",
            fix="a regression target is a number such as 3.8; check the column "
            "(task.label) or the row",
        )
    return number


class RegressionTask(ClassificationTask):
    name = "regression"
    config_class = RegressionConfig
    main_metric = "pearson"
    # the Hub has no regression task: regression models (STS-B) are text-classification there
    pipeline_tag = "text-classification"
    report_name = ""
    label_dtype = "float32"

    @classmethod
    def parse_row(  # type: ignore[override]  # its own config class, not classification's
        cls, cfg: RegressionConfig, row: TableRow, where: str
    ) -> Example:
        text, pair = cls.texts(cfg, row, where)
        target = parse_target(row.get(cfg.label), cfg.label, where)
        return Example(source=text, pair=pair, target=target, where=where)

    def examples(self, table: Table, split: str) -> list[Example]:
        return self.parsed(table)

    def fit(self, train: list[Example]) -> None:
        """Nothing to learn from the data: one output, no label set."""

    def check_example(self, example: Example) -> None:
        """Every target was checked when it was read."""

    def feature_label(self, example: Example) -> float:
        return float(example.target)

    def positive_id(self) -> int | None:
        return None

    def model_config_overrides(self) -> ModelOverrides:
        return {
            "num_labels": 1,
            "problem_type": "regression",
            "id2label": {0: SCORE_NAME},
            "label2id": {SCORE_NAME: 0},
        }

    def prepare_base(self, model: Model) -> None:
        """The score head computes in float32 even under bf16 autocast
        (`models/float32_head.py`: otherwise every score sits on bf16's 1/64 grid)."""
        from finetune.models.float32_head import compute_single_outputs_in_float32

        names = compute_single_outputs_in_float32(model)
        log.debug("regression head in float32: %s", ", ".join(names) or "none found")

    def initialise_head(self, model: Model, new_modules: list[str], train: Features | None) -> None:
        """The new head's output bias starts at the mean training target.

        A head initialised near 0 against targets around 2.7 (STS-B) spends its first steps
        learning the offset; those large early gradients fill Adam's second-moment estimates,
        which then shrink every later update for hundreds of steps, and a short LoRA run ends
        predicting the mean (Pearson 0.07 on 2,000 STS-B pairs; 0.74 with the offset removed).
        Heads without a bias (GPT-2-style decoders' `score`) learn the offset in their weights.
        """
        import numpy as np
        import torch

        from finetune.methods.base import inside

        if train is None or "labels" not in train.scalars:  # None: a method that trains nothing
            return
        values, present = (np.asarray(a) for a in train.scalars["labels"])
        if not present.any():
            return
        mean = float(values[present].astype(np.float64).mean())
        heads = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and module.out_features == 1
            and module.bias is not None
            and inside(name, new_modules)
        ]
        with torch.no_grad():
            for _, module in heads:
                module.bias.fill_(mean)
        if heads:
            names = ", ".join(name for name, _ in heads)
            log.info("regression head %s: output bias set to the mean target %.4g", names, mean)

    def eval_batch(
        self, model: Model, batch: Batch, predict: bool
    ) -> tuple[list[float] | None, list[Any] | None]:
        """Per-example squared errors (the training loss's terms) and predicted numbers."""
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        scores = model(**inputs).logits.float()[:, 0]
        losses = None
        if "labels" in batch:
            losses = ((scores - batch["labels"].float()) ** 2).tolist()
        return losses, scores.tolist()

    def metrics(self, predictions: list[Any], examples: list[Example]) -> Mapping[str, JSON]:
        """Pearson, Spearman and MSE (`tasks/scores.py`)."""
        y_pred, y_true = self.evaluate_inputs(predictions, examples)
        return regression_scores(y_true, y_pred)

    def evaluate_inputs(
        self, predictions: list[Any], examples: list[Example]
    ) -> tuple[list[Any], list[Any]]:
        """(predicted numbers, target numbers)."""
        return [float(p) for p in predictions], [float(ex.target) for ex in examples]

    def report(self, predictions: list[Any], examples: list[Example]) -> JSONObject | None:
        return None

    def prediction_record(self, prediction: Any, example: Example) -> JSONObject:
        record: JSONObject = {"text": example.source}
        if example.pair is not None:
            record["text_pair"] = example.pair
        record["score"] = round(float(prediction), 6)
        if example.target is not None:
            record["reference"] = example.target
        return record
