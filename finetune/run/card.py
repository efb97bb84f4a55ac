"""The model card (README.md) written into every run directory and pushed with the model."""

from __future__ import annotations

from typing import Any

from finetune.logs import redact
from finetune.recipe.schema import Recipe
from finetune.recipe.io import dump_recipe


def _metric_rows(metrics: dict[str, Any]) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, float):
            rows.append(f"| {key} | {value:.4f} |")
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            rows.append(f"| {key} | {value} |")
    return "\n".join(rows)


def render_model_card(recipe: Recipe, info: dict[str, Any], metrics: dict[str, Any]) -> str:
    method = info["method"]
    library = (
        "transformers"
        if method == "full"
        else (
            "peft"
            if info["artifact_dir"] == "adapter" and method not in ("houlsby", "pfeiffer", "bitfit")
            else "finetune"
        )
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
{"(full fine-tuning: every weight trained)" if method == "full" else ""}.

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
