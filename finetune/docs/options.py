"""Option tables generated from the recipe schema (for `finetune options` and the README).

The README's recipe reference is produced by `python -m finetune.docs.options` and a test checks
that it matches, so documentation can never drift from the schema.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from finetune.recipe.io import models_in, tag_of
from finetune.recipe.schema import Recipe


@dataclass(frozen=True)
class OptionRow:
    key: str
    type: str
    default: str
    description: str


def _type_name(annotation: object) -> str:  # a type form: a class, a Union, a Literal ...
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(annotation)]
        names = [_type_name(a) for a in args]
        return " | ".join("null" if n == "NoneType" else n for n in names)
    if origin is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    return getattr(annotation, "__name__", str(annotation))


BOUND_SIGNS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _bounds(field: FieldInfo) -> str:
    """The field's range as the schema checks it (` ≥ 1, ≤ 4096`): what a value must satisfy."""
    found = [
        f"{sign} {getattr(meta, attr)}"
        for meta in field.metadata
        for attr, sign in BOUND_SIGNS.items()
        if getattr(meta, attr, None) is not None
    ]
    return f" ({', '.join(found)})" if found else ""


def _field_type(field: FieldInfo) -> str:
    return _type_name(field.annotation) + _bounds(field)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is list:
        return "[]"
    if field.default_factory is not None:
        return "(section)"
    return "null" if field.default is None else str(field.default)


def _rows(model: type[BaseModel], prefix: str, tag: str | None) -> list[OptionRow]:
    rows: list[OptionRow] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        nested = models_in(field.annotation)
        if nested and all(m.__name__ in ("LocalSource", "HubSource") for m in nested):
            forms = " | ".join("{" + ", ".join(m.model_fields) + "}" for m in nested)
            rows.append(OptionRow(key, f"path | {forms}", _default(field), field.description or ""))
            if not any(r.key.startswith(f"{prefix}.*.") for r in rows):
                rows.extend(_source_rows(nested, prefix))
            continue
        if nested and len(nested) == 1 and field.default_factory is not None:
            rows.extend(_rows(nested[0], key, None))
            continue
        if nested and len(nested) == 1 and field.default is None:  # an optional section
            form = "{" + ", ".join(nested[0].model_fields) + "} | null"
            rows.append(OptionRow(key, form, "null", field.description or ""))
            rows.extend(_rows(nested[0], key, None))
            continue
        desc = field.description or ""
        if tag and name not in ("name", "type"):
            desc = f"({tag}) {desc}"
        rows.append(OptionRow(key, _field_type(field), _default(field), desc))
    return rows


def _source_rows(models: list[type[BaseModel]], prefix: str) -> list[OptionRow]:
    """The keys of a local data source (format, quoting), once for train/eval/test."""
    local = next(m for m in models if m.__name__ == "LocalSource")
    return [
        OptionRow(f"{prefix}.*.{name}", _field_type(f), _default(f), f.description or "")
        for name, f in local.model_fields.items()
        if name != "path"
    ]


def option_rows(section: str | None = None) -> list[OptionRow]:
    """Every option, or those under `section`: a section (`train`) or a dotted key
    (`train.lr`, `method.r`)."""
    rows: list[OptionRow] = []
    seen: set[str] = set()
    top = section.split(".")[0] if section else None
    for name, field in Recipe.model_fields.items():
        if top and name != top:
            continue
        if not models_in(field.annotation):  # a top-level value (the recipe's name)
            desc = field.description or ""
            rows.append(OptionRow(name, _type_name(field.annotation), _default(field), desc))
            continue
        for model in models_in(field.annotation):
            tags = sorted(tag_of(model)) if len(models_in(field.annotation)) > 1 else []
            tag = "/".join(tags) if tags else None
            for row in _rows(model, name, tag):
                ident = f"{row.key}|{row.description}"
                if ident not in seen:
                    seen.add(ident)
                    rows.append(row)
    if section and "." in section:
        # a data source's keys are listed once, as data.*.format, for train, eval and test
        wanted = re.sub(r"^data\.(train|eval|test)\.(?=.)", "data.*.", section)
        rows = [r for r in rows if r.key in (section, wanted) or r.key.startswith(section + ".")]
    return rows


def markdown_table() -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for row in option_rows():
        typ = row.type.replace("|", "\\|")
        desc = row.description.replace("|", "\\|")
        lines.append(f"| `{row.key}` | {typ} | {row.default} | {desc} |")
    return "\n".join(lines)


def update_readme(path: str = "README.md") -> None:
    """Rewrite the generated options table between its markers in the README."""
    import re
    from pathlib import Path

    readme = Path(path)
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- options-table:start -->", "<!-- options-table:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    readme.write_text(pattern.sub(f"{start}\n{markdown_table()}\n{end}", text), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--readme" in sys.argv:
        update_readme()
    else:
        print(markdown_table())
