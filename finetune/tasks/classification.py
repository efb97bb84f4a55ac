"""Sequence classification on every family through AutoModelForSequenceClassification.

BERT-like encoders use their pooled [CLS]; GPT-2 classifies from the last non-pad token (it needs
a pad token: we reuse EOS and set `pad_token_id`); T5 uses T5ForSequenceClassification (the
encoder-decoder with a head on the final EOS state). Labels may be ints or strings; the label set
comes from the training split and is saved as id2label/label2id.

Text pairs are encoded as the tokenizer's own pair (BERT: [SEP] between them and token_type_ids,
segment B = 1, which the model also gets after `merge`/`push`); tokenizers that put nothing
between the two texts (GPT-2) get PAIR_SEPARATOR in front of the second text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field

from finetune.errors import DataValueError, LabelError
from finetune.recipe.section import Section
from finetune.tasks.base import (
    Example,
    ModelOverrides,
    Task,
    require_text,
    tokenize_counting_truncation,
    warn_truncated,
)
from finetune.tasks.scores import classification_scores, positive_label

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.readers import Table
    from finetune.types import JSON, Batch, Feature, JSONObject, Model, TableRow


PAIR_SEPARATOR = "\n"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _label_key(value: object) -> tuple[str, str]:
    """(kind, class name): the name is the label as written, surrounding whitespace stripped.

    Only real integers unify (3 and 3.0 from a JSON or Parquet column are '3', as is the text
    '3'); text is never rewritten, so '007', '01' and '+1' are classes of their own. The kind
    ('int' for integer-looking labels, else 'str') serves the mixed-types check and the order.
    """
    if isinstance(value, bool):
        return ("str", str(value).lower())
    if isinstance(value, int):
        return ("int", str(value))
    if isinstance(value, float) and value.is_integer():
        return ("int", str(int(value)))
    text = str(value).strip()
    return ("int" if _INTEGER_TEXT.fullmatch(text) else "str", text)


def _label_order(value: str) -> tuple[int, str]:
    """Integer labels sort as numbers ('2' before '10'); equal numbers by their text."""
    return (int(value), value)


class ClassificationConfig(Section):
    type: Literal["classification"] = Field(description="Task kind.")
    text: str = Field("text", description="Column with the input text.")
    text_pair: str | None = Field(None, description="Optional second text column (pairs).")
    label: str = Field("label", description="Column with the label (int or string).")
    metric: Literal["auto", "accuracy", "f1_macro", "matthews_correlation", "f1"] = Field(
        "auto",
        description="Main metric (compare, best weights, card); auto: accuracy. f1: the "
        "positive class's F1 (two labels: 1/true/yes/positive, else the second label); "
        "matthews_correlation: CoLA's.",
    )


class TextColumns(Protocol):
    """The text columns classification and regression share."""

    text: str
    text_pair: str | None


class ClassificationTask(Task):
    name = "classification"
    config_class: type[Section] = ClassificationConfig
    main_metric = "accuracy"
    pipeline_tag = "text-classification"
    report_name = "classification_report.json"
    sequence_head = True  # AutoModelForSequenceClassification on every family
    label_dtype = "long"  # the labels tensor's dtype (regression: float32)

    @classmethod
    def required_columns(cls, cfg: ClassificationConfig) -> list[str]:
        cols = [cfg.text, cfg.label]
        return cols + ([cfg.text_pair] if cfg.text_pair else [])

    @classmethod
    def texts(cls, cfg: TextColumns, row: Mapping[str, Any], where: str) -> tuple[str, str | None]:
        """The row's text and, for pair tasks, its second text: one check for both tasks."""
        text = require_text(row.get(cfg.text), cfg.text, where)
        if not cfg.text_pair:
            return text, None
        return text, require_text(row.get(cfg.text_pair), cfg.text_pair, where)

    @classmethod
    def parse_row(cls, cfg: ClassificationConfig, row: TableRow, where: str) -> Example:
        text, pair = cls.texts(cfg, row, where)
        raw = row.get(cfg.label)
        if raw is None or raw != raw or (isinstance(raw, str) and not raw.strip()):
            raise DataValueError(
                f"{where}: column '{cfg.label}' (label) is empty (null/NaN)",
                fix="label the row or remove it",
            )
        return Example(source=text, pair=pair, target=_label_key(raw), where=where)

    def examples(self, table: Table, split: str) -> list[Example]:
        out = self.parsed(table)
        labels: dict[tuple[str, str], tuple[str, str]] = {}
        for example in out:
            example.target = labels.setdefault(example.target, example.target)  # one per class
        return out

    def fit(self, train: list[Example]) -> None:
        kinds = {ex.target[0] for ex in train}
        if len(kinds) > 1:
            first_str = next(ex for ex in train if ex.target[0] == "str")
            raise LabelError(
                f"{first_str.where}: label {first_str.target[1]!r} is text while other labels are "
                "integers (mixed label types)",
                fix="use either integer labels or string labels throughout",
            )
        values = {ex.target[1] for ex in train}
        if len(values) < 2:
            raise LabelError(
                f"{train[0].where.rsplit(' line', 1)[0]}: every training label is "
                f"{next(iter(values))!r}; classification needs at least two classes",
                fix="check the label column, or add examples of the other classes",
            )
        self.state.labels = sorted(values, key=_label_order if kinds == {"int"} else None)
        # getattr: a task built on this one may have a section without `metric`
        if getattr(self.cfg, "metric", "auto") == "f1" and len(self.state.labels) != 2:
            raise LabelError(
                f"task.metric: f1 is the positive class's F1 of a two-label task; the training "
                f"data has {len(self.state.labels)} labels ({', '.join(self.state.labels[:10])})",
                fix="use task.metric: f1_macro (or accuracy, matthews_correlation)",
            )

    def check_example(self, example: Example) -> None:
        if example.target is not None:
            self.label_id(example)

    def label_id(self, example: Example) -> int:
        try:
            return self.state.labels.index(example.target[1])
        except ValueError:
            raise LabelError(
                f"{example.where}: label {example.target[1]!r} never appears in the training data "
                f"(training labels: {', '.join(self.state.labels)})",
                fix="fix the label, or add training examples of this class",
            ) from None

    def feature_label(self, example: Example) -> float:
        """What an encoded example's `labels` holds: the class id here."""
        return self.label_id(example)

    def positive_id(self) -> int | None:
        """The positive class's id of a two-label task (scores.positive_label), else None."""
        positive = positive_label(self.state.labels)
        return None if positive is None else self.state.labels.index(positive)

    def model_config_overrides(self) -> ModelOverrides:
        labels = self.state.labels
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }

    def pair_texts(self, examples: list[Example]) -> list[str] | None:
        """Second texts, led by PAIR_SEPARATOR when the tokenizer puts nothing between a pair."""
        if not self.cfg.text_pair:
            return None
        tok = self.tokenizer
        separated = tok.num_special_tokens_to_add(pair=True) > tok.num_special_tokens_to_add()
        lead = "" if separated else PAIR_SEPARATOR
        return [lead + (ex.pair or "") for ex in examples]

    def encode(self, examples: list[Example], training: bool) -> list[Feature]:
        texts = [ex.source for ex in examples]
        limit = self.settings.max_length
        encoded, cut = tokenize_counting_truncation(
            self.tokenizer, texts, limit, self.pair_texts(examples)
        )
        warn_truncated(cut, len(texts), limit, "inputs")
        segments = encoded.get("token_type_ids")
        features = []
        for i, (ex, seq) in enumerate(zip(examples, encoded["input_ids"])):
            feat: Feature = {"input_ids": seq, "idx": i, "length": len(seq)}
            if segments is not None:
                feat["token_type_ids"] = segments[i]
            if ex.target is not None:
                feat["labels"] = self.feature_label(ex)
            features.append(feat)
        return features

    def collate(self, features: list[Feature]) -> Batch:
        import torch

        pad_id = self.tokenizer.pad_token_id
        width = max(f["length"] for f in features)
        ids = torch.full((len(features), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        segments = "token_type_ids" in features[0]
        types = torch.zeros((len(features), width), dtype=torch.long)  # padding: segment 0
        for row, feat in enumerate(features):
            seq = feat["input_ids"]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
            if segments:
                types[row, : len(seq)] = torch.tensor(feat["token_type_ids"], dtype=torch.long)
        batch: Batch = {"input_ids": ids, "attention_mask": mask}
        if segments:
            batch["token_type_ids"] = types
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            batch["labels"] = torch.tensor(labels, dtype=getattr(torch, self.label_dtype))
        batch["idx"] = torch.tensor([f["idx"] for f in features], dtype=torch.long)
        return batch

    def eval_batch(
        self, model: Model, batch: Batch, predict: bool
    ) -> tuple[list[float] | None, list[Any] | None]:
        import torch

        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        logits = model(**inputs).logits.float()
        losses = None
        if "labels" in batch:
            ce = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
            losses = ce.tolist()
        probs = torch.softmax(logits, dim=-1)
        best = probs.argmax(dim=-1)
        return losses, [(int(b), probs[i].tolist()) for i, b in enumerate(best)]

    def metrics(self, predictions: list[Any], examples: list[Example]) -> Mapping[str, JSON]:
        """Accuracy, macro-F1, Matthews correlation and, with two labels, the positive class's
        F1 (`tasks/scores.py`)."""
        y_pred, y_true = self.evaluate_inputs(predictions, examples)
        return classification_scores(y_true, y_pred, self.positive_id())

    def evaluate_inputs(
        self, predictions: list[Any], examples: list[Example]
    ) -> tuple[list[Any], list[Any]]:
        """(predictions, references) as metric code takes them: class ids."""
        return [p[0] for p in predictions], [self.label_id(ex) for ex in examples]

    def report(self, predictions: list[Any], examples: list[Example]) -> JSONObject | None:
        """Per-class precision/recall/F1/support and the confusion matrix (rows: truth)."""
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        labels = self.state.labels
        ids = list(range(len(labels)))
        y_pred = [p[0] for p in predictions]
        y_true = [self.label_id(ex) for ex in examples]
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=ids, zero_division=0
        )
        present = sorted(set(y_true) | set(y_pred))
        return {
            "labels": labels,
            "per_class": {
                label: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, label in enumerate(labels)
            },
            "macro_f1_classes": [labels[i] for i in present],
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
            "confusion_matrix_axes": "rows: true label, columns: predicted label (order of labels)",
        }

    def prediction_record(self, prediction: Any, example: Example) -> JSONObject:
        best, probs = prediction
        record: JSONObject = {
            "text": example.source,
            "label": self.state.labels[best],
            "probability": round(probs[best], 6),
        }
        if example.pair is not None:
            record["text_pair"] = example.pair
        if example.target is not None:
            record["reference"] = example.target[1]
        return record

    def examples_from_texts(self, texts: list[str]) -> list[Example]:
        """A pair task's inputs are its two texts separated by a tab; one text alone would be
        scored as if its pair were empty, a plausible-looking wrong answer, so it is refused."""
        out = []
        for i, text in enumerate(texts):
            source, tab, pair = text.partition("\t") if self.cfg.text_pair else (text, "", "")
            if self.cfg.text_pair and not (tab and source.strip() and pair.strip()):
                raise DataValueError(
                    f"input {i + 1}: this run was trained on text pairs "
                    f"({self.cfg.text} + {self.cfg.text_pair}), but the input is one text",
                    fix="give both texts separated by a tab, e.g. --text $'first\\tsecond' "
                    "or one pair per line of --file",
                )
            out.append(
                Example(source=source, pair=pair or None, target=None, where=f"input {i + 1}")
            )
        return out
