"""Hugging Face tokens never reach a log, a run artefact, a model card or an error message.

A token is planted in the environment, in a recipe value, in the data and in exception
messages; then every file the command produced and all captured output are scanned for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from finetune.logs import add_file_log
from finetune.redaction import REDACTED, redact
from tests.conftest import classification_recipe, write_csv, write_recipe

TOKEN = "hf_PlantedTok3nAbCdEfGhIjKlMnOpQrSt"
ENV_ONLY = "s3cret-not-hf-shaped-0123456789"  # HF_TOKEN need not look like hf_...


@pytest.fixture()
def planted(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", ENV_ONLY)
    monkeypatch.setenv("FINETUNE_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path


def leaks(root: Path, *texts: str) -> list[str]:
    """Every file under root and every captured text that contains a planted secret."""
    found = []
    for secret in (TOKEN, ENV_ONLY):
        found += [
            f"{p}" for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
        ]
        found += [f"output #{i}" for i, t in enumerate(texts) if secret in t]
    return found


def test_redact_masks_env_shaped_and_stored_tokens(planted, monkeypatch):
    stored = "stored-token-value-abcdef"
    (planted / "token").write_text(stored + "\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(planted / "token"))
    text = redact(f"a {TOKEN} b {ENV_ONLY} c x_hf_{'A' * 20} d {stored} e")
    assert TOKEN not in text and ENV_ONLY not in text and stored not in text
    assert "hf_AAAA" not in text and text.count(REDACTED) == 4


def test_full_run_never_writes_the_token(planted, runner, tiny_model_dir, caplog):
    """Token in env, in a recipe value (revision) and in the eval data; scan everything."""
    rows = [{"text": f"good film {TOKEN}", "label": "1"}, {"text": "bad film", "label": "0"}] * 8
    train = write_csv(planted / "data" / "train.csv", rows)
    dev = write_csv(planted / "data" / "dev.csv", rows[:4])
    out = planted / "run"
    data = classification_recipe(tiny_model_dir("bert"), train, dev, out, {"name": "lora"})
    data["train"]["epochs"] = 1
    data["model"]["revision"] = TOKEN  # a token pasted into the wrong field
    path = write_recipe(planted / "recipe" / "r.yaml", data)
    with caplog.at_level(logging.DEBUG):
        result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "README.md").exists() and (out / "log.jsonl").exists()
    assert REDACTED in (out / "recipe.yaml").read_text()
    assert REDACTED in (out / "predictions.jsonl").read_text()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert leaks(out, result.output, logged) == []


def test_validate_error_never_echoes_the_token(planted, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, planted / "run", {"name": "lora"}
    )
    data["train"]["seed"] = TOKEN
    data["method"]["r"] = ENV_ONLY
    result = runner.invoke(app, ["validate", str(write_recipe(planted / "r.yaml", data))])
    assert result.exit_code == 2 and "train.seed" in result.output and "method.r" in result.output
    assert leaks(planted / "logs", result.output) == [] and REDACTED in result.output


def test_user_error_message_never_echoes_the_token(planted, runner, sentiment_files):
    train, dev = sentiment_files
    model = f"./models/{TOKEN}/bert"
    data = classification_recipe(Path(model), train, dev, planted / "run", {"name": "lora"})
    data["model"]["name"] = model
    result = runner.invoke(app, ["run", str(write_recipe(planted / "r.yaml", data))])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert leaks(planted / "run", result.output) == []  # (the user's own recipe holds it)


def test_crash_line_and_crash_log_never_hold_the_token(planted, runner, monkeypatch):
    import finetune.commands.validate

    def boom(*args: Any, **kwargs: Any) -> Any:
        logging.getLogger("finetune.test").info("about to call the hub with %s", TOKEN)
        raise RuntimeError(f"401 Unauthorized for url https://hf.co/api?token={TOKEN} ({ENV_ONLY})")

    monkeypatch.setattr(finetune.commands.validate, "check_recipe", boom)
    (planted / "in").mkdir()
    (planted / "in" / "r.yaml").write_text("model: {name: x}\n")
    result = runner.invoke(app, ["validate", str(planted / "in" / "r.yaml")])
    assert result.exit_code == 1 and "401 Unauthorized" in result.output
    (log,) = (planted / "logs").iterdir()
    assert "about to call the hub" in log.read_text() and REDACTED in log.read_text()
    assert leaks(planted, result.output) == []


def test_file_log_redacts_messages_and_tracebacks(planted):
    path = planted / "logs" / "command.log"
    handler = add_file_log(path)
    logger = logging.getLogger("finetune.test")
    try:
        logger.warning("token %s in args", TOKEN)
        try:
            raise ValueError(f"bad credentials {ENV_ONLY}")
        except ValueError:
            logger.exception("hub call failed")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "hub call failed" in text and "ValueError" in text and "bad credentials" in text
    assert leaks(planted) == []
