"""Reading recipes: YAML text + dotted overrides -> a validated `Recipe`, or every problem at once.

Kept free of torch/transformers so that `finetune validate` answers in well under a second.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ValidationError

from finetune.errors import Problem, RecipeError, first_line
from finetune.recipe.schema import Recipe

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON, JSONObject

Loc = tuple[int | str, ...]  # where in the recipe a validation error is: keys, list indices, tags

MAX_RECIPE_BYTES = 1_000_000


def read_yaml(path: Path) -> tuple[JSONObject | None, list[Problem]]:
    """Parse a recipe file; never raises for user mistakes (they come back as problems)."""
    where = str(path)
    if not path.exists():
        return None, [Problem(where, "file not found", "check the path")]
    if path.is_dir():
        return None, [Problem(where, "is a directory, not a recipe file", "name a .yaml file")]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem(where, f"cannot be read ({exc.strerror})", "check permissions")]
    return parse_yaml_bytes(raw, where)


def parse_yaml_bytes(raw: bytes, where: str) -> tuple[JSONObject | None, list[Problem]]:
    if len(raw) > MAX_RECIPE_BYTES:
        return None, [Problem(where, "is larger than 1 MB; not a recipe", "name a recipe file")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            Problem(where, f"is not UTF-8 text (byte {exc.start})", "save it as UTF-8 YAML")
        ]
    if "\x00" in text:
        return None, [Problem(where, "contains NUL bytes; not a text file", "name a YAML file")]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        reason = getattr(exc, "problem", None) or first_line(exc)
        return None, [Problem(loc, f"invalid YAML: {reason}", "fix the YAML syntax there")]
    if data is None:
        return None, [Problem(where, "is empty", "start from `finetune recipes` examples")]
    if not isinstance(data, dict):
        kind = type(data).__name__
        return None, [
            Problem(where, f"top level is a {kind}, not a mapping", "write `model:`, `task:` ...")
        ]
    return data, []


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], JSON]:
    """`train.lr=1e-4` -> (['train', 'lr'], '1e-4'); values are typed later by pydantic."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value (e.g. train.epochs=3)")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r} has an empty key part")
    try:
        parsed: JSON = parse_scalar(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def parse_scalar(text: str) -> JSON:
    """A YAML scalar, except that `5e-05` is a number: YAML 1.1 reads exponents without a
    dot as strings, and Python writes every float under 1e-4 that way. Only a signed exponent
    counts, so a git revision such as `1234e56` stays text."""
    value: JSON = yaml.safe_load(text)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]\d+")


def apply_overrides(data: JSONObject, overrides: list[str]) -> list[Problem]:
    """Apply dotted overrides in order; `method=NAME` swaps the whole method section.

    `method.name=ia3` on a LoRA recipe would keep `r`, `alpha`, ... which IA3 does not have;
    `method=ia3` replaces the section with `{name: ia3}`, i.e. that method's defaults.
    """
    problems: list[Problem] = []
    for text in overrides:
        try:
            parts, value = parse_override(text)
        except ValueError as exc:
            problems.append(Problem("override", str(exc), "write key.sub=value"))
            continue
        if parts == ["method"] and isinstance(value, str):
            data["method"] = {"name": value}
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("train", "eval", "test"):
                child = {"path": child}  # data.train.path=... on a shorthand path
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return problems


# --------------------------------------------------------------------------- validation errors


def models_in(annotation: object) -> list[type[BaseModel]]:
    """All pydantic models an annotation can hold (unwrapping Optional/Union/Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found.extend(models_in(arg))
        return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def tag_of(model: type[BaseModel]) -> set[str]:
    for key in ("type", "name"):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return set(typing.get_args(field.annotation))
    return {"hub"} if "hub" in model.model_fields else {"local", "path"}


def allowed_keys(loc: Loc) -> list[str]:
    """Keys accepted at a location of the recipe, following discriminated-union tags in `loc`."""
    candidates: list[type[BaseModel]] = [Recipe]
    for part in loc:
        next_candidates: list[type[BaseModel]] = []
        tagged = [m for m in candidates if str(part) in tag_of(m)]
        if tagged and len(candidates) > 1:
            candidates = tagged
            continue
        for model in candidates:
            field = model.model_fields.get(str(part))
            if field is not None:
                next_candidates.extend(models_in(field.annotation))
        if not next_candidates:
            return []
        candidates = next_candidates
    keys: list[str] = []
    for model in candidates:
        keys.extend(k for k in model.model_fields if k not in keys)
    return keys


def _key_path(loc: Loc) -> tuple[list[str], Loc]:
    """Dotted user-facing path without union tags, and the raw loc for schema walking."""
    shown: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            shown.append(f"[{part}]")
            continue
        keys_before = allowed_keys(loc[:i])
        if keys_before and str(part) not in keys_before and i + 1 < len(loc):
            continue  # a discriminator tag such as 'lora' in ('method', 'lora', 'r')
        if part in ("local", "hub") and i > 0 and loc[i - 1] in ("train", "eval", "test"):
            continue  # the data-source union tag, even as the last part
        shown.append(str(part))
    return shown, loc


def _hint_for_unknown(loc: Loc) -> str:
    key = str(loc[-1])
    options = allowed_keys(loc[:-1])
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean '{close[0]}'?"
    else:
        hint = "allowed keys: " + ", ".join(options) if options else "remove it"
    switch = _method_switch_hint(loc)
    return f"{switch} ({hint})" if switch else hint


def _method_switch_hint(loc: Loc) -> str | None:
    """For `method.r` left over after switching `method.name` to a method without `r`."""
    if len(loc) != 3 or loc[0] != "method":
        return None
    from finetune.methods import METHODS

    name, key = str(loc[1]), str(loc[2])
    owners = [m for m, entry in METHODS.items() if key in entry.config_class.model_fields]
    if name not in METHODS or not owners:
        return None
    return (
        f"'{key}' is an option of {'/'.join(owners)}, not of {name}: remove it (when it was "
        f"left from the recipe's method by `method.name={name}`, `method={name}` replaces the "
        f"whole section with {name}'s defaults instead)"
    )


def problems_from_validation(exc: ValidationError, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        shown, _ = _key_path(loc)
        path = ".".join(shown).replace(".[", "[") or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(Problem(f"{where}: {path}", "unknown key", _hint_for_unknown(loc)))
        elif kind == "missing":
            problems.append(Problem(f"{where}: {path}", "required key is missing", "add it"))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            problems.append(Problem(f"{where}: {path}", err["msg"], "use one of the listed"))
        elif kind == "value_error" and isinstance(err.get("input"), dict):
            # a section's own cross-key check: its sentence names the keys and the fix
            message = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(f"{where}: {path}", message, ""))
        else:
            got = err.get("input")
            shown_input = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            if len(shown_input) > 60:
                shown_input = shown_input[:57] + "..."
            fix = f"`finetune options {shown[0]}` lists each key's type and range" if shown else ""
            problems.append(Problem(f"{where}: {path}", f"{err['msg']} (got {shown_input})", fix))
    return problems


def dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.where, p.message) not in seen:
            seen.add((p.where, p.message))
            out.append(p)
    return out


def build_recipe(
    data: JSONObject, where: str, overrides: list[str] | None = None
) -> tuple[Recipe | None, list[Problem]]:
    problems = apply_overrides(data, overrides or [])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        return None, dedupe(problems + problems_from_validation(exc, where))
    return (recipe if not problems else None), problems


def load_recipe(path: Path, overrides: list[str] | None = None) -> Recipe:
    """Schema-level load (no file/model checks); raises RecipeError with every problem."""
    data, problems = read_yaml(path)
    if data is None:
        raise RecipeError(problems)
    recipe, problems = build_recipe(data, str(path), overrides)
    if recipe is None:
        raise RecipeError(problems)
    return recipe


def recipe_description(path: Path) -> str:
    """The first comment line of a recipe file: its one-line description."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                return stripped.lstrip("#").strip()
            if stripped:
                break
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
