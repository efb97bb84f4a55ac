"""Chat-template prompts for decoder summarization and translation.

Instruction-tuned decoders (SmolLM2, Qwen2.5, Llama 3.2, Gemma, Phi) were tuned on
conversations rendered by their tokenizer's chat template. With `task.prompt: chat` (or `auto`
when the tokenizer has a template) an example becomes one: an optional system message
(`task.system`), a user turn holding `task.instruction`, a blank line and the input text, and
the target as the assistant's reply.

- The prompt is the template's rendering with `add_generation_prompt=True`, tokenised without
  added special tokens (exactly what `apply_chat_template` returns). When it is longer than
  `train.max_length`, the input text is cut (never the template) until it fits.
- The reply's tokens are what the full conversation adds after the prompt, up to and including
  the end-of-turn token; anything the template puts after it (a newline) is not learned. The
  full conversation must start with the prompt's tokens, or the loss could not sit on the reply
  alone: a template that breaks this is refused.
- The end-of-turn token is the last special token the template puts after a reply's content
  (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, ...). Generation stops at it and at EOS.

The resolved mode is kept in the task's state (run.json `task_state.prompt`), so `eval`,
`predict` and `merge` on a run directory use the prompts it was trained with even under `auto`;
runs written before chat prompts existed reload as `plain`. Encoder-decoders ignore these
options (T5 keeps its task prefix). torch is never imported here.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from pydantic import Field

from finetune.errors import FinetuneError, ModelError, first_line
from finetune.tasks.base import warn_truncated

if TYPE_CHECKING:  # pragma: no cover
    from finetune.tasks.base import Example, TaskSettings, TaskState
    from finetune.types import Tokenizer


class ChatOptions(Protocol):
    """The chat options of a generation task's recipe section (`prompt_field` and friends)."""

    @property
    def prompt(self) -> PromptMode: ...
    @property
    def instruction(self) -> str | None: ...
    @property
    def system(self) -> str | None: ...


class GenerationTask(Protocol):
    """What the chat prompt reads of a generation task (tasks/generation.py implements it)."""

    cfg: ChatOptions
    settings: TaskSettings
    state: TaskState

    @property
    def tokenizer(self) -> Tokenizer: ...

    def is_causal(self) -> bool: ...

    def default_instruction(self, cfg: ChatOptions) -> str: ...


log = logging.getLogger(__name__)

PromptMode = Literal["auto", "chat", "plain"]
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
_SENTINEL = "finetune-reply-sentinel"
PLAIN_FIX = "set task.prompt: plain (or auto: chat only when the tokenizer has a template)"


def prompt_field() -> Any:
    return Field(
        "auto",
        description="Decoders: 'chat' builds each example with the tokenizer's chat template "
        "(input in the user turn, target as the reply); 'plain' is input + separator; 'auto' is "
        "chat when the tokenizer has a template. Encoder-decoders ignore it.",
    )


def instruction_field(default: str) -> Any:
    return Field(
        None,
        description=f"Chat prompts: the line before the input in the user turn; default {default}.",
    )


def system_field() -> Any:
    return Field(
        None,
        description="Chat prompts: a system message; default none (the template may add its own).",
    )


@dataclass(frozen=True)
class ChatFormat:
    """What the template does with this task's turns, worked out once per tokenizer."""

    end_of_turn: int  # the token that ends the reply (learned, and where generation stops)
    overhead: int  # prompt tokens with an empty input text


# tokenizer -> {(instruction, system, max_length): ChatFormat}
_FORMATS: weakref.WeakKeyDictionary[Tokenizer, dict[tuple[str, str | None, int], ChatFormat]] = (
    weakref.WeakKeyDictionary()
)


def has_chat_template(tokenizer: object) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def model_name(task: GenerationTask) -> str:
    """Where the task's tokenizer came from, for messages (a task does not know the recipe)."""
    return str(getattr(task.tokenizer, "name_or_path", "") or "the model")


# --------------------------------------------------------------------------- the mode


def on_tokenizer(task: GenerationTask) -> None:
    """Resolve the prompt mode as soon as the tokenizer is known: a template problem stops the
    run before any weight loads. (Before the task has its state, `prompt_mode` does it later.)"""
    if getattr(task, "state", None) is None:
        return
    if task.is_causal():
        prompt_mode(task)
        return
    task.state.prompt = None
    ignored = ["task.prompt: chat"] if task.cfg.prompt == "chat" else []
    ignored += [f"task.{k}" for k in ("instruction", "system") if getattr(task.cfg, k) is not None]
    if ignored:
        log.warning(
            "%s ignored: %s is an encoder-decoder, which takes no chat template (the input is "
            "encoded as before, with T5's task prefix)",
            ", ".join(ignored),
            model_name(task),
        )


def prompt_mode(task: GenerationTask) -> str | None:
    """'chat' or 'plain' for a decoder (None otherwise), resolved once into task.state."""
    if not task.is_causal():
        return None
    if task.state.prompt is None:
        task.state.prompt = _resolve(task)
    return task.state.prompt


def _resolve(task: GenerationTask) -> str:
    wanted = task.cfg.prompt
    template = has_chat_template(task.tokenizer)
    if wanted == "chat" and not template:
        raise ModelError(
            f"task.prompt: chat, but the tokenizer of {model_name(task)} has no chat template",
            fix=PLAIN_FIX + ", or use an instruction-tuned model",
        )
    mode = "chat" if wanted == "chat" or (wanted == "auto" and template) else "plain"
    if mode == "chat":
        fmt = chat_format(task)
        log.info(
            "prompts: the tokenizer's chat template (task.prompt: %s); user turn: %r + the "
            "input; replies end with %s",
            wanted,
            instruction(task),
            task.tokenizer.convert_ids_to_tokens(fmt.end_of_turn),
        )
    elif task.cfg.instruction is not None or task.cfg.system is not None:
        log.warning("task.instruction / task.system ignored: prompts are plain (task.prompt)")
    return mode


# --------------------------------------------------------------------------- rendering


def instruction(task: GenerationTask) -> str:
    """task.instruction, else the task's default ('Summarize the following text.', ...)."""
    found = task.cfg.instruction
    return found if found is not None else task.default_instruction(task.cfg)


def messages(task: GenerationTask, text: str, reply: str | None = None) -> list[dict[str, str]]:
    """The conversation of one example: [system], user (instruction, blank line, text), [reply]."""
    request = instruction(task)
    turns = [{"role": "system", "content": task.cfg.system}] if task.cfg.system else []
    turns.append({"role": "user", "content": f"{request}\n\n{text}" if request else text})
    if reply is not None:
        turns.append({"role": "assistant", "content": reply})
    return turns


def encode(task: GenerationTask, conversations: list[list[dict[str, str]]], prompt: bool) -> list:
    """Token ids of rendered conversations, as `apply_chat_template` tokenises them (no added
    special tokens: the template writes its own)."""
    tokenizer = task.tokenizer
    try:
        texts = tokenizer.apply_chat_template(
            conversations, add_generation_prompt=prompt, tokenize=False
        )
    except Exception as exc:  # jinja2 raises its own errors (system role not supported, ...)
        raise ModelError(
            f"task.prompt: chat: the chat template of {model_name(task)} refuses the "
            f"conversation: {first_line(exc)}",
            fix=("unset task.system, or " if task.cfg.system else "") + PLAIN_FIX,
        ) from None
    ids = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)
    return [list(row) for row in ids["input_ids"]]


def chat_format(task: GenerationTask) -> ChatFormat:
    tokenizer = task.tokenizer
    key = (instruction(task), task.cfg.system, task.settings.max_length)
    formats = _FORMATS.setdefault(tokenizer, {})
    if key not in formats:
        formats[key] = _work_out(task)
    return formats[key]


def _work_out(task: GenerationTask) -> ChatFormat:
    """The end-of-turn token and the template's share of train.max_length."""
    tokenizer = task.tokenizer
    limit = task.settings.max_length
    overhead = len(encode(task, [messages(task, "")], prompt=True)[0])
    if overhead >= limit:
        raise FinetuneError(
            f"task.instruction: the chat template with task.instruction"
            f"{' and task.system' if task.cfg.system else ''} takes {overhead} tokens, leaving "
            f"no room for the input within train.max_length ({limit})",
            fix="raise train.max_length or shorten task.instruction / task.system",
        )
    batch = [messages(task, "a", reply=_SENTINEL)]
    rendered = cast("list[str]", tokenizer.apply_chat_template(batch, tokenize=False))[0]
    tail = rendered[rendered.rindex(_SENTINEL) + len(_SENTINEL) :]
    special = set(tokenizer.all_special_ids) | {
        i for i, added in tokenizer.added_tokens_decoder.items() if added.special
    }
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    found = [i for i in ids if i in special]
    if not found:
        raise ModelError(
            f"task.prompt: chat: the chat template of {model_name(task)} ends a reply with "
            f"{tail!r}, no special token, so generation could not stop at the end of the turn",
            fix=PLAIN_FIX,
        )
    return ChatFormat(end_of_turn=int(found[-1]), overhead=overhead)


# --------------------------------------------------------------------------- encoding


def prompt_ids(task: GenerationTask, texts: list[str]) -> tuple[list[list[int]], list[str]]:
    """Prompt ids within train.max_length, and the (possibly cut) input texts they hold."""
    chat_format(task)  # the no-room check, before any example is cut
    limit = task.settings.max_length
    ids = encode(task, [messages(task, t) for t in texts], prompt=True)
    long = [i for i, row in enumerate(ids) if len(row) > limit]
    warn_truncated(len(long), len(ids), limit, "inputs")
    kept = list(texts)
    for i in long:
        ids[i], kept[i] = _fit(task, texts[i], len(ids[i]) - limit)
    return ids, kept


def _fit(task: GenerationTask, text: str, excess: int) -> tuple[list[int], str]:
    """Cut the input text's tokens until the rendered prompt fits (token boundaries can merge
    differently inside the template, hence the loop)."""
    tokenizer = task.tokenizer
    limit = task.settings.max_length
    source = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = len(source) - excess
    while keep > 0:
        cut = cast("str", tokenizer.decode(source[:keep]))  # one sequence: one text
        ids = encode(task, [messages(task, cut)], prompt=True)[0]
        if len(ids) <= limit:
            return ids, cut
        keep -= len(ids) - limit
    ids = encode(task, [messages(task, "")], prompt=True)[0]
    return ids, ""


def prompts_and_replies(
    task: GenerationTask, examples: list[Example]
) -> tuple[list[list[int]], dict[int, list[int]]]:
    """Every example's prompt ids, and for those with a target its reply ids (the labels)."""
    prompts, texts = prompt_ids(task, [ex.source for ex in examples])
    labelled = [i for i, ex in enumerate(examples) if ex.target is not None]
    if not labelled:
        return prompts, {}
    conversations = [messages(task, texts[i], reply=examples[i].target[0]) for i in labelled]
    full = encode(task, conversations, prompt=False)
    end = chat_format(task).end_of_turn
    limit = task.settings.max_target_length
    replies: dict[int, list[int]] = {}
    cut = 0
    for i, ids in zip(labelled, full):
        prompt = prompts[i]
        rest = ids[len(prompt) :]
        if ids[: len(prompt)] != prompt or end not in rest:
            raise ModelError(
                f"task.prompt: chat: the chat template of {model_name(task)} renders a "
                "conversation that does not start with its own generation prompt (or has no "
                f"end-of-turn after the reply; {examples[i].where}), so the loss cannot be put "
                "on the reply alone",
                fix=PLAIN_FIX,
            )
        reply = rest[: len(rest) - 1 - rest[::-1].index(end)]
        cut += len(reply) >= limit
        replies[i] = reply[: limit - 1] + [end]
    warn_truncated(cut, len(replies), limit - 1, "targets")
    return prompts, replies


def stop_ids(task: GenerationTask) -> list[int]:
    """Where chat generation stops: the end-of-turn token and EOS."""
    end = chat_format(task).end_of_turn
    eos = task.tokenizer.eos_token_id
    return [end] + ([int(eos)] if eos is not None and eos != end else [])


# --------------------------------------------------------------------------- without weights


def template_known(name: str, revision: str | None) -> bool | None:
    """Whether the model's tokenizer files on this machine hold a chat template, read from
    tokenizer_config.json / chat_template.jinja without transformers; None when unknown (a
    Hub model not in the cache, a GGUF bundle not converted yet)."""
    import json
    from pathlib import Path

    from finetune.models.names import resolve_name

    resolved = resolve_name(name, convert=False)
    if resolved.local:
        folder = Path(resolved.path)
        if not (folder / "tokenizer_config.json").is_file():
            return None
        found = {f: folder / f for f in ("tokenizer_config.json", *TEMPLATE_FILES)}
    else:
        from huggingface_hub import try_to_load_from_cache

        found = {}
        for filename in ("tokenizer_config.json", *TEMPLATE_FILES):
            hit = try_to_load_from_cache(resolved.path, filename, revision=revision)
            if isinstance(hit, str):
                found[filename] = Path(hit)
        if "tokenizer_config.json" not in found:
            return None
    if any(found[f].is_file() for f in TEMPLATE_FILES if f in found):
        return True
    try:
        config = json.loads(found["tokenizer_config.json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return bool(config.get("chat_template"))


def snippet_messages(task: GenerationTask, text: str) -> list[dict[str, str]]:
    """The conversation a model card's snippet shows (the same turns training used)."""
    return messages(task, text)
