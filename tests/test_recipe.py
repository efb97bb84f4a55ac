"""Recipe schema, overrides and validation errors (no weights are loaded here)."""

from __future__ import annotations

import pytest

from finetune.cli import app
from finetune.recipe.io import allowed_keys, apply_overrides, build_recipe
from finetune.recipe.schema import METHOD_NAMES, Recipe
from finetune.setup.checks import check_recipe
from tests.conftest import REPO, SHARED_DATA, classification_recipe, write_recipe

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
GLUE_DATA = "glue_data/"  # where the GLUE recipes expect GLUE as shipped; tests read ../shared


def glue_overrides(path) -> list[str]:
    """`--set` overrides pointing a recipe's glue_data/ files at ../shared/data/glue."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))["data"]
    found = []
    for split in ("train", "eval", "test"):
        source = data.get(split)
        where = source.get("path") if isinstance(source, dict) else source
        if isinstance(where, str) and where.startswith(GLUE_DATA):
            key = f"data.{split}.path" if isinstance(source, dict) else f"data.{split}"
            found.append(f"{key}={SHARED_DATA / 'glue' / where.removeprefix(GLUE_DATA)}")
    return found


def test_bundled_recipes_exist():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_bundled_recipe_validates(path, runner, monkeypatch):
    """Every row of every data file is read; the GLUE recipes read ../shared's GLUE files as
    GLUE ships them. Without ../shared, their only problem may be the absent GLUE files."""
    monkeypatch.chdir(REPO)
    args = ["validate", str(path.relative_to(REPO))]
    overrides = glue_overrides(path)
    if overrides and not (SHARED_DATA / "glue").is_dir():
        result = runner.invoke(app, args)
        problems = [line for line in result.output.splitlines() if line.startswith("  - ")]
        assert problems and all(f"file not found: {GLUE_DATA}" in p for p in problems)
        return
    for override in overrides:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_bundled_recipe_has_description_and_launch_line(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 10
    assert any(
        line.startswith("# finetune run") or "accelerate launch" in line for line in lines[:5]
    )


def _base(tmp_path, tiny_model_dir, sentiment_files, **method):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora", **method}
    )
    return write_recipe(tmp_path / "r.yaml", data)


def test_valid_recipe_has_no_problems(tmp_path, tiny_model_dir, sentiment_files):
    recipe, problems = check_recipe(_base(tmp_path, tiny_model_dir, sentiment_files))
    assert problems == []
    assert recipe.method.r == 8 and recipe.train.batch_size == 16


def test_overrides_are_typed_like_the_file(tmp_path, tiny_model_dir, sentiment_files):
    path = _base(tmp_path, tiny_model_dir, sentiment_files)
    recipe, problems = check_recipe(
        path, ["train.epochs=3", "method.r=16", "train.lr=1e-4", "train.group_by_length=false"]
    )
    assert problems == []
    assert (recipe.train.epochs, recipe.method.r, recipe.train.lr) == (3, 16, 1e-4)
    assert recipe.train.group_by_length is False


def test_override_can_switch_method_union(tmp_path, tiny_model_dir, sentiment_files):
    path = _base(tmp_path, tiny_model_dir, sentiment_files)
    recipe, problems = check_recipe(path, ["method={name: full}"])
    assert problems == [] and recipe.method.name == "full"


def test_override_on_shorthand_data_path():
    data = {"data": {"train": "a.csv"}}
    apply_overrides(data, ["data.train.format=tsv"])
    assert data["data"]["train"] == {"path": "a.csv", "format": "tsv"}


def test_unknown_key_gets_did_you_mean(tmp_path, tiny_model_dir, sentiment_files):
    path = _base(tmp_path, tiny_model_dir, sentiment_files)
    _, problems = check_recipe(path, ["train.epoch=2", "method.rank=4"])
    fixes = {p.where.rsplit(": ", 1)[1]: (p.message, p.fix) for p in problems}
    assert fixes["train.epoch"] == ("unknown key", "did you mean 'epochs'?")
    # no close match: every allowed key of the method is listed instead
    message, fix = fixes["method.rank"]
    assert message == "unknown key" and fix.startswith("allowed keys: ")
    assert {"r", "alpha", "dropout", "target_modules"} <= set(fix.split(": ", 1)[1].split(", "))


def test_every_problem_reported_at_once(tmp_path, tiny_model_dir, sentiment_files):
    path = _base(tmp_path, tiny_model_dir, sentiment_files)
    _, problems = check_recipe(
        path, ["train.epochs=zero", "train.batch_size=-1", "method.r=0", "eval.bogus=1"]
    )
    where = " ".join(p.where for p in problems)
    for key in ("train.epochs", "train.batch_size", "method.r", "eval.bogus"):
        assert key in where
    assert "lora" not in where.split(": ", 1)[1]  # union tags never leak into key paths


def test_missing_data_file_and_column_reported(tmp_path, tiny_model_dir, sentiment_files):
    path = _base(tmp_path, tiny_model_dir, sentiment_files)
    _, problems = check_recipe(path, ["data.eval=nope.csv", "task.label=sentiment"])
    text = "\n".join(p.render() for p in problems)
    assert "data.eval" in text and "file not found: nope.csv" in text
    assert "no column 'sentiment'" in text and "data.train" in text


def test_method_discriminator_lists_choices():
    _, problems = build_recipe(
        {
            "model": {"name": "gpt2"},
            "task": {"type": "classification"},
            "data": {"train": "x.csv"},
            "method": {"name": "lorax"},
        },
        "r.yaml",
    )
    assert len(problems) == 1 and "method" in problems[0].where
    assert "lora" in problems[0].message and "houlsby" in problems[0].message


def test_allowed_keys_follow_union_tags():
    assert "r" in allowed_keys(("method", "lora"))
    assert "reduction_factor" in allowed_keys(("method", "houlsby"))
    assert "hub" in allowed_keys(("data", "train", "hub"))


def test_method_names_match_schema():
    from finetune.recipe.io import models_in, tag_of
    from finetune.recipe.schema import MethodConfig

    tags = set().union(*(tag_of(m) for m in models_in(MethodConfig)))
    assert tags == set(METHOD_NAMES)


def test_cli_validate_exit_codes(tmp_path, runner, tiny_model_dir, sentiment_files):
    good = _base(tmp_path, tiny_model_dir, sentiment_files)
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0 and "✓" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: x}\ntask: {type: classification}\nmethod: {name: lora, r: two}\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "method.r" in result.output and "data: required key is missing" in result.output
    assert "Traceback" not in result.output


def test_invalid_yaml_names_line(tmp_path, runner):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert (
        result.exit_code == 2 and "bad.yaml:" in result.output and "invalid YAML" in result.output
    )


def test_unsupported_family_rejected(tmp_path, runner, sentiment_files):
    model = tmp_path / "falcon"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "falcon"}')
    train, dev = sentiment_files
    path = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(model, train, dev, tmp_path / "o", {"name": "lora"}),
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "'falcon'" in result.output and "gpt2" in result.output


def test_recipe_round_trips_through_yaml(tmp_path, tiny_model_dir, sentiment_files):
    import yaml

    from finetune.recipe.io import dump_recipe

    recipe, _ = check_recipe(_base(tmp_path, tiny_model_dir, sentiment_files))
    again = Recipe.model_validate(yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe


def test_schema_table_in_readme_is_current():
    from finetune.docs.options import markdown_table

    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, "regenerate with: python -m finetune.docs.options"


def test_help_lists_commands(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "run",
        "validate",
        "eval",
        "predict",
        "recipes",
        "options",
        "compare",
        "merge",
        "push",
    ):
        assert command in result.output


def test_options_command_comes_from_schema(runner):
    result = runner.invoke(app, ["options", "train"])
    assert result.exit_code == 0
    for name in Recipe.model_fields["train"].annotation.model_fields:
        assert f"train.{name}" in result.output


def _assert_cli_stays_light(commands: str) -> None:
    """Run `commands` (CliRunner calls that must exit 0) in a fresh interpreter and fail if
    torch, transformers, peft or accelerate got imported."""
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from finetune.cli import app; "
        + commands
        + "; bad = [m for m in ('torch', 'transformers', 'peft', 'accelerate') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_does_not_import_torch():
    _assert_cli_stays_light(
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "r = CliRunner().invoke(app, ['run', '--help']); assert r.exit_code == 0"
    )


def test_validate_of_every_recipe_does_not_import_torch():
    """Issue #12: `finetune validate recipes/` stays torch-free (schema, files, rows, family,
    method support are all checked without the heavy libraries)."""
    _assert_cli_stays_light(
        "r = CliRunner().invoke(app, ['validate', 'recipes/quickstart.yaml', "
        "'recipes/bert2bert_lora_multi30k.yaml']); print(r.output); "
        "assert r.exit_code == 0, r.output"
    )


def test_methods_table_in_readme_is_current():
    from finetune.docs.methods import render_table

    readme = (REPO / "README.md").read_text()
    assert render_table() in readme, "regenerate with: python -m finetune.docs.methods"


def test_missing_file_reported_alongside_schema_errors(tmp_path, tiny_model_dir, sentiment_files):
    path = _base(tmp_path, tiny_model_dir, sentiment_files)
    _, problems = check_recipe(path, ["train.lr=abc", "data.eval=nope.csv"])
    text = "\n".join(p.render() for p in problems)
    assert "train.lr" in text and "data.eval: file not found: nope.csv" in text


def test_eval_file_and_eval_fraction_together_are_refused(
    tmp_path, tiny_model_dir, sentiment_files
):
    """eval_fraction holds rows out of train only without data.eval: both set, one is ignored.
    Refused by validate / run, not by the schema: older run directories that hold both still
    load."""
    from finetune.setup.checks import check_recipe

    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}
    )
    data["data"]["eval_fraction"] = 0.1
    path = write_recipe(tmp_path / "r.yaml", data)
    recipe, problems = check_recipe(path)
    assert recipe is not None  # the schema accepts it: old runs' recipe.yaml files load
    (problem,) = problems
    assert problem.where.endswith("data.eval_fraction") and "beside data.eval" in problem.message


def test_a_sections_cross_key_check_reads_as_its_own_sentence():
    """No pydantic 'Value error, ...' prefix or '(got dict)' suffix around the sentence."""
    from finetune.recipe.io import build_recipe

    data = {
        "model": {"name": "bert-base-uncased"},
        "task": {"type": "classification"},
        "data": {"train": "train.csv"},
        "method": {"name": "lora"},
        "train": {"cuda_graphs": True, "compile": False},
    }
    recipe, problems = build_recipe(data, "r.yaml")
    assert recipe is None and len(problems) == 1
    (problem,) = problems
    assert problem.where == "r.yaml: train"
    assert problem.message.startswith("train.cuda_graphs: true compiles the training forward")
    assert "Value error" not in problem.message and "(got dict)" not in problem.message


def test_the_rate_in_use_is_logged_with_where_it_came_from():
    """`method=vera` on a LoRA recipe keeps LoRA's 2e-3, 16x below VeRA's default."""
    from finetune.methods import METHODS
    from finetune.recipe.schema import rate_note

    def recipe(method: str, lr: float | None) -> Recipe:
        return Recipe.model_validate(
            {
                "model": {"name": "bert-base-uncased"},
                "task": {"type": "classification"},
                "data": {"train": "train.csv"},
                "method": {"name": method},
                "train": {"lr": lr},
            }
        )

    vera = METHODS["vera"].default_lr
    assert rate_note(recipe("vera", None)) == f"learning rate {vera:g} (vera's default)"
    far = rate_note(recipe("vera", vera / 16))
    assert f"the recipe's (vera's default is {vera:g}; train.lr=null runs at it)" in far
    near = rate_note(recipe("vera", vera / 2))
    assert near.endswith(f"(vera's default is {vera:g})")
