"""recipes/suites/glue_small.yaml: CoLA, MRPC, STS-B and SST-2 on the bundled MiniLM, each with
its GLUE metric, as recipes of recipes/ (validated with the other recipes in test_recipe.py)."""

from __future__ import annotations

import yaml

from finetune.commands.validate import expand_recipes
from finetune.recipe.io import load_recipe
from finetune.tasks.main_metric import main_metric
from tests.conftest import REPO

SUITE = REPO / "recipes" / "suites" / "glue_small.yaml"


def test_glue_small_lists_the_four_tasks_with_their_metrics():
    suite = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    assert set(suite) == {"tasks"}
    found = {}
    for entry in suite["tasks"]:
        assert set(entry) == {"recipe", "overrides"} and isinstance(entry["overrides"], list)
        path = (SUITE.parent / entry["recipe"]).resolve()
        recipe = load_recipe(path)
        assert recipe.model.name == "bundled:minilm-l6" and recipe.method.name == "lora"
        found[path.stem] = (recipe.task.type, main_metric(recipe.task))
    assert found == {
        "glue_cola": ("classification", "matthews_correlation"),
        "glue_mrpc": ("classification", "f1"),
        "glue_stsb": ("regression", "pearson"),
        "glue_sst2": ("classification", "accuracy"),
    }


def test_validate_on_the_recipes_folder_skips_suites():
    found = expand_recipes([REPO / "recipes"])
    assert SUITE not in found and REPO / "recipes" / "glue_cola.yaml" in found
