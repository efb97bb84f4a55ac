"""Learning rates that fit the method (train.lr: null) and `method=NAME` on the command line."""

from __future__ import annotations

import json

import pytest
import yaml

from finetune.cli import app
from finetune.docs.methods import render_lr_table
from finetune.methods import METHODS
from finetune.recipe.schema import Recipe, TrainConfig
from finetune.setup.checks import check_recipe
from tests.conftest import REPO, classification_recipe, write_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


# --------------------------------------------------------------------------- learning rates


def test_lr_defaults_to_null_in_the_schema():
    assert TrainConfig().lr is None
    assert "default_lr" in TrainConfig.model_fields["lr"].description


@pytest.mark.parametrize("name", list(METHODS))
def test_resolved_recipe_takes_the_method_default_lr(name):
    recipe = Recipe.model_validate(
        {
            "model": {"name": "m"},
            "task": {"type": "classification"},
            "data": {"train": "t.csv"},
            "method": {"name": name},
        }
    )
    assert recipe.resolved().train.lr == METHODS[name].default_lr
    assert recipe.train.lr is None  # resolving copies; the parsed recipe is left as written
    explicit = recipe.model_copy(update={"train": TrainConfig(lr=1e-4)})
    assert explicit.resolved().train.lr == 1e-4


@pytest.mark.parametrize(
    ("optimizer", "want"), [("adamw", 2e-3), ("loraplus", 1e-3), ("lorafa", 3.2e-2)]
)
def test_an_unset_rate_follows_the_lora_optimizer(optimizer, want):
    """LoRA+ at LoRA's AdamW rate diverged on the quick start (B moves 16x faster); LoRA-FA
    needs a larger one: the default scales with the optimizer, an explicit rate is kept."""
    data = {
        "model": {"name": "m"},
        "task": {"type": "classification"},
        "data": {"train": "t.csv"},
        "method": {"name": "lora"},
        "train": {"optimizer": optimizer},
    }
    assert Recipe.model_validate(data).resolved().train.lr == pytest.approx(want)
    data["train"]["lr"] = 1e-4
    assert Recipe.model_validate(data).resolved().train.lr == 1e-4


def test_compare_rows_of_other_methods_take_their_scaled_default():
    from finetune.comparison.recipes import method_recipe

    base = {"method": {"name": "full"}, "train": {"optimizer": "loraplus", "lr": 5e-5}}
    assert method_recipe(base, "lora")["train"]["lr"] == pytest.approx(1e-3)
    assert method_recipe(base, "full")["train"]["lr"] == 5e-5  # the recipe's own rate


def test_every_method_says_where_its_default_lr_comes_from():
    for name, method in METHODS.items():
        assert method.lr_source.strip(), f"{name}: set lr_source next to default_lr"


def test_lr_table_in_readme_is_current():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert render_lr_table() in readme, "regenerate with: python -m finetune.docs.methods --readme"


def test_run_without_lr_trains_at_the_method_default_and_records_it(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    train, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        out,
        {"name": "lora"},
        epochs=1,
        scheduler="constant",
        warmup_fraction=0.0,
    )
    del data["train"]["lr"]
    recipe = write_recipe(tmp_path / "r.yaml", data)
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    want = METHODS["lora"].default_lr
    assert want != 5e-4  # the old global default: the test must tell the two apart
    assert json.loads((out / "run.json").read_text())["lr"] == want
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["train"]["lr"] == want
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rates = [rec["lr"] for rec in logged if "lr" in rec]
    assert rates and all(rate == pytest.approx(want) for rate in rates)  # constant schedule


# --------------------------------------------------------------------------- method switch


def test_method_override_replaces_the_section_with_the_methods_defaults():
    recipe, problems = check_recipe(QUICKSTART, ["method=ia3"])
    assert not problems, [p.render() for p in problems]
    assert recipe is not None and recipe.method.name == "ia3"
    assert recipe.method.model_dump() == {
        "name": "ia3",
        "target_modules": "auto",
        "feedforward_modules": "auto",
    }
    assert recipe.train.lr == 2e-3  # train.lr is the recipe's; train.lr=null gives ia3's
    recipe, _ = check_recipe(QUICKSTART, ["method=ia3", "train.lr=null"])
    assert recipe is not None and recipe.resolved().train.lr == METHODS["ia3"].default_lr


def test_method_override_then_method_options_apply_in_order():
    recipe, problems = check_recipe(QUICKSTART, ["method=dora", "method.r=4"])
    assert not problems and recipe is not None
    assert (recipe.method.name, recipe.method.r, recipe.method.dropout) == ("dora", 4, 0.05)
    recipe, problems = check_recipe(QUICKSTART, ["method.r=4", "method=dora"])
    assert not problems and recipe is not None and recipe.method.r == 8  # the switch came last


def test_method_name_override_with_foreign_keys_says_to_use_method_equals():
    _, problems = check_recipe(QUICKSTART, ["method.name=ia3"])
    keys = sorted(p.where.rsplit(" ", 1)[-1] for p in problems)
    assert keys == ["method.alpha", "method.dropout", "method.r"]
    for problem in problems:
        assert "not of ia3: remove it" in problem.fix and "lora" in problem.fix
        assert "`method=ia3` replaces the whole section" in problem.fix


def test_cli_run_with_method_name_fails_before_loading_and_points_at_method_equals(runner):
    result = runner.invoke(app, ["run", str(QUICKSTART), "method.name=ia3"])
    assert result.exit_code == 2
    assert "method=ia3" in result.output and "E100" in result.output
    result = runner.invoke(app, ["validate", str(QUICKSTART), "--set", "method=ia3"])
    assert result.exit_code == 0, result.output
