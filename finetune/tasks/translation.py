"""Translation: source -> target language, scored with sacreBLEU (tokenised for task.target_lang,
signature saved) and chrF.

Three data layouts: `{source_lang, target_lang}` columns (names overridable with task.source /
task.target), a column of `{lang: text}` dicts (`task.translation_column`, the Hub WMT/Multi30k
layout), or aligned plain-text files `train.{lang}` (one sentence per line, same line = same
sentence). A target cell may be a list: several references, scored as sacreBLEU streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from finetune.errors import DataError
from finetune.recipe.section import Section
from finetune.tasks.base import Example, require_text
from finetune.tasks.chat import PromptMode, instruction_field, prompt_field, system_field
from finetune.tasks.generation import GenerationTask
from finetune.tasks.metrics import bleu, chrf, length_stats
from finetune.tasks.summarization import reference_texts

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.readers import Table
    from finetune.types import TableRow, Tokenizer

LANGUAGE_NAMES = {
    "ar": "Arabic",
    "cs": "Czech",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fi": "Finnish",
    "fr": "French",
    "gu": "Gujarati",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "kk": "Kazakh",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}


def language_name(code: str) -> str:
    """'de' -> 'German' (T5's prefixes use names); unknown codes stay as written."""
    return LANGUAGE_NAMES.get(code.lower().split("-")[0].split("_")[0], code)


class TranslationConfig(Section):
    type: Literal["translation"] = Field(description="Task kind.")
    source_lang: str = Field("en", description="Source language code (column name by default).")
    target_lang: str = Field("de", description="Target language code (column name by default).")
    source: str | None = Field(None, description="Source column; default source_lang.")
    target: str | None = Field(None, description="Target column; default target_lang.")
    translation_column: str | None = Field(
        None, description="Column holding {lang: text} dicts (Hub WMT/Multi30k layout)."
    )
    prefix: str | None = Field(
        None,
        description="Text put before every input; default 'translate English to German: ' "
        "style for T5, none else.",
    )
    prompt: PromptMode = prompt_field()
    instruction: str | None = instruction_field(
        "'Translate from {source} to {target}.' (language names from the codes)"
    )
    system: str | None = system_field()


class TranslationTask(GenerationTask):
    name = "translation"
    config_class = TranslationConfig
    main_metric = "bleu"
    pipeline_tag = "translation"

    @classmethod
    def required_columns(cls, cfg: TranslationConfig) -> list[str]:
        if cfg.translation_column:
            return [cfg.translation_column]
        return [cfg.source or cfg.source_lang, cfg.target or cfg.target_lang]

    @classmethod
    def languages(cls, cfg: TranslationConfig) -> list[str]:
        return [cfg.source_lang, cfg.target_lang]

    def t5_prefix(self) -> str:
        src, tgt = language_name(self.cfg.source_lang), language_name(self.cfg.target_lang)
        return f"translate {src} to {tgt}: "

    @classmethod
    def default_instruction(cls, cfg: Any) -> str:
        """Language names from the codes (unknown codes stay as written)."""
        source, target = language_name(cfg.source_lang), language_name(cfg.target_lang)
        return f"Translate from {source} to {target}."

    def causal_separator(self) -> str:
        return f"\n{language_name(self.cfg.target_lang)}:"

    def configure_tokenizer(self, tokenizer: Tokenizer) -> None:
        """mBART-style tokenizers wrap source and target in language codes from the recipe."""
        if self.family.language_codes:
            from finetune.models.languages import language_code, set_languages

            self._codes = (
                language_code(tokenizer, self.cfg.source_lang, "task.source_lang"),
                language_code(tokenizer, self.cfg.target_lang, "task.target_lang"),
            )
            set_languages(tokenizer, *self._codes)

    def generation_start(self) -> dict[str, int]:
        if not self.family.language_codes:
            return {}
        from finetune.models.languages import generation_start

        return generation_start(self.tokenizer, self._codes[1])

    def examples(self, table: Table, split: str) -> list[Example]:
        self._suggest_dict_column(table)
        return self.parsed(table)

    @classmethod
    def parse_row(cls, cfg: TranslationConfig, row: TableRow, where: str) -> Example:
        source_cell, source_name, target_cell, target_name = cls.cells(cfg, row, where)
        source = require_text(source_cell, source_name, where)
        refs = reference_texts([(target_name, target_cell)], where)
        return Example(source=source, target=refs, where=where)

    def _suggest_dict_column(self, table: Table) -> None:
        """Hub WMT data has one {lang: text} column: say so instead of 'missing en, de'."""
        if self.cfg.translation_column or not table.rows:
            return
        wanted = self.required_columns(self.cfg)
        if all(c in table.column_names() for c in wanted):
            return
        first = table.rows[0]
        for column, value in first.items():
            if isinstance(value, dict) and self.cfg.source_lang in value:
                raise DataError(
                    f"{table.source}: no column {wanted[0]!r}, but column {column!r} holds "
                    f"{{lang: text}} dicts ({', '.join(value)})",
                    fix=f"set task.translation_column: {column}",
                )

    @classmethod
    def cells(
        cls, cfg: TranslationConfig, row: TableRow, where: str
    ) -> tuple[object, str, object, str]:
        """(source value, its name, target value, its name) for one row of any layout."""
        if not cfg.translation_column:
            src, tgt = cls.required_columns(cfg)
            return row.get(src), src, row.get(tgt), tgt
        col = cfg.translation_column
        pair = row.get(col)
        if not isinstance(pair, dict):
            raise DataError(
                f"{where}: column '{col}' holds {type(pair).__name__}, not a {{lang: text}} dict",
                fix="unset task.translation_column to read plain source/target columns",
            )
        for lang in (cfg.source_lang, cfg.target_lang):
            if lang not in pair:
                raise DataError(
                    f"{where}: column '{col}' has no '{lang}' entry (has: {', '.join(pair)})",
                    fix="set task.source_lang / task.target_lang to keys of the dict",
                )
        src_name, tgt_name = f"{col}.{cfg.source_lang}", f"{col}.{cfg.target_lang}"
        return pair[cfg.source_lang], src_name, pair[cfg.target_lang], tgt_name

    def metrics(self, predictions: list[str], examples: list[Example]) -> dict[str, float | str]:
        references = [ex.target for ex in examples]
        return {
            **bleu(predictions, references, target_lang=self.cfg.target_lang),
            **chrf(predictions, references),
            **length_stats(predictions),
        }
