"""Property tests: every malformed recipe is a clear problem naming its key; valid ones validate.

Malformations are derived from the schema itself (types, ranges, required keys, allowed keys of
every section and of every method), so a new option is fuzzed without touching this file. Most
examples call `check_recipe` directly (what `validate` and `run` both call); a sample goes
through the CLI to check exit code 2 and the absence of a traceback end to end.
"""

from __future__ import annotations

import copy
import json
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from finetune.cli import app
from finetune.data.sources import LocalSource
from finetune.methods import METHODS
from finetune.models import FAMILIES
from finetune.recipe.schema import (
    METHOD_NAMES,
    DataConfig,
    DecodingConfig,
    EvalConfig,
    ModelConfig,
    OutputConfig,
    TrainConfig,
)
from finetune.setup.checks import check_recipe
from finetune.tasks.classification import ClassificationConfig
from tests.tiny_models import sentiment_rows

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

# sections whose scalar fields are fuzzed, by their dotted path in a recipe
SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig,
    "task": ClassificationConfig,
    "data": DataConfig,
    "data.train": LocalSource,
    "train": TrainConfig,
    "eval": EvalConfig,
    "eval.generation": DecodingConfig,
    "output": OutputConfig,
}
# read from the registry: a new method is fuzzed without touching this file
METHOD_MODELS: dict[str, type[BaseModel]] = {
    name: method.config_class for name, method in METHODS.items()
}
ALL_METHOD_OPTIONS = sorted({k for m in METHOD_MODELS.values() for k in m.model_fields})


# --------------------------------------------------------------------------- a valid base


@pytest.fixture(scope="module")
def workdir() -> Path:
    """A bert-family model dir (config.json is all validate reads) and two small csv files."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for name, seed in (("train.csv", 1), ("dev.csv", 2)):
        rows = sentiment_rows(12, seed=seed)
        lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in rows]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def base_recipe(root: Path) -> dict[str, Any]:
    return {
        "model": {"name": str(root / "model")},
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": {"train": str(root / "train.csv"), "eval": str(root / "dev.csv")},
        "method": {"name": "lora", "r": 4},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
        "eval": {"batch_size": 8},
        "output": {"dir": str(root / "runs" / "x")},
    }


def section_of(recipe: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The dict at a dotted section path, created (and the data shorthand expanded) as needed."""
    node = recipe
    for part in dotted.split("."):
        child = node.get(part)
        if isinstance(child, str):
            child = {"path": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    return node


def write(root: Path, content: dict[str, Any] | str | bytes) -> Path:
    path = root / "recipe.yaml"
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def problems_for(root: Path, content: dict[str, Any] | str | bytes) -> tuple[Path, list]:
    path = write(root, content)
    recipe, problems = check_recipe(path)  # must never raise for a user mistake
    assert problems, f"accepted a malformed recipe: {content!r}"
    assert recipe is None, f"a malformed recipe came back as a Recipe: {content!r}"
    for problem in problems:
        assert "Traceback" not in problem.render()
        assert problem.where.startswith(str(path)), problem.where
    return path, problems


def assert_names_key(path: Path, problems: list, key: str) -> None:
    wheres = [p.where for p in problems]
    assert f"{path}: {key}" in wheres, (key, [p.render() for p in problems])


# --------------------------------------------------------------------------- schema walking


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner annotation, optional?) for `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def scalar_kind(model: type[BaseModel], key: str) -> str | None:
    """'int' | 'float' | 'bool' | 'str' | 'literal' for simple fields; None for the rest."""
    inner, _ = _unwrap(model.model_fields[key].annotation)
    if typing.get_origin(inner) is typing.Literal:
        return "literal"
    if inner in (int, float, bool, str):
        return inner.__name__
    return None


def scalar_fields(model: type[BaseModel]) -> list[str]:
    """Simple fields, without the discriminators (task.type, method.name) of the unions."""
    skip = ("name",) if model in METHOD_MODELS.values() else ("type",)
    return [k for k in model.model_fields if k not in skip and scalar_kind(model, k)]


def bounds(model: type[BaseModel], key: str) -> dict[str, Any]:
    """ge/gt/le/lt/min_length of a field, read from its pydantic metadata."""
    found: dict[str, Any] = {}
    for item in model.model_fields[key].metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length"):
            if hasattr(item, attr):
                found[attr] = getattr(item, attr)
    return found


WRONG_TYPE: dict[str, st.SearchStrategy] = {
    "int": st.sampled_from(["abc", "1.5x", [1], {"a": 1}, 1.5, "ten"]),
    "float": st.sampled_from(["abc", "1e-3e", [0.1], {"a": 1.0}, "fast"]),
    "bool": st.sampled_from(["maybe", [True], {"a": 1}, 2, "yes please"]),
    "str": st.sampled_from([[1, 2], {"a": "b"}, ["x"]]),
}


def wrong_value(model: type[BaseModel], key: str) -> st.SearchStrategy:
    kind = scalar_kind(model, key)
    if kind == "literal":
        inner, _ = _unwrap(model.model_fields[key].annotation)
        allowed = set(typing.get_args(inner))
        junk = st.text("abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12)
        return st.one_of(junk.filter(lambda v: v not in allowed), st.sampled_from([[1], {"x": 1}]))
    return WRONG_TYPE[kind or "str"]


def out_of_range(model: type[BaseModel], key: str) -> st.SearchStrategy | None:
    """Values just and far outside each numeric bound of a field, or '' under min_length."""
    found = bounds(model, key)
    is_int = scalar_kind(model, key) == "int"
    options: list[st.SearchStrategy] = []
    finite = {"allow_nan": False, "allow_infinity": False}
    if "ge" in found:
        lo = found["ge"]
        options.append(
            st.integers(lo - 10**6, lo - 1)
            if is_int
            else st.floats(max_value=lo, exclude_max=True, min_value=lo - 1e6, **finite)
        )
    if "gt" in found:
        lo = found["gt"]
        options.append(st.integers(lo - 10**6, lo) if is_int else st.floats(lo - 1e6, lo, **finite))
    if "le" in found:
        hi = found["le"]
        options.append(
            st.integers(hi + 1, hi + 10**6)
            if is_int
            else st.floats(min_value=hi, exclude_min=True, max_value=hi + 1e6, **finite)
        )
    if "lt" in found:
        hi = found["lt"]
        options.append(st.integers(hi, hi + 10**6) if is_int else st.floats(hi, hi + 1e6, **finite))
    if "min_length" in found:
        options.append(st.just(""))
    return st.one_of(options) if options else None


def valid_value(model: type[BaseModel], key: str) -> st.SearchStrategy:
    """A value the schema accepts for a simple field (small numbers keep runs cheap)."""
    kind = scalar_kind(model, key)
    inner, optional = _unwrap(model.model_fields[key].annotation)
    found = bounds(model, key)
    if kind == "literal":
        strategy: st.SearchStrategy = st.sampled_from(typing.get_args(inner))
    elif kind == "bool":
        strategy = st.booleans()
    elif kind == "str":
        strategy = st.text("abcdefgh ", min_size=max(1, found.get("min_length", 0)), max_size=8)
    elif kind == "int":
        lo = found["ge"] if "ge" in found else found["gt"] + 1 if "gt" in found else 0
        hi = found["le"] if "le" in found else found["lt"] - 1 if "lt" in found else lo + 1000
        strategy = st.integers(lo, min(hi, lo + 1000))
    else:
        strategy = st.floats(
            found.get("ge", found.get("gt", -10.0)),
            found.get("le", found.get("lt", 10.0)),
            exclude_min="gt" in found,
            exclude_max="lt" in found,
            allow_nan=False,
            allow_infinity=False,
        )
    return st.one_of(st.none(), strategy) if optional else strategy


FIELD_CHOICES = [(s, k) for s, m in SECTIONS.items() for k in scalar_fields(m)]
RANGED_CHOICES = [(s, k) for s, k in FIELD_CHOICES if out_of_range(SECTIONS[s], k) is not None]
METHOD_FIELDS = [(n, k) for n, m in METHOD_MODELS.items() for k in scalar_fields(m)]
METHOD_RANGED = [(n, k) for n, k in METHOD_FIELDS if out_of_range(METHOD_MODELS[n], k) is not None]


def test_schema_walk_covers_the_schema():
    """Guards the generators themselves: they must see the ranged and typed options."""
    assert ("train", "lr") in RANGED_CHOICES and ("train", "epochs") in RANGED_CHOICES
    assert ("model", "name") in RANGED_CHOICES  # min_length
    assert ("lora", "r") in METHOD_RANGED and ("prefix", "num_virtual_tokens") in METHOD_RANGED
    assert len(FIELD_CHOICES) >= 30


# --------------------------------------------------------------------------- malformed recipes


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_wrong_type_names_the_key(workdir, data):
    section, key = data.draw(st.sampled_from(FIELD_CHOICES), label="field")
    value = data.draw(wrong_value(SECTIONS[section], key), label="value")
    recipe = base_recipe(workdir)
    section_of(recipe, section)[key] = value
    path, problems = problems_for(workdir, recipe)
    assert_names_key(path, problems, f"{section}.{key}")


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_method_option_wrong_type_names_the_key(workdir, data):
    name, key = data.draw(st.sampled_from(METHOD_FIELDS), label="option")
    value = data.draw(wrong_value(METHOD_MODELS[name], key), label="value")
    recipe = base_recipe(workdir)
    recipe["method"] = {"name": name, key: value}
    path, problems = problems_for(workdir, recipe)
    assert_names_key(path, problems, f"method.{key}")


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_out_of_range_names_the_key(workdir, data):
    if data.draw(st.booleans(), label="in method"):
        name, key = data.draw(st.sampled_from(METHOD_RANGED), label="option")
        strategy = out_of_range(METHOD_MODELS[name], key)
        recipe = base_recipe(workdir)
        recipe["method"] = {"name": name, key: data.draw(strategy, label="value")}
        where = f"method.{key}"
    else:
        section, key = data.draw(st.sampled_from(RANGED_CHOICES), label="field")
        strategy = out_of_range(SECTIONS[section], key)
        recipe = base_recipe(workdir)
        section_of(recipe, section)[key] = data.draw(strategy, label="value")
        where = f"{section}.{key}"
    path, problems = problems_for(workdir, recipe)
    assert_names_key(path, problems, where)


KEY_NAMES = st.from_regex(r"[a-z][a-z_]{0,14}", fullmatch=True)
LEVELS = ["", *SECTIONS, "method"]


@settings(FUZZ, max_examples=200)
@given(level=st.sampled_from(LEVELS), key=KEY_NAMES, value=st.integers() | st.text(max_size=5))
def test_unknown_key_at_every_level(workdir, level, key, value):
    recipe = base_recipe(workdir)
    node = section_of(recipe, level) if level else recipe
    if key in node or key in _allowed(level, recipe):
        return
    node[key] = value
    path, problems = problems_for(workdir, recipe)
    dotted = f"{level}.{key}" if level else key
    assert_names_key(path, problems, dotted)
    unknown = [p for p in problems if p.where.endswith(dotted)]
    assert "unknown key" in unknown[0].message and unknown[0].fix


def _allowed(level: str, recipe: dict[str, Any]) -> set[str]:
    if level == "method":
        return set(METHOD_MODELS[recipe["method"]["name"]].model_fields)
    if not level:
        return {"model", "task", "data", "method", "train", "eval", "output"}
    return set(SECTIONS[level].model_fields)


@settings(FUZZ, max_examples=150)
@given(method=st.sampled_from(METHOD_NAMES), option=st.sampled_from(ALL_METHOD_OPTIONS))
def test_option_of_another_method_is_refused(workdir, method, option):
    if option in METHOD_MODELS[method].model_fields:
        return
    recipe = base_recipe(workdir)
    recipe["method"] = {"name": method, option: 4}
    path, problems = problems_for(workdir, recipe)
    assert_names_key(path, problems, f"method.{option}")
    hint = next(p.fix for p in problems if p.where.endswith(f"method.{option}"))
    assert "allowed keys" in hint or "did you mean" in hint


MISSING = [
    (("model",), "model"),
    (("task",), "task"),
    (("data",), "data"),
    (("method",), "method"),
    (("model", "name"), "model.name"),
    (("task", "type"), "task"),
    (("data", "train"), "data.train"),
    (("method", "name"), "method"),
]


@settings(FUZZ, max_examples=80)
@given(
    missing=st.lists(st.sampled_from(MISSING), min_size=1, max_size=3, unique=True),
    epochs=st.integers(1, 5),
)
def test_missing_required_keys_are_each_named(workdir, missing, epochs):
    recipe = base_recipe(workdir)
    recipe["train"]["epochs"] = epochs
    expected = []
    for keys, where in missing:
        parent = recipe
        for part in keys[:-1]:
            parent = parent.get(part) if isinstance(parent.get(part), dict) else {}
        if keys[-1] in parent:
            del parent[keys[-1]]
            expected.append(where)
    path, problems = problems_for(workdir, recipe)
    for where in expected:
        parent_gone = any(where.startswith(o + ".") for o in expected)
        if not parent_gone:
            assert_names_key(path, problems, where)


@settings(FUZZ, max_examples=60)
@given(
    section=st.sampled_from(["model", "task", "data", "method", "train", "eval", "output"]),
    value=st.sampled_from([5, "text", [1, 2], True, 1.5]),
)
def test_section_of_the_wrong_type(workdir, section, value):
    recipe = base_recipe(workdir)
    recipe[section] = value
    path, problems = problems_for(workdir, recipe)
    assert_names_key(path, problems, section)


CORRUPTIONS = [
    "key: [unclosed",
    "key: 'unterminated",
    "a: b: c",
    "\t- tab indented",
    "x: !!python/object/apply:os.system ['echo hi']",
    "x: *undefined_alias",
    "  - misplaced: list",
    "{",
    "key: {a: 1",
]


@settings(FUZZ, max_examples=100)
@given(corruption=st.sampled_from(CORRUPTIONS), at_line=st.integers(0, 40))
def test_invalid_yaml_names_file_line_and_column(workdir, corruption, at_line):
    lines = yaml.safe_dump(base_recipe(workdir), sort_keys=False).splitlines()
    at_line = min(at_line, len(lines))
    lines.insert(at_line, corruption)
    path, problems = problems_for(workdir, "\n".join(lines) + "\n")
    problem = problems[0]
    if "invalid YAML" in problem.message:
        line, column = problem.where.removeprefix(f"{path}:").split(":")
        assert int(line) >= 1 and int(column) >= 1 and problem.fix


EMPTY = ["", " ", "\n\n", "# just a comment\n", "---\n", "~\n", "null\n"]


@settings(FUZZ, max_examples=40)
@given(text=st.sampled_from(EMPTY), padding=st.text(" \n", max_size=5))
def test_empty_files_say_so(workdir, text, padding):
    path, problems = problems_for(workdir, text + padding)
    assert problems[0].where == str(path) and "empty" in problems[0].message


@settings(FUZZ, max_examples=150)
@given(garbage=st.binary(min_size=1, max_size=300))
def test_binary_garbage_is_a_problem_not_a_crash(workdir, garbage):
    problems_for(workdir, garbage)


@settings(FUZZ, max_examples=60)
@given(value=st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(min_size=1)))
def test_top_level_must_be_a_mapping(workdir, value):
    path, problems = problems_for(workdir, yaml.safe_dump(value))
    assert problems[0].where.startswith(str(path))


# --------------------------------------------------------------------------- valid recipes


def usable_methods() -> list[str]:
    """Registered methods that serve bert classification (the registry grows over time)."""
    bert = FAMILIES["bert"]
    return [
        n
        for n in METHOD_NAMES
        if n in METHODS and METHODS[n].unsupported_reason(bert, "classification") is None
    ]


@st.composite
def valid_recipes(draw: st.DrawFn, root: Path) -> dict[str, Any]:
    recipe = base_recipe(root)
    name = draw(st.sampled_from(usable_methods()))
    model = METHOD_MODELS[name]
    method: dict[str, Any] = {"name": name}
    for key in draw(st.lists(st.sampled_from(scalar_fields(model) or ["name"]), unique=True)):
        if key != "name":
            method[key] = draw(valid_value(model, key))
    recipe["method"] = method
    for section in ("train", "eval", "eval.generation"):
        fields = scalar_fields(SECTIONS[section])
        for key in draw(st.lists(st.sampled_from(fields), unique=True, max_size=6)):
            section_of(recipe, section)[key] = draw(valid_value(SECTIONS[section], key))
    if draw(st.booleans()):
        recipe["data"]["max_train_samples"] = draw(st.integers(1, 10**9))
    if draw(st.booleans()):
        recipe["data"]["train"] = {"path": recipe["data"]["train"], "format": "csv"}
    return respect_cross_option_rules(recipe)


def respect_cross_option_rules(recipe: dict[str, Any]) -> dict[str, Any]:
    """Values each valid alone that `validate` refuses together, on purpose (setup/
    method_checks.py, Method.option_problems); tests/test_lora_variants.py tests the refusals."""
    method, train = recipe["method"], recipe.setdefault("train", {})
    if method.get("init") == "loftq":  # needs a 4-bit base on a CUDA GPU
        method["init"] = "pissa"
    if method.get("init") == "orthogonal" and method.get("r", 8) % 2:  # r/2 pairs
        method["r"] = method["r"] + 1 if method["r"] < 1024 else 1024
    if method["name"] == "dora" and method.get("init") in ("pissa", "olora", "corda"):
        method["init"] = "gaussian"  # peft converts LoRA only back onto the original weights
    if method["name"] == "adalora" and method.get("target_r", 8) > method.get("init_r", 12):
        method["target_r"] = method.get("init_r", 12)  # AdaLoRA only prunes
    if train.get("optimizer", "adamw") not in METHODS[method["name"]].optimizers:
        train["optimizer"] = "adamw"  # LoRA+ / LoRA-FA need LoRA's A/B pairs
    return recipe


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_valid_random_recipes_always_validate(workdir, data):
    recipe = data.draw(valid_recipes(workdir))
    _, problems = check_recipe(write(workdir, copy.deepcopy(recipe)))
    assert problems == [], [p.render() for p in problems]


# --------------------------------------------------------------------------- through the CLI


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_cli_exit_2_names_key_no_traceback(workdir, data):
    from typer.testing import CliRunner

    section, key = data.draw(st.sampled_from(FIELD_CHOICES), label="field")
    value = data.draw(wrong_value(SECTIONS[section], key), label="value")
    recipe = base_recipe(workdir)
    section_of(recipe, section)[key] = value
    path = write(workdir, recipe)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{section}.{key}" in result.output
    assert "Traceback" not in result.output and not _real_exception(result)


@pytest.mark.parametrize(
    "override, where",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.lr=-1", "train.lr"),
        ("method.num_virtual_tokens=3", "method.num_virtual_tokens"),
        ("nonsense.key=1", "nonsense"),
        ("noequals", "override"),
        ("train..lr=1", "override"),
    ],
)
def test_cli_bad_overrides(workdir, runner, override, where):
    path = write(workdir, base_recipe(workdir))
    result = runner.invoke(app, ["validate", str(path), "--set", override])
    assert result.exit_code == 2 and where in result.output, result.output
    assert "Traceback" not in result.output and not _real_exception(result)


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01\x02garbage", b"\xff\xfe\xfd", b"model: [", b"- 1\n- 2\n"]
)
def test_cli_unreadable_recipes_exit_2(workdir, runner, content):
    path = write(workdir, content)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and str(path) in result.output, result.output
    assert "Traceback" not in result.output and not _real_exception(result)


def _real_exception(result: Any) -> bool:
    return result.exception is not None and not isinstance(result.exception, SystemExit)
