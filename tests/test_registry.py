"""One registry per concept: a method added in one place is seen by every consumer.

The dummy is registered in a fresh interpreter before the schema is imported, exactly as a new
entry in `finetune/methods/__init__.py` would be, and then looked for in the recipe schema, the
option table, `validate`, `compare`'s learning rates, `merge`'s message, the support table and
the guards. Nothing else is edited, so a consumer that keeps its own list fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

PROBE = r"""
import json, pathlib, sys
from typing import Literal
from pydantic import Field
import finetune.methods as registry
from finetune.methods.full import FullMethod
from finetune.recipe.section import Section

class DummyConfig(Section):
    name: Literal["dummy"] = Field(description="Method: a test-only method.")
    knob: int = Field(3, description="A dummy option.")

class DummyMethod(FullMethod):
    name = "dummy"
    config_class = DummyConfig
    default_lr = 1.25e-3
    trains_backbone = True
    mergeable = True

registry.METHODS["dummy"] = DummyMethod()

from finetune.commands.compare import method_recipe, parse_methods
from finetune.methods import mergeable_names
from finetune.docs.methods import render_table
from finetune.docs.options import option_rows
from finetune.recipe.io import build_recipe
from finetune.recipe.schema import METHOD_NAMES

recipe, problems = build_recipe({
    "model": {"name": "x"}, "task": {"type": "classification"},
    "data": {"train": "t.csv"}, "method": {"name": "dummy", "knob": 5},
}, "r.yaml")
bad, bad_problems = build_recipe({
    "model": {"name": "x"}, "task": {"type": "classification"},
    "data": {"train": "t.csv"}, "method": {"name": "dummy", "r": 5},
}, "r.yaml")
print(json.dumps({
    "names": list(METHOD_NAMES),
    "knob": recipe.method.knob if recipe else None,
    "problems": [p.message for p in problems],
    "bad_problems": [p.where + ": " + p.message for p in bad_problems],
    "options": [r.key for r in option_rows("method") if "(dummy)" in r.description],
    "compare_lr": method_recipe({"method": {"name": "lora"}}, "dummy")["train"]["lr"],
    "parsed": parse_methods("dummy,lora"),
    "mergeable": mergeable_names(),
    "table": "`dummy`" in render_table(),
}))
"""


def test_dummy_method_registered_once_is_seen_everywhere():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "dummy" in seen["names"]
    assert seen["knob"] == 5 and seen["problems"] == []
    assert any("method.r" in p for p in seen["bad_problems"])  # its own keys, not LoRA's
    assert "method.knob" in seen["options"]
    assert seen["compare_lr"] == 1.25e-3
    assert seen["parsed"] == ["dummy", "lora"]
    assert "dummy" in seen["mergeable"]
    assert seen["table"] is True


# ------------------------------------------------------------------- a task, an architecture

TASK_PROBE = r"""
import json, pathlib, sys
from typing import Literal
from pydantic import Field
import finetune.tasks as registry
from finetune.recipe.section import Section
from finetune.tasks.classification import ClassificationTask

class PolarityOptions(Section):
    type: Literal["polarity"] = Field(description="Task kind.")
    text: str = Field("text", description="Column with the input text.")
    label: str = Field("label", description="Column with the polarity.")
    text_pair: None = None

class PolarityTask(ClassificationTask):
    name = "polarity"
    config_class = PolarityOptions
    pipeline_tag = "text-classification"

registry.TASKS["polarity"] = PolarityTask

from finetune.commands.run import run
from finetune.docs.methods import columns
from finetune.docs.options import option_rows
from finetune.recipe.schema import TASK_TYPES
from finetune.setup.checks import check_recipe
from tests.conftest import classification_recipe, write_csv, write_recipe
from tests.tiny_models import build_bert, sentiment_rows

tmp = pathlib.Path(sys.argv[1])
train = write_csv(tmp / "train.csv", sentiment_rows(48, seed=1))
dev = write_csv(tmp / "dev.csv", sentiment_rows(16, seed=2))
data = classification_recipe(build_bert(tmp / "bert"), train, dev, tmp / "run", {"name": "lora"})
data["task"] = {"type": "polarity"}
data["train"]["epochs"] = 1
recipe = write_recipe(tmp / "r.yaml", data)
_, problems = check_recipe(recipe)
summary = run(recipe, progress=False)
card = (tmp / "run" / "README.md").read_text()
print(json.dumps({
    "types": list(TASK_TYPES),
    "options": [r.key for r in option_rows("task") if "(polarity)" in r.description],
    "problems": [p.message for p in problems],
    "columns": [c for c in columns() if "polarity" in c],
    "accuracy": summary.metrics.get("accuracy"),
    "run_task": json.loads((tmp / "run" / "run.json").read_text())["task"],
    "card_tag": "pipeline_tag: text-classification" in card,
}))
"""


def test_dummy_task_registered_once_trains_and_is_documented(tmp_path):
    """CONTRIBUTING's "Add a task": one entry in TASKS (here a classification task of its own
    name and section) reaches the schema, the option table, validate, the support table's
    columns, a whole training run and its run.json and card."""
    done = subprocess.run(
        [sys.executable, "-c", TASK_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "polarity" in seen["types"]
    assert {"task.text", "task.label"} <= set(seen["options"])
    assert seen["problems"] == []
    assert seen["columns"] and all(c.endswith("polarity") for c in seen["columns"])
    assert seen["accuracy"] is not None and 0.0 <= seen["accuracy"] <= 1.0
    assert seen["run_task"] == "polarity" and seen["card_tag"]


ARCH_PROBE = r"""
import json, pathlib, sys
from dataclasses import replace
import transformers
from transformers import BertConfig, BertForSequenceClassification, BertModel

class PolarBertConfig(BertConfig):
    model_type = "polarbert"

class PolarBertModel(BertModel):
    config_class = PolarBertConfig

class PolarBertForSequenceClassification(BertForSequenceClassification):
    config_class = PolarBertConfig

transformers.AutoConfig.register("polarbert", PolarBertConfig)
transformers.AutoModel.register(PolarBertConfig, PolarBertModel)
transformers.AutoModelForSequenceClassification.register(
    PolarBertConfig, PolarBertForSequenceClassification
)

import finetune.models as models
row = replace(models.ARCHITECTURES["bert"], model_type="polarbert", display="PolarBERT")
models.ARCHITECTURES["polarbert"] = row

from finetune.commands.run import run
from finetune.docs.architectures import render_table
from finetune.setup.checks import check_recipe
from tests.conftest import classification_recipe, write_csv, write_recipe
from tests.tiny_models import build_bert, sentiment_rows

tmp = pathlib.Path(sys.argv[1])
model = build_bert(tmp / "polarbert")
config = json.loads((model / "config.json").read_text())
config["model_type"] = "polarbert"
(model / "config.json").write_text(json.dumps(config))
train = write_csv(tmp / "train.csv", sentiment_rows(48, seed=1))
dev = write_csv(tmp / "dev.csv", sentiment_rows(16, seed=2))
data = classification_recipe(model, train, dev, tmp / "run", {"name": "lora"})
data["train"]["epochs"] = 1
recipe = write_recipe(tmp / "r.yaml", data)
_, problems = check_recipe(recipe)
summary = run(recipe, progress=False)
info = json.loads((tmp / "run" / "run.json").read_text())
print(json.dumps({
    "problems": [p.message for p in problems],
    "table": "`polarbert`" in render_table() or "polarbert" in render_table(),
    "architecture": info["architecture"],
    "accuracy": summary.metrics.get("accuracy"),
    "trainable": info["parameters"]["trainable"],
}))
"""


def test_dummy_architecture_registered_once_detects_trains_and_is_listed(tmp_path):
    """CONTRIBUTING's "Add a model architecture": one ARCHITECTURES row for a new model_type
    (a BERT layout under another name, registered with transformers' Auto classes as a user's
    custom model would be) is detected from config.json, validated, listed by `finetune models`
    and trained with LoRA on its table's targets."""
    done = subprocess.run(
        [sys.executable, "-c", ARCH_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["problems"] == [] and seen["table"] is True
    assert seen["architecture"] == "polarbert"
    assert seen["accuracy"] is not None and seen["trainable"] > 0
