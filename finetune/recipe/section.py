"""The base of every recipe section, shared by the schema and the registries' config classes.

Kept apart from `schema.py` so that method, task and data modules can declare their own config
class next to their behaviour without importing the whole schema (which imports them).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
