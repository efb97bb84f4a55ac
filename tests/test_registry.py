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
