"""Reading known keys out of decoded JSON and YAML (`finetune.types.JSON`) with their types.

`json.loads` and `yaml.safe_load` return whatever the file holds; these helpers narrow a value
where finetune expects an object, a number or a string, so a missing or mistyped entry reads
as absent instead of failing later with a TypeError far from the file that caused it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON, JSONObject


def as_object(value: JSON) -> Mapping[str, JSON]:
    """The value when it is a JSON object, else an empty one (`section: null` reads as `{}`)."""
    return value if isinstance(value, Mapping) else {}


def child(node: JSONObject, key: str) -> JSONObject:
    """The object under `key` for editing in place: a missing (or non-object) entry is
    replaced by a new empty object first, as `setdefault(key, {})` would for a missing one."""
    value = node.get(key)
    if not isinstance(value, dict):
        value = {}
        node[key] = value
    return value


def number(value: JSON) -> float | None:
    """An int, a float or numeric text as a float (YAML 1.1 reads `lr: 1e-4` as text, which
    validation turns into the number); None for anything else, bool included."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def integer(value: JSON, default: int) -> int:
    """A number, or text that reads as an int, as an int; `default` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return default
    return int(value)


def copy_object(value: Mapping[str, JSON]) -> JSONObject:
    """A deep copy through JSON text: what a recipe written to a file will read back as."""
    copied: JSONObject = json.loads(json.dumps(value))
    return copied
