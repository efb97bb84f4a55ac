"""`finetune push` (merged and --adapter) and Hub models/datasets, against a local Hub server.

The server (tests/hub_server.py) answers the real requests huggingface_hub sends: create_repo,
validate-yaml, preupload, LFS batch + upload, ndjson commit, repo info, tree and resolve. The
CLI runs in a subprocess with `HF_ENDPOINT` pointed at it and `HF_TOKEN` set, as a user's shell
would; the test then downloads what arrived and loads it (transformers, peft, finetune predict).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli import app
from tests.conftest import REPO, classification_recipe, write_csv, write_recipe
from tests.hub_server import FakeHub, hub_env
from tests.tiny_models import sentiment_rows

TOKEN = "hf_" + "P" * 34  # shaped like a real token, so redaction would also catch it


@pytest.fixture()
def hub():
    server = FakeHub(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture()
def online(monkeypatch):
    """This process's huggingface_hub may talk to the test server (conftest sets offline)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def cli(hub: FakeHub, home: Path, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, **hub_env(hub, str(home), token), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "finetune", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home.parent,
    )


def download(hub: FakeHub, repo_id: str, cache: Path, repo_type: str = "model") -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, repo_type=repo_type, endpoint=hub.url, cache_dir=cache))


def train(root: Path, model_dir: Path, method: str) -> Path:
    from typer.testing import CliRunner

    train_file = write_csv(root / "data" / "train.csv", sentiment_rows(64, seed=1))
    dev = write_csv(root / "data" / "dev.csv", sentiment_rows(24, seed=2))
    recipe = write_recipe(
        root / f"{method}.yaml",
        classification_recipe(model_dir, train_file, dev, root / method, {"name": method}),
    )
    result = CliRunner().invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / method


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    return train(tmp_path_factory.mktemp("hub-lora"), tiny_model_dir("gpt2"), "lora")


@pytest.fixture(scope="module")
def pfeiffer_run(tmp_path_factory, tiny_model_dir):
    return train(tmp_path_factory.mktemp("hub-pfeiffer"), tiny_model_dir("bert"), "pfeiffer")


def expected_prediction(run: Path) -> dict:
    from finetune.commands.evaluate import predict_texts

    return predict_texts(run, ["an input text"])[0]


def probability(model, tokenizer, text: str = "an input text") -> tuple[str, float]:
    import torch

    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits, -1)[0]
    return model.config.id2label[int(probs.argmax())], float(probs.max())


def check_card(path: Path, library: str | None, ref: str) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)
    assert card.data.library_name == library
    assert card.data.pipeline_tag == "text-classification"
    assert {r.metric_type for r in card.data.eval_results} >= {"accuracy", "f1_macro"}
    assert ref in path.read_text()  # the loading snippet names the repository


def check_push(result: subprocess.CompletedProcess, hub: FakeHub, repo_id: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    assert f"Bearer {TOKEN}" in hub.authorizations  # HF_TOKEN reached the Hub, not the screen
    assert ("POST", f"/api/models/{repo_id}/commit/main") in hub.requests
    # weights went through the LFS protocol, the card was validated before the commit
    assert ("POST", f"/{repo_id}.git/info/lfs/objects/batch") in hub.requests
    assert ("POST", "/api/validate-yaml") in hub.requests


@pytest.mark.slow
def test_push_merged_model_then_adapter(hub, online, lora_run, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune.commands.evaluate import predict_texts

    expected = expected_prediction(lora_run)
    pushed = cli(hub, tmp_path / "home", "push", str(lora_run), "--repo-id", "me/tiny")
    check_push(pushed, hub, "me/tiny")
    assert "me/tiny/commit/" in pushed.stdout
    merged = download(hub, "me/tiny", tmp_path / "cache")
    assert not (merged / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    label, prob = probability(model, AutoTokenizer.from_pretrained(merged))
    assert label == expected["label"] and prob == pytest.approx(expected["probability"], abs=1e-5)
    check_card(merged / "README.md", "transformers", "me/tiny")

    pushed = cli(hub, tmp_path / "home", "push", str(lora_run), "--repo-id", "me/a", "--adapter")
    check_push(pushed, hub, "me/a")
    adapter = download(hub, "me/a", tmp_path / "cache")
    files = {p.relative_to(adapter).as_posix() for p in adapter.rglob("*") if p.is_file()}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= files
    assert {"README.md", "recipe.yaml", "run.json", "tokenizer/tokenizer_config.json"} <= files
    assert not any(name.endswith("model.safetensors") and "/" not in name for name in files)
    check_card(adapter / "README.md", "peft", "me/a")
    tokenizer = AutoTokenizer.from_pretrained(adapter, subfolder="tokenizer")
    labels = json.loads((lora_run / "run.json").read_text())["task_state"]["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir("gpt2"),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = PeftModel.from_pretrained(base, adapter, subfolder="adapter").eval()
    label, prob = probability(model, tokenizer)
    assert label == expected["label"] and prob == pytest.approx(expected["probability"], abs=1e-5)
    # the downloaded adapter repository is also a run directory for `finetune predict`
    assert predict_texts(adapter, ["an input text"])[0] == expected


def test_push_own_format_adapter(hub, online, pfeiffer_run, tmp_path):
    from finetune.commands.evaluate import predict_texts

    home = tmp_path / "home"
    refused = cli(hub, home, "push", str(pfeiffer_run), "--repo-id", "me/p")
    assert refused.returncode == 2 and "--adapter" in refused.stderr
    pushed = cli(
        hub, home, "push", str(pfeiffer_run), "--repo-id", "me/p", "--adapter", "--private"
    )
    check_push(pushed, hub, "me/p")
    assert hub.repo("me/p").private
    adapter = download(hub, "me/p", tmp_path / "cache")
    check_card(adapter / "README.md", None, "me/p")
    text = (adapter / "README.md").read_text()
    assert "finetune predict" in text and "own format" in text
    expected = expected_prediction(pfeiffer_run)
    assert predict_texts(adapter, ["an input text"])[0] == expected


def test_push_with_a_wrong_token_fails_without_printing_it(hub, lora_run, tmp_path):
    wrong = "hf_" + "W" * 34
    result = cli(hub, tmp_path / "home", "push", str(lora_run), "--repo-id", "me/x", token=wrong)
    assert result.returncode == 2 and "push to me/x failed" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert ("model", "me/x") not in hub.repos


@pytest.mark.slow
def test_push_full_model_as_adapter(hub, online, tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = train(tmp_path, tiny_model_dir("bert"), "full")
    pushed = cli(hub, tmp_path / "home", "push", str(run), "--repo-id", "me/f", "--adapter")
    check_push(pushed, hub, "me/f")
    repo = download(hub, "me/f", tmp_path / "cache")
    check_card(repo / "README.md", "transformers", "me/f")
    model = AutoModelForSequenceClassification.from_pretrained(repo, subfolder="model").eval()
    label, prob = probability(model, AutoTokenizer.from_pretrained(repo, subfolder="tokenizer"))
    expected = expected_prediction(run)
    assert label == expected["label"] and prob == pytest.approx(expected["probability"], abs=1e-5)


# --------------------------------------------------------------------------- Hub model and data


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


DATASET_CARD = b"""---
configs:
- config_name: toy
  data_files:
  - split: train
    path: toy/train.parquet
  - split: validation
    path: toy/validation.parquet
---
# A toy sentiment dataset
"""


def seed_model_repo(hub: FakeHub, model_dir: Path) -> str:
    """org/tiny-bert: the good model at the first commit, an unusable config on main."""
    files = {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in model_dir.iterdir()}
    first = hub.add_commit("org/tiny-bert", files, message="tiny bert")
    broken = {**json.loads(files["config.json"]), "model_type": "llama"}
    hub.add_commit("org/tiny-bert", {"config.json": json.dumps(broken).encode()}, message="break")
    return first


@pytest.mark.slow
def test_hub_model_revision_and_hub_dataset_config_end_to_end(hub, tmp_path, tiny_model_dir):
    first = seed_model_repo(hub, tiny_model_dir("bert"))
    hub.add_commit(
        "org/sentiment",
        {
            "README.md": DATASET_CARD,
            "toy/train.parquet": parquet(sentiment_rows(48, seed=1)),
            "toy/validation.parquet": parquet(sentiment_rows(16, seed=2)),
        },
        repo_type="dataset",
    )
    data = classification_recipe(
        Path("x"), Path("x"), Path("x"), tmp_path / "run", {"name": "lora"}
    )
    data["model"] = {"name": "org/tiny-bert", "revision": first}
    data["data"] = {
        "train": {"hub": "org/sentiment", "config": "toy", "split": "train"},
        "eval": {"hub": "org/sentiment", "config": "toy", "split": "validation"},
    }
    recipe = write_recipe(tmp_path / "hub.yaml", data)
    result = cli(hub, tmp_path / "home", "run", str(recipe), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    # the pinned commit was read, not main (whose config is a family finetune refuses)
    assert ("GET", f"/org/tiny-bert/resolve/{first}/config.json") in hub.requests
    assert f"revision: {first}" in (run / "recipe.yaml").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["samples"] == 16

    from huggingface_hub import ModelCard

    card = ModelCard.load(run / "README.md")
    assert card.data.base_model == "org/tiny-bert"
    assert card.data.datasets == ["org/sentiment"]
    where = card.data.eval_results[0]
    assert (where.dataset_type, where.dataset_config, where.dataset_split) == (
        "org/sentiment",
        "toy",
        "validation",
    )
    # without the pin, main's config is refused: the revision really decided what was loaded
    data["model"] = {"name": "org/tiny-bert"}
    data["output"]["dir"] = str(tmp_path / "run-main")
    unpinned = cli(hub, tmp_path / "home2", "run", str(write_recipe(tmp_path / "m.yaml", data)))
    assert unpinned.returncode == 2
    assert ("HEAD", "/org/tiny-bert/resolve/main/config.json") in hub.requests
    assert "HTTP Request" not in result.stderr + unpinned.stderr  # no line per Hub request
