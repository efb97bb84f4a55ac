"""`finetune merge` (with its output-parity check) and `finetune push`'s error path.

Pushing itself is tested against a local Hub server in test_hub_server.py.
"""

from __future__ import annotations

import json

import pytest

from finetune.cli import app
from tests.conftest import classification_recipe, write_recipe


@pytest.fixture()
def lora_run(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    out = tmp_path / "run"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(tiny_model_dir("gpt2"), train, dev, out, {"name": "lora"}, epochs=1),
    )
    assert runner.invoke(app, ["run", str(recipe), "--no-progress"]).exit_code == 0
    return out


def test_merge_gives_plain_model_with_same_predictions(tmp_path, runner, lora_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    merged = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(lora_run), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert (merged / "config.json").exists() and (merged / "README.md").exists()
    assert not (merged / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert model.config.id2label == {0: "0", 1: "1"}
    saved = [json.loads(x) for x in (lora_run / "predictions.jsonl").read_text().splitlines()]
    with torch.no_grad():
        for rec in saved[:5]:
            probs = torch.softmax(model(**tokenizer(rec["text"], return_tensors="pt")).logits, -1)
            assert float(probs.max()) == pytest.approx(rec["probability"], abs=1e-5)
    again = runner.invoke(app, ["merge", str(lora_run), "--out", str(merged)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_merge_refuses_when_outputs_differ(tmp_path, runner, lora_run, monkeypatch):
    from finetune.methods.peft_methods import PeftMethod

    def broken_merge(self, model):
        merged = model.merge_and_unload()
        merged.score.weight.data *= 2.0  # (adding a constant is invisible after LayerNorm)
        return merged

    monkeypatch.setattr(PeftMethod, "merge", broken_merge)
    result = runner.invoke(app, ["merge", str(lora_run), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "differ" in result.output
    assert not (tmp_path / "m").exists()


def test_merge_refuses_unmergeable_method(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(
            tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "pfeiffer"}, epochs=1
        ),
    )
    assert runner.invoke(app, ["run", str(recipe), "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["merge", str(tmp_path / "run"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "cannot be merged" in result.output


def test_push_failure_is_clear_and_secret_free(runner, lora_run, monkeypatch):
    import huggingface_hub

    token = "hf_" + "Q" * 30

    class FailingApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, **kwargs):
            raise RuntimeError(f"401 Unauthorized for token {token}")

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    monkeypatch.setenv("HF_TOKEN", token)
    result = runner.invoke(app, ["push", str(lora_run), "--repo-id", "me/tiny"])
    assert result.exit_code == 2 and "push to me/tiny failed" in result.output
    assert token not in result.output


def test_push_without_a_token_says_so_before_any_hub_call(runner, lora_run, monkeypatch, tmp_path):
    """No HF_TOKEN and no saved login: the Hub would answer with a network or 401 error that
    never names the missing token."""
    import huggingface_hub

    class NoCalls:
        def __init__(self, token=None):
            raise AssertionError("the Hub was called without a token")

    monkeypatch.setattr(huggingface_hub, "HfApi", NoCalls)
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))  # no saved login
    result = runner.invoke(app, ["push", str(lora_run), "--repo-id", "me/tiny"])
    assert result.exit_code == 2 and "no Hugging Face token found" in result.output
    assert "hf auth login" in result.output and "Traceback" not in result.output
