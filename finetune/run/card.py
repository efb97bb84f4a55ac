"""The model card (README.md) written into every run directory and pushed with the model."""

from __future__ import annotations

from typing import Any

from finetune.console import metric_items
from finetune.logs import redact
from finetune.methods import METHODS
from finetune.recipe.io import dump_recipe
from finetune.recipe.schema import Recipe


def _metric_rows(metrics: dict[str, Any]) -> str:
    return "\n".join(f"| {key} | {shown} |" for key, shown in metric_items(metrics))


def render_model_card(recipe: Recipe, info: dict[str, Any], metrics: dict[str, Any]) -> str:
    method = info["method"]
    entry = METHODS[method]
    library = (
        "transformers"
        if entry.trains_backbone
        else ("peft" if entry.save_format.startswith("peft") else "finetune")
    )
    base = recipe.model.name
    params = info["parameters"]
    share = 100 * params["trainable"] / max(params["total"], 1)
    text = f"""---
library_name: {library}
base_model: {base}
tags:
- finetune
- {method}
- {recipe.task.type}
---

# {base} + {method} for {recipe.task.type}

Fine-tuned with [finetune](https://pypi.org/project/finetune/) {info["finetune_version"]}
from the recipe below. Method `{method}` trained {params["trainable"]:,} of {params["total"]:,}
parameters ({share:.3f}%); the base model ({info["family"]} family) stayed frozen
{"(full fine-tuning: every weight trained)" if entry.trains_backbone else ""}.

## Evaluation

| metric | value |
|---|---|
{_metric_rows(metrics)}

## Use

```console
finetune predict <this directory> --text "..."
finetune eval <this directory>
```

## Recipe

```yaml
{dump_recipe(recipe).strip()}
```

Library versions: {", ".join(f"{k} {v}" for k, v in info["versions"].items())}.
"""
    return redact(text)
