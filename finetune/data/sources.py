"""Where examples come from: the recipe's `data.train` / `data.eval` / `data.test` forms."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from finetune.recipe.section import Section


class LocalSource(Section):
    path: str = Field(
        description="csv/tsv/jsonl/json/parquet file, or 'train.{lang}' for aligned text files.",
        min_length=1,
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "text"] = Field(
        "auto", description="File format; auto uses the extension."
    )
    quoting: Literal["rfc4180", "none"] = Field(
        "rfc4180",
        description="csv/tsv quotes: rfc4180 reads quoted fields as pandas writes them and "
        "refuses a stray quote; none keeps every quote as text (GLUE-style files).",
    )
    header: bool = Field(
        True,
        description="csv/tsv: line 1 names the columns; false: every line is data (then "
        "`columns` names the fields).",
    )
    columns: list[str] | None = Field(
        None,
        description="csv/tsv: names of the fields in order, for a file without a header line "
        "or instead of its header; a row with another number of fields is an error.",
    )

    @field_validator("columns")
    @classmethod
    def _usable_names(cls, columns: list[str] | None) -> list[str] | None:
        """Names as a header's are read (stripped); each non-empty and named once."""
        if columns is None:
            return None
        names = [c.strip() for c in columns]
        if not names or any(not c for c in names):
            raise ValueError("every field needs a non-empty name")
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} named twice")
        return names

    @model_validator(mode="after")
    def _named_fields(self) -> LocalSource:
        """A header-less file needs its fields named."""
        if not self.header and self.columns is None:
            raise ValueError(
                "header: false needs columns: [...] naming the fields of each line "
                "(e.g. columns: [source, label, mark, sentence])"
            )
        return self


class HubSource(Section):
    hub: str = Field(description="Hub dataset id, e.g. glue.", min_length=1)
    config: str | None = Field(None, description="Dataset configuration, e.g. sst2.")
    split: str = Field("train", description="Split to read, e.g. train or validation.")
    revision: str | None = Field(None, description="Dataset revision to pin.")


def _source_tag(value: object) -> str:
    if isinstance(value, dict):
        return "hub" if "hub" in value else "local"
    if isinstance(value, HubSource):
        return "hub"
    return "local"


def coerce_source(value: object) -> object:
    """A bare string is shorthand for {path: ...}."""
    return {"path": value} if isinstance(value, str) else value


DataSource = Annotated[
    Union[Annotated[LocalSource, Tag("local")], Annotated[HubSource, Tag("hub")]],
    Discriminator(_source_tag),
]
