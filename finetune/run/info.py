"""run.json: the typed record of what a run is (architecture, task, method, labels, counts),
read and written here only.

`eval`, `predict`, `merge`, `push` and the model card read it to rebuild the run without
flags. Files written before the record had a version (finetune 0.1, version 1) name the
architecture `family`; they read the same.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from finetune import __version__
from finetune.run.files import atomic_write_json

VERSION = 2


class ParameterCounts(BaseModel):
    trainable: int
    total: int


class RunInfo(BaseModel):
    """One run's facts, as run.json holds them."""

    model_config = ConfigDict(extra="ignore")

    version: int = VERSION
    finetune_version: str = __version__
    created: str = Field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )
    versions: dict[str, str] = Field(default_factory=dict)  # library versions that trained it
    architecture: str  # the config.json model_type (a row of ARCHITECTURES)
    task: str
    model_kind: str  # classification | seq2seq | causal
    main_metric: str | None = None  # task.metric or the task's default: what ranks the run
    method: str
    lr: float | None = None  # resolved: the method's default_lr when the recipe left it null
    artifact_dir: str
    new_modules: list[str] = Field(default_factory=list)
    task_state: dict[str, JsonValue] = Field(default_factory=dict)  # tasks.base.TaskState
    parameters: ParameterCounts

    @model_validator(mode="before")
    @classmethod
    def _version_1(cls, data: object) -> object:
        """Version 1 (no `version` key) called the architecture `family`."""
        if isinstance(data, dict) and "architecture" not in data and "family" in data:
            data = {**data, "architecture": data["family"], "version": data.get("version", 1)}
        return data

    @property
    def labels(self) -> list[str]:
        labels = self.task_state.get("labels")
        return [str(label) for label in labels] if isinstance(labels, list) else []

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.model_dump(mode="json"))
