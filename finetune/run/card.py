"""Model cards, written with huggingface_hub's `ModelCard` / `ModelCardData` / `EvalResult`.

Three kinds, one renderer:

- `run`: README.md of a run directory (the adapter or full model as `run` saved it);
- `merged`: the card of `finetune merge` / `finetune push` (a plain transformers model);
- `adapter`: the card of `finetune push --adapter` (the run's artefact without merging).

The YAML metadata is what the Hub indexes, so every key is either right or absent: the Hub id of
the base model (never a `bundled:` alias or a local path), the library that loads *this*
artefact, the task's pipeline tag, the Hub datasets it was trained on, the base model's licence,
and a `model-index` holding the quality metrics (never timings or byte counts). The body says in
words what the metadata had to leave out, and shows a loading snippet that works for the
artefact. Reading the card back with `ModelCard.load` gives the same metadata (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.console import metric_items
from finetune.recipe.io import dump_recipe
from finetune.recipe.schema import HubSource, LocalSource, Recipe
from finetune.redaction import redact
from finetune.run.info import RunInfo
from finetune.run.metric_kinds import FACT_NAMES, NOT_IN_MODEL_INDEX, is_number, split_metrics
from finetune.run.snippets import Artefact, CardKind, load_snippet
from finetune.tasks.main_metric import main_metric

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import EvalResult, ModelCardData

    from finetune.methods.base import Method
    from finetune.tasks.base import Task
    from finetune.types import JSON


def library_name(method: Method, kind: CardKind) -> str | None:
    """The library that loads this artefact; None for finetune's own adapter format.

    A merged model and a fully fine-tuned one are plain transformers models; a peft method's
    adapter is peft's. Bottleneck and BitFit adapters are in finetune's own format, which no
    library the Hub knows loads, so the key is left out (the body says how to load them).
    """
    if kind == "merged":
        return "transformers"
    return None if method.library == "finetune" else method.library


def hub_datasets(recipe: Recipe) -> list[str]:
    """Hub ids of the data the run read, in order, once each."""
    sources = (recipe.data.train, recipe.data.eval, recipe.data.test)
    return list(dict.fromkeys(s.hub for s in sources if isinstance(s, HubSource)))


def _describe_source(source: HubSource | LocalSource) -> str:
    if isinstance(source, HubSource):
        config = f", config `{source.config}`" if source.config else ""
        return f"the Hub dataset `{source.hub}`{config}, split `{source.split}`"
    return f"the local file `{Path(source.path).name}`"


@dataclass(frozen=True)
class EvalData:
    """Where the reported metrics were measured, as the model-index names it."""

    dataset_type: str
    dataset_name: str
    config: str | None
    split: str | None
    revision: str | None
    sentence: str


def eval_data(recipe: Recipe) -> EvalData | None:
    data = recipe.data
    source = data.eval
    held_out = source is None and data.eval_fraction is not None
    if held_out:
        source = data.train
    if source is None:
        return None
    if held_out:
        sentence = f"a held-out {data.eval_fraction:.0%} of the training data (seeded)"
    else:
        sentence = _describe_source(source)
    if isinstance(source, HubSource):
        split = f"{source.split} (held out)" if held_out else source.split
        return EvalData(source.hub, source.hub, source.config, split, source.revision, sentence)
    name = Path(source.path).name
    split = "train (held out)" if held_out else "eval"
    return EvalData("local", f"local file {name}", None, split, None, sentence)


# our metric names whose Hub metric id (https://hf.co/metrics) is spelled otherwise
HUB_METRIC_IDS = {"pearson": "pearsonr"}


def main_first(quality: Mapping[str, float | str], main: str) -> dict[str, float | str]:
    """The quality metrics with the run's main metric (task.metric) first."""
    return {**({main: quality[main]} if main in quality else {}), **quality}


def eval_results(
    recipe: Recipe, task: type[Task], quality: Mapping[str, float | str]
) -> list[EvalResult] | None:
    """One EvalResult per numeric quality metric (model-index; the main metric first), None
    without eval data."""
    from huggingface_hub import EvalResult

    where = eval_data(recipe)
    if where is None:
        return None
    quality = main_first(quality, main_metric(recipe.task))
    results = [
        EvalResult(
            task_type=task.pipeline_tag,
            dataset_type=where.dataset_type,
            dataset_name=where.dataset_name,
            dataset_config=where.config,
            dataset_split=where.split,
            dataset_revision=where.revision,
            metric_type=HUB_METRIC_IDS.get(key, key),
            metric_name=key,
            metric_value=value,
        )
        for key, value in quality.items()
        if is_number(value) and key not in NOT_IN_MODEL_INDEX
    ]
    return results or None


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class CardFacts:
    """What the card says about the run: its record (run.json) and its method."""

    info: RunInfo
    method: Method


def _title(recipe: Recipe, method: Method, kind: CardKind, base_id: str | None) -> str:
    base = base_id or Path(recipe.model.name).name
    if not method.trains:
        return f"{base}, zero-shot (method {method.name}: nothing trained) on {recipe.task.type}"
    what = "merged into the base weights" if kind == "merged" else "adapter"
    if method.trains_backbone:
        what = "full fine-tuning"
    return f"{base} + {method.name} ({what}) for {recipe.task.type}"


NOTHING_TRAINED = (
    "Nothing was trained: method `{name}` evaluates the base model as it is (a zero-shot "
    "baseline, with the prompts and generation settings a trained run of this recipe uses), so "
    "this run holds no weights of its own, only the evaluation below."
)


def _summary(
    recipe: Recipe,
    card: CardFacts,
    kind: CardKind,
    base_id: str | None,
    lib: str | None,
) -> str:
    from finetune.models.bundled import bundle_for, honesty_note

    method, params = card.method, card.info.parameters
    share = 100 * params.trainable / max(params.total, 1)
    trained = (
        f"Method `{method.name}` trained {params.trainable:,} of {params.total:,} "
        f"parameters ({share:.3f}%)"
    )
    if method.trains_backbone:
        trained += ": every weight of the base model (full fine-tuning)."
    else:
        trained += (
            f"; the base model's other weights ({card.info.architecture} family) stayed frozen."
        )
    if not method.trains:
        trained, what = NOTHING_TRAINED.format(name=method.name), ""
    elif kind == "merged":
        what = (
            "The adapter's weights are folded into the base model's, so this is a plain "
            "transformers model: loading it needs neither peft nor finetune."
        )
    elif method.trains_backbone:
        what = "This is the whole fine-tuned model (a plain transformers model)."
    elif lib == "peft":
        what = f"This holds the {method.name} adapter only, in peft's format, plus the tokenizer."
    else:
        what = (
            f"This holds the {method.name} adapter only, in finetune's own format "
            "(`adapter_model.safetensors` + `adapter_config.json`), so the card names no "
            "`library_name`."
        )
    base = (
        f"The base model is [`{base_id}`](https://huggingface.co/{base_id})."
        if base_id
        else f"The base model `{recipe.model.name}` is a local checkpoint with no Hub id, so "
        "the card names no `base_model`."
    )
    bundle = bundle_for(recipe.model.name)
    if bundle is not None:
        base += f" Its weights here are {honesty_note(bundle)}."
    tool = (
        f"{'Trained' if method.trains else 'Evaluated'} with finetune "
        f"{card.info.finetune_version}, a command-line tool for parameter-efficient fine-tuning "
        "of Hugging Face models, from the recipe below."
    )
    return "\n".join(line for line in (tool, trained, what, base) if line)


def _data_section(recipe: Recipe, trained: bool = True) -> str:
    train = _describe_source(recipe.data.train) if trained else "none used (nothing was trained)"
    lines = [f"- train: {train}"]
    where = eval_data(recipe)
    lines.append(f"- evaluation: {where.sentence}" if where else "- evaluation: none")
    if not hub_datasets(recipe):
        lines.append(
            "\nThe data was local (not on the Hugging Face Hub), so the card lists no `datasets`."
        )
    return "\n".join(lines)


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _evaluation_section(recipe: Recipe, quality: Mapping[str, float | str]) -> str:
    where = eval_data(recipe)
    if where is None or not quality:
        return "No evaluation data was given, so there are no results."
    quality = main_first(quality, main_metric(recipe.task))
    numbers = [(k, v) for k, v in metric_items(quality) if is_number(quality[k])]
    notes = [f"- `{k}`: {v}" for k, v in quality.items() if isinstance(v, str)]
    text = f"On {where.sentence}:\n\n" + _table(numbers, ("metric", "value"))
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _hyperparameters(recipe: Recipe) -> str:
    train = recipe.train.model_dump()
    keep = [
        "lr",
        "epochs",
        "max_steps",
        "batch_size",
        "grad_accum",
        "scheduler",
        "warmup_fraction",
        "weight_decay",
        "max_grad_norm",
        "max_length",
        "seed",
        "precision",
    ]
    from finetune.tasks import TASKS

    if TASKS[recipe.task.type].is_generation:
        keep.append("max_target_length")
    rows = [(f"train.{k}", str(train[k])) for k in keep if k in train and train[k] is not None]
    method = recipe.method.model_dump()
    rows += [(f"method.{k}", str(v)) for k, v in method.items() if k != "name" and v is not None]
    return _table(rows, ("option", "value"))


def _card_data(
    recipe: Recipe, card: CardFacts, metrics: Mapping[str, JSON], kind: CardKind, name: str
) -> ModelCardData:
    from huggingface_hub import ModelCardData

    from finetune.models.names import hub_id, model_license
    from finetune.tasks import TASKS

    task = TASKS[recipe.task.type]
    quality, _ = split_metrics(metrics)
    lib = library_name(card.method, kind)
    tags = ["finetune", card.method.name, recipe.task.type]
    if kind == "merged":
        tags.append("merged")
    results = eval_results(recipe, task, quality)
    return ModelCardData(
        base_model=hub_id(recipe.model.name),
        library_name=lib,
        license=model_license(recipe.model.name, recipe.model.revision),
        pipeline_tag=task.pipeline_tag,
        language=task.languages(recipe.task) or None,  # translation: source and target codes
        datasets=hub_datasets(recipe) or None,
        tags=tags,
        metrics=[r.metric_type for r in results] if results else None,
        model_name=name if results else None,
        eval_results=results,
    )


def _artefact(
    recipe: Recipe, card: CardFacts, kind: CardKind, ref: str, lib: str | None
) -> Artefact:
    from finetune.models.detect import architecture_named
    from finetune.models.names import hub_id
    from finetune.tasks import TASKS
    from finetune.tasks.chat import snippet_messages
    from finetune.tasks.generation import GenerationTask

    info = card.info
    family = architecture_named(info.architecture)
    task = TASKS[recipe.task.type](recipe.task, family)
    generation = getattr(recipe.eval, "generation", None)
    max_new = getattr(generation, "max_new_tokens", None) or recipe.train.max_target_length
    prefix = task.prefix() if hasattr(task, "prefix") else ""
    separator = task.causal_separator() if hasattr(task, "causal_separator") else ""
    chat = None
    if isinstance(task, GenerationTask) and info.task_state.get("prompt") == "chat":
        chat = snippet_messages(task, "an input text")  # the turns training used
    return Artefact(
        kind=kind,
        ref=ref,
        base=hub_id(recipe.model.name) or recipe.model.name,
        library=lib,
        method=info.method,
        model_kind=info.model_kind or task.model_kind(),
        family=family.family,  # the shape's family: bert / gpt2 / t5
        labels=info.labels,
        regression=task.name == "regression",
        prefix=prefix,
        separator=separator,
        max_length=recipe.train.max_length,
        max_new_tokens=int(max_new),
        chat_messages=chat,
        trained=card.method.trains,
    )


def render_model_card(
    recipe: Recipe,
    info: RunInfo,
    method: Method,
    metrics: Mapping[str, JSON],
    kind: CardKind = "run",
    ref: str = ".",
) -> str:
    """The card text: YAML metadata from `ModelCardData`, then the body.

    `ref` is how the artefact is reached in the loading snippet: the Hub repo id for a pushed
    card, the directory for a local one.
    """
    from huggingface_hub import ModelCard

    name = ref.rstrip("/").rsplit("/", 1)[-1] if kind != "adapter" else ref
    card = CardFacts(info, method)
    data = _card_data(recipe, card, metrics, kind, name or "model")
    lib = library_name(method, kind)
    quality, facts = split_metrics(metrics)
    fact_rows = [(FACT_NAMES.get(k, k), v) for k, v in metric_items(facts)]
    base_id = data.base_model if isinstance(data.base_model, str) else None  # one base here
    versions = "\n".join(f"- {k} {v}" for k, v in info.versions.items())
    body = f"""
# {_title(recipe, method, kind, base_id)}

{_summary(recipe, card, kind, base_id, lib)}

## How to load

{load_snippet(_artefact(recipe, card, kind, ref, lib))}

## Evaluation

{_evaluation_section(recipe, quality)}

## Training data

{_data_section(recipe, method.trains)}

## Training

{_hyperparameters(recipe) if method.trains else f"Nothing was trained (method `{method.name}`)."}

Run facts (time, sizes, counts; they describe the run, not the model's quality):

{_table(fact_rows, ("fact", "value"))}

## Framework versions

{versions}

## Recipe

```yaml
{dump_recipe(recipe).strip()}
```
"""
    model_card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    return redact(str(model_card))
