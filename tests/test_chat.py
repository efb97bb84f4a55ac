"""Chat-template prompts on decoders (tasks/chat.py), on a tiny Llama with a ChatML template:
the prompt is the template's, the loss covers the reply and its end-of-turn token only,
generation stops at the end of the turn, and run / eval / predict / the merged model give the
same texts; bad options exit 2 with one line naming them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.models import ARCHITECTURES, FAMILIES
from finetune.recipe.schema import Recipe
from finetune.setup.task import make_task
from finetune.tasks import chat
from finetune.tasks.base import Example, TaskState
from finetune.tasks.padding import IGNORE
from tests.conftest import write_recipe
from tests.generation_data import summary_rows, translation_rows, write_jsonl
from tests.tiny_chat import END, bigram_chat_model, build_chat_llama

GEN = {"max_new_tokens": 8, "num_beams": 1}
SUMMARY = {"type": "summarization", "text": "dialogue", "summary": "summary"}


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory) -> Path:
    return build_chat_llama(tmp_path_factory.mktemp("tiny-chat") / "llama")


def make_recipe(model: Path | str, task: dict, max_length: int = 48, target: int = 16) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"name": str(model)},
            "task": task,
            "data": {"train": "unused.jsonl"},
            "method": {"name": "lora"},
            "train": {"max_length": max_length, "max_target_length": target},
            "eval": {"generation": GEN},
        }
    )


def chat_task(model_dir: Path, task: dict | None = None, **limits):
    from finetune.models.loading import load_tokenizer

    recipe = make_recipe(model_dir, task or SUMMARY, **limits)
    made = make_task(recipe, ARCHITECTURES["llama"])
    made.tokenizer = load_tokenizer(str(model_dir))
    return made


def _user(text: str, instruction: str = "Summarize the following text.") -> dict:
    return {"role": "user", "content": f"{instruction}\n\n{text}"}


def test_prompt_is_the_chat_templates_generation_prompt(chat_dir):
    task = chat_task(chat_dir)
    assert task.state.prompt == "chat"  # auto + a template
    texts = ["hello a red dog runs in the park", "a cat"]
    examples = [Example(source=t, target=None, where=f"input {i}") for i, t in enumerate(texts)]
    features = task.encode(examples, training=False)
    for text, feat in zip(texts, features):
        expected = task.tokenizer.apply_chat_template(
            [_user(text)], add_generation_prompt=True, return_dict=False
        )
        assert feat["prompt_ids"] == list(expected)
    tokens = task.tokenizer.convert_ids_to_tokens(features[1]["prompt_ids"])
    assert tokens[-3:] == ["<|im_start|>", "assistant", "\n"]


def test_translation_instruction_names_the_languages_and_system_turn_comes_first(chat_dir):
    spec = {"type": "translation", "source_lang": "en", "target_lang": "de", "system": "you are"}
    task = chat_task(chat_dir, spec)
    assert chat.instruction(task) == "Translate from English to German."
    prompt = task.encode([Example("a dog", None, "input 1")], training=False)[0]["prompt_ids"]
    expected = task.tokenizer.apply_chat_template(
        [{"role": "system", "content": "you are"}, _user("a dog", chat.instruction(task))],
        add_generation_prompt=True,
        return_dict=False,
    )
    assert prompt == list(expected)


def test_loss_covers_exactly_the_reply_and_its_end_of_turn(chat_dir):
    task = chat_task(chat_dir)
    tok = task.tokenizer
    source, summary = "hello a red dog runs in the park", "a red dog runs"
    feat = task.encode([Example(source, [summary], "row 1")], training=True)[0]
    conversation = [_user(source), {"role": "assistant", "content": summary}]
    full = list(tok.apply_chat_template(conversation, return_dict=False))
    assert tok.convert_ids_to_tokens(full[-2:]) == [END, "\n"]  # ChatML's newline after the turn
    assert feat["input_ids"] == full[:-1]  # the trailing newline is not part of the example
    labelled = [t for t in feat["labels"] if t != IGNORE]
    reply = tok(summary, add_special_tokens=False)["input_ids"]
    assert labelled == [*reply, tok.convert_tokens_to_ids(END)]
    assert feat["labels"][: len(full) - 1 - len(labelled)] == [IGNORE] * (
        len(full) - 1 - len(labelled)
    )


def test_long_inputs_lose_text_not_template_and_long_targets_keep_end_of_turn(chat_dir):
    task = chat_task(chat_dir, max_length=20, target=4)
    tok = task.tokenizer
    long_text = " ".join(["the old man walks in the park"] * 6)
    feat = task.encode([Example(long_text, ["a red dog runs in the park"], "row 1")], True)[0]
    prompt = [i for i, label in zip(feat["input_ids"], feat["labels"]) if label == IGNORE]
    assert len(prompt) == 20
    assert tok.convert_ids_to_tokens(prompt[:4]) == ["<|im_start|>", "user", "\n", "Summarize"]
    assert tok.convert_ids_to_tokens(prompt[-5:]) == [END, "\n", "<|im_start|>", "assistant", "\n"]
    labelled = [t for t in feat["labels"] if t != IGNORE]
    assert tok.convert_ids_to_tokens(labelled) == ["a", "red", "dog", END]


def test_generation_stops_at_end_of_turn_and_eos(chat_dir):
    import torch

    from finetune.models.loading import load_base_model
    from finetune.models.names import resolve_name

    task = chat_task(chat_dir)
    tok = task.tokenizer
    loaded = load_base_model(resolve_name(str(chat_dir)), ARCHITECTURES["llama"], "causal", tok)
    # greedy: "good movie <|im_end|> bad bad bad ..." unless generation stops at the turn's end
    chain = {"\n": "good", "good": "movie", "movie": END, END: "bad", "bad": "bad"}
    model = bigram_chat_model(loaded.model, tok, chain)
    config = task.generation_config(model)
    assert config.eos_token_id == [tok.convert_tokens_to_ids(END), tok.eos_token_id]
    batch = task.collate(task.encode([Example("a cat", None, "input 1")], training=False))
    with torch.inference_mode():
        assert task.generate(model, batch) == ["good movie"]
    task.state.prompt = "plain"  # without the chat stop, the same model runs on past the turn
    plain = task.generation_config(model)
    assert plain.eos_token_id == tok.eos_token_id
    with torch.inference_mode():
        out = model.generate(batch["prompt_ids"], generation_config=plain)
    assert "bad" in tok.decode(out[0, batch["prompt_ids"].shape[1] :], skip_special_tokens=True)


def test_plain_mode_and_tokenizers_without_template_stay_as_before(tmp_path, chat_dir):
    plain = chat_task(chat_dir, {**SUMMARY, "prompt": "plain"})
    assert plain.state.prompt == "plain"
    prompt = plain.encode([Example("a cat", None, "input 1")], training=False)[0]["prompt_ids"]

    def ids(text: str) -> list[int]:
        return plain.tokenizer(text, add_special_tokens=False)["input_ids"]

    assert prompt == ids("a cat") + ids("\nTL;DR:")  # text + separator, no template
    no_template = build_chat_llama(tmp_path / "plain", template=None)
    assert chat_task(no_template).state.prompt == "plain"  # auto without a template


def test_saved_state_restores_the_mode_and_old_runs_reload_plain():
    assert TaskState.from_dict({"labels": [], "prompt": "chat"}).prompt == "chat"
    assert TaskState.from_dict({"labels": []}).prompt == "plain"  # a run from before chat
    assert TaskState(labels=["a"], prompt="chat").to_dict() == {"labels": ["a"], "prompt": "chat"}


def test_restored_mode_wins_over_auto(chat_dir):
    from finetune.models.loading import load_tokenizer

    task = make_task(make_recipe(chat_dir, SUMMARY), ARCHITECTURES["llama"])
    task.state = TaskState.from_dict({"labels": []})  # reload order: state, then tokenizer
    task.tokenizer = load_tokenizer(str(chat_dir))
    assert task.prompt_mode() == "plain"


def test_feature_cache_key_holds_the_resolved_mode(chat_dir):
    from finetune.data.encoding import cache_key

    chat = chat_task(chat_dir)
    plain = chat_task(chat_dir)
    plain.state.prompt = "plain"
    assert cache_key(chat, False, "x") != cache_key(plain, False, "x")


def test_encoder_decoders_ignore_chat_with_a_warning(tiny_model_dir, caplog):
    from finetune.models.loading import load_tokenizer

    model_dir = tiny_model_dir("t5")
    examples = [Example("a cat walks", ["a cat"], "row 1")]
    encoded = []
    for prompt in ("chat", "plain"):
        recipe = make_recipe(model_dir, {**SUMMARY, "prompt": prompt})
        task = make_task(recipe, FAMILIES["t5"])
        with caplog.at_level(logging.WARNING):
            task.tokenizer = load_tokenizer(str(model_dir))
        encoded.append(task.encode(examples, training=True))
        assert task.state.prompt is None
    assert encoded[0] == encoded[1]  # T5's "summarize: " prefix, as before
    assert "task.prompt: chat ignored" in caplog.text


# --------------------------------------------------------------------------- through the CLI


def _invoke(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def chat_recipe(model_dir: Path, tmp_path: Path, task: str = "summarization", **opts) -> dict:
    make = summary_rows if task == "summarization" else translation_rows
    train = write_jsonl(tmp_path / "data" / "train.jsonl", make(32, seed=1))
    dev = write_jsonl(tmp_path / "data" / "dev.jsonl", make(8, seed=2))
    spec = SUMMARY if task == "summarization" else {"type": "translation"}
    return {
        "model": {"name": str(model_dir)},
        "task": {**spec, **opts},
        "data": {"train": str(train), "eval": str(dev)},
        "method": {"name": "lora"},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3, "max_length": 48, "seed": 0},
        "eval": {"batch_size": 8, "generation": GEN},
        "output": {"dir": str(tmp_path / "run")},
    }


def merged_texts(merged: Path, records: list[dict], instruction: str) -> list[str]:
    """What a user gets from the merged model with the card's recipe: apply_chat_template,
    greedy generate, stop at the end of turn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    stop = [tok.convert_tokens_to_ids(END), tok.eos_token_id]
    texts = []
    for record in records:
        inputs = tok.apply_chat_template(
            [_user(record["source"], instruction)],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=GEN["max_new_tokens"], do_sample=False, eos_token_id=stop
            )
        text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        texts.append(" ".join(text.split()))
    return texts


@pytest.mark.parametrize("task", ["summarization", "translation"])
def test_run_eval_predict_and_merged_model_give_the_same_texts(task, tmp_path, runner, chat_dir):
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", chat_recipe(chat_dir, tmp_path, task))
    _invoke(runner, "run", recipe, "--no-progress")
    assert json.loads((out / "run.json").read_text())["task_state"]["prompt"] == "chat"
    saved = _jsonl(out / "predictions.jsonl")
    assert any(r["prediction"] for r in saved)  # texts to compare, not only empty replies
    metrics = json.loads((out / "metrics.json").read_text())

    _invoke(runner, "eval", out)
    assert [r["prediction"] for r in _jsonl(out / "predictions_eval.jsonl")] == [
        r["prediction"] for r in saved
    ]
    assert json.loads((out / "eval_eval.json").read_text())["loss"] == pytest.approx(
        metrics["loss"], abs=1e-6
    )
    sources = [r["source"] for r in saved[:4]]
    result = _invoke(runner, "predict", out, *[a for s in sources for a in ("--text", s)])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["prediction"] for r in lines] == [r["prediction"] for r in saved[:4]]

    _invoke(runner, "merge", out, "--out", tmp_path / "merged")
    instruction = "Summarize the following text."
    if task == "translation":
        instruction = "Translate from English to German."
    assert merged_texts(tmp_path / "merged", saved, instruction) == [r["prediction"] for r in saved]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "apply_chat_template(" in card and repr(instruction + "\n\nan input text") in card


def test_prompt_chat_without_template_exits_2_in_validate_and_run(tmp_path, runner):
    model_dir = build_chat_llama(tmp_path / "no-template", template=None)
    recipe = write_recipe(tmp_path / "r.yaml", chat_recipe(model_dir, tmp_path, prompt="chat"))
    for command in ("validate", "run"):
        result = runner.invoke(app, [command, str(recipe)])
        assert result.exit_code == 2, result.output
        assert "task.prompt" in result.output and "has no chat template" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "adapter").exists()


def test_instruction_leaving_no_room_exits_2_naming_both_options(tmp_path, runner, chat_dir):
    data = chat_recipe(chat_dir, tmp_path, instruction=" ".join(["the old man walks"] * 4))
    data["train"]["max_length"] = 16
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2, result.output
    first = result.output.strip().splitlines()[0]
    assert "task.instruction" in first and "train.max_length (16)" in first, result.output
    assert "Traceback" not in result.output


def test_init_writes_the_prompt_options_for_a_decoder_generation_task(tmp_path, runner, chat_dir):
    train = write_jsonl(tmp_path / "train.jsonl", summary_rows(20, seed=1))
    decoder, default = tmp_path / "decoder.yaml", tmp_path / "default.yaml"
    _invoke(runner, "init", train, "--model", chat_dir, "--out", decoder)
    text = decoder.read_text(encoding="utf-8")
    assert "  prompt: auto" in text and "# instruction: Summarize the following text." in text
    _invoke(runner, "init", train, "--out", default)  # bert2bert: no chat options
    assert "prompt:" not in default.read_text(encoding="utf-8")


@pytest.mark.parametrize("method", ["prompt", "houlsby"])
def test_other_methods_reload_chat_prompts(method, tmp_path, runner, chat_dir):
    """Prompt tuning (virtual tokens before the template) and a bottleneck adapter (finetune's
    own format) reproduce their chat-prompted predictions after a reload."""
    data = chat_recipe(chat_dir, tmp_path)
    data["method"] = {"name": method}
    _invoke(runner, "run", write_recipe(tmp_path / "r.yaml", data), "--no-progress")
    saved = _jsonl(tmp_path / "run" / "predictions.jsonl")
    _invoke(runner, "eval", tmp_path / "run")
    again = _jsonl(tmp_path / "run" / "predictions_eval.jsonl")
    assert [r["prediction"] for r in again] == [r["prediction"] for r in saved]
