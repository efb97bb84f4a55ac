"""The "how to load" snippet of a model card, one per kind of artefact.

A merged model loads with transformers (a pipeline for classification, generate otherwise), a
peft adapter with `PeftModel.from_pretrained` on its base, a full fine-tune from its `model/`
subfolder, and finetune's own adapter formats with `finetune predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

CardKind = Literal["run", "merged", "adapter"]


@dataclass(frozen=True)
class Artefact:
    """What a snippet needs to know to load the artefact the card describes."""

    kind: CardKind
    ref: str  # Hub repo id or directory of this artefact
    base: str  # Hub id of the base model, else the recipe's model.name
    library: str | None
    method: str
    model_kind: str  # classification | seq2seq | causal
    family: str
    labels: list[str]
    prefix: str
    separator: str
    max_length: int
    max_new_tokens: int
    chat_messages: list[dict[str, str]] | None = None  # a chat-prompted decoder's turns
    regression: bool = False  # one output, the score itself (no labels, no softmax)
    trained: bool = True  # False: a zero-shot run (method none), whose model is the base itself


AUTO = {
    "classification": "AutoModelForSequenceClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal": "AutoModelForCausalLM",
}


def _use_lines(art: Artefact, model: str, tokenizer: str) -> list[str]:
    """Lines that run `model` on one input with `tokenizer`, as finetune does."""
    if art.regression:
        return [
            f'inputs = {tokenizer}("an input text", return_tensors="pt", truncation=True, '
            f"max_length={art.max_length})",
            f"print({model}(**inputs).logits[0, 0].item())",
        ]
    if art.model_kind == "classification":
        return [
            f'inputs = {tokenizer}("an input text", return_tensors="pt", truncation=True, '
            f"max_length={art.max_length})",
            f"probabilities = {model}(**inputs).logits.softmax(-1)[0]",
            f"label = {model}.config.id2label[int(probabilities.argmax())]",
            "print(label, float(probabilities.max()))",
        ]
    prompt = repr(art.prefix) + " + " if art.prefix else ""
    if art.model_kind == "causal" and art.chat_messages is not None:
        return [
            f"messages = {art.chat_messages!r}",
            f"inputs = {tokenizer}.apply_chat_template(\n    messages, add_generation_prompt=True, "
            'return_tensors="pt", return_dict=True\n)',
            f"output = {model}.generate(**inputs, max_new_tokens={art.max_new_tokens})",
            f'print({tokenizer}.decode(output[0, inputs["input_ids"].shape[1]:], '
            "skip_special_tokens=True))",
        ]
    if art.model_kind == "causal":
        return [
            f"prompt = {prompt}'an input text' + {art.separator!r}",
            f'inputs = {tokenizer}(prompt, return_tensors="pt")',
            f"output = {model}.generate(**inputs, max_new_tokens={art.max_new_tokens})",
            f'print({tokenizer}.decode(output[0, inputs["input_ids"].shape[1]:], '
            "skip_special_tokens=True))",
        ]
    return [
        f'inputs = {tokenizer}({prompt}"an input text", return_tensors="pt", truncation=True, '
        f"max_length={art.max_length})",
        f"output = {model}.generate(**inputs, max_new_tokens={art.max_new_tokens})",
        f"print({tokenizer}.decode(output[0], skip_special_tokens=True))",
    ]


def _python(lines: list[str]) -> str:
    return "```python\n" + "\n".join(lines) + "\n```"


def _finetune_snippet(art: Artefact) -> str:
    if art.kind == "adapter":
        fetch = f"hf download {art.ref} --local-dir {art.ref.rsplit('/', 1)[-1]}\n"
        where = art.ref.rsplit("/", 1)[-1]
    else:
        fetch, where = "", art.ref
    return (
        "```console\n"
        f"{fetch}finetune predict {where} --text 'an input text'\n"
        f"finetune eval {where}\n"
        "```"
    )


def _subfolder(art: Artefact, name: str) -> str:
    """Path arguments for a file of a run-directory layout (adapter card and run card)."""
    return f'"{art.ref}", subfolder="{name}"'


def _merged_snippet(art: Artefact) -> str:
    """A plain transformers model: the pipeline for classification (for regression it prints
    the raw score: the config's problem_type is regression), else `generate` (transformers 5
    has no summarization / translation pipeline)."""
    if art.model_kind == "classification":
        return _python(
            [
                "from transformers import pipeline",
                "",
                f'classify = pipeline("text-classification", model="{art.ref}")',
                'print(classify("an input text"))',
            ]
        )
    auto = AUTO[art.model_kind]
    return _python(
        [
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{art.ref}")',
            f'model = {auto}.from_pretrained("{art.ref}").eval()',
            *_use_lines(art, "model", "tokenizer"),
        ]
    )


def _full_snippet(art: Artefact) -> str:
    """`full` as trained: a transformers model in the run layout's model/ folder."""
    auto = AUTO[art.model_kind]
    return _python(
        [
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f"tokenizer = AutoTokenizer.from_pretrained({_subfolder(art, 'tokenizer')})",
            f"model = {auto}.from_pretrained({_subfolder(art, 'model')}).eval()",
            *_use_lines(art, "model", "tokenizer"),
        ]
    )


def _peft_snippet(art: Artefact) -> str:
    """The base model with the run's head configuration, then peft's adapter on top."""
    auto = AUTO[art.model_kind]
    labels = ""
    if art.regression:  # the head of the trained run: one output, MSE
        labels = '    num_labels=1,\n    problem_type="regression",\n'
    elif art.model_kind == "classification":
        id2label = dict(enumerate(art.labels))
        label2id = {label: i for i, label in enumerate(art.labels)}
        labels = (
            f"    num_labels={len(art.labels)},\n    id2label={id2label!r},\n"
            f"    label2id={label2id!r},\n"
        )
    return _python(
        [
            "from peft import PeftModel",
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f"tokenizer = AutoTokenizer.from_pretrained({_subfolder(art, 'tokenizer')})",
            f"base = {auto}.from_pretrained(\n    {art.base!r},\n{labels}"
            "    pad_token_id=tokenizer.pad_token_id,\n)",
            f"model = PeftModel.from_pretrained(base, {_subfolder(art, 'adapter')}).eval()",
            *_use_lines(art, "model", "tokenizer"),
        ]
    )


def load_snippet(art: Artefact) -> str:
    """Markdown showing how to load this artefact; every line is runnable as written."""
    if art.kind == "merged":
        return _merged_snippet(art)
    finetune = _finetune_snippet(art)
    if not art.trained:  # nothing trained: the base model is loaded as it is
        base = _merged_snippet(replace(art, ref=art.base))
        lead = "Nothing was trained, so the run holds no weights: load the base model."
        return f"{lead}\n\n{base}\n\nor with finetune:\n\n{finetune}"
    bert2bert = art.family == "bert" and art.model_kind != "classification"
    if bert2bert:
        why = (
            "finetune builds this encoder-decoder from two copies of the BERT model (new "
            "cross-attention), which only finetune rebuilds"
        )
    elif art.library in ("transformers", "peft"):
        code = _full_snippet(art) if art.library == "transformers" else _peft_snippet(art)
        return f"{code}\n\nor with finetune:\n\n{finetune}"
    else:
        why = f"the {art.method} adapter is in finetune's own format (no other library loads it)"
    return f"Load it with finetune: {why}.\n\n{finetune}"
