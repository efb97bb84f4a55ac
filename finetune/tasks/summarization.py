"""Summarization: a document column in, one or several reference summaries out, ROUGE scored.

References come from one column (a string, or a list of strings for several references) or from
several columns (`task.summary: [summary1, summary2]`); empty extra references are skipped, but
every example needs at least one. Training uses the first reference; ROUGE uses all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from finetune.errors import DataError
from finetune.recipe.section import Section
from finetune.tasks.base import Example, require_text
from finetune.tasks.chat import PromptMode, instruction_field, prompt_field, system_field
from finetune.tasks.generation import GenerationTask
from finetune.tasks.metrics import length_stats, rouge

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.readers import Table
    from finetune.types import TableRow


# the chat prompt's default request: neutral about the genre (dialogue, article, report)
SUMMARIZE = "Summarize the following text."


def summary_columns(cfg: SummarizationConfig) -> list[str]:
    summary = cfg.summary
    return [summary] if isinstance(summary, str) else list(summary)


def reference_texts(values: list[tuple[str, object]], where: str) -> list[str]:
    """(column, cell) pairs -> non-empty reference strings; list cells give several."""
    refs: list[str] = []
    for _column, value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is None or (isinstance(item, float) and item != item):
                continue
            if str(item).strip():
                refs.append(str(item))
    if not refs:
        columns = ", ".join(repr(c) for c, _ in values)
        raise DataError(
            f"{where}: no reference text in column{'s' if len(values) > 1 else ''} {columns}",
            fix="fill in the reference, or remove the row",
        )
    return refs


class SummarizationConfig(Section):
    type: Literal["summarization"] = Field(description="Task kind.")
    text: str = Field("text", description="Column with the document to summarise.")
    summary: str | list[str] = Field(
        "summary",
        description="Reference column; a list column or several columns give several references.",
    )
    prefix: str | None = Field(
        None, description="Text put before every input; default 'summarize: ' for T5, none else."
    )
    prompt: PromptMode = prompt_field()
    instruction: str | None = instruction_field(repr(SUMMARIZE))
    system: str | None = system_field()


class SummarizationTask(GenerationTask):
    name = "summarization"
    config_class = SummarizationConfig
    main_metric = "rougeL"
    pipeline_tag = "summarization"

    @classmethod
    def required_columns(cls, cfg: SummarizationConfig) -> list[str]:
        return [cfg.text, *summary_columns(cfg)]

    def t5_prefix(self) -> str:
        return "summarize: "

    @classmethod
    def default_instruction(cls, cfg: Any) -> str:
        return SUMMARIZE

    def causal_separator(self) -> str:
        # GPT-2's own zero-shot summarization cue (Radford et al., 2019)
        return "\nTL;DR:"

    @classmethod
    def parse_row(cls, cfg: SummarizationConfig, row: TableRow, where: str) -> Example:
        text = require_text(row.get(cfg.text), cfg.text, where)
        refs = reference_texts([(c, row.get(c)) for c in summary_columns(cfg)], where)
        return Example(source=text, target=refs, where=where)

    def examples(self, table: Table, split: str) -> list[Example]:
        return self.parsed(table)

    def metrics(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        references = [ex.target for ex in examples]
        return {**rouge(predictions, references), **length_stats(predictions)}
