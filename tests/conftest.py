"""Shared fixtures: tiny models per family, toy data files, a CLI runner, offline Hub."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision auto would pick bf16 on a CI host with AVX512-BF16/AMX: tests that compare numbers
# across processes and resumes must not depend on the host
os.environ.setdefault("FINETUNE_CPU_BF16", "0")

from tests.tiny_archs import ARCH_BUILDERS
from tests.tiny_models import BUILDERS, sentiment_rows

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
FAMILY_NAMES = ("bert", "gpt2", "t5")


@pytest.fixture(autouse=True)
def feature_cache(tmp_path_factory, monkeypatch):
    """Each test its own feature cache: nothing written under ~/.cache, no test depending on
    what an earlier one tokenised."""
    root = tmp_path_factory.mktemp("feature-cache")
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(root))
    return root / "features"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """family or model_type -> directory of a tiny random model + tokenizer (built once per
    session; every model_type of the architecture table has one, tests/tiny_archs.py)."""
    root = tmp_path_factory.mktemp("tiny-models")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            builder = BUILDERS.get(family) or ARCH_BUILDERS[family]
            cache[family] = builder(root / family)
        return cache[family]

    return get


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def sentiment_files(tmp_path):
    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(96, seed=1))
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(40, seed=2))
    return train, dev


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()


def count_calls(monkeypatch, owner: object, name: str) -> list[int]:
    """Wrap `owner.<name>` so that each call appends to the returned list and then runs the
    real function."""
    calls: list[int] = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def write_recipe(path: Path, data: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def deterministic_lora_recipe(
    tiny_model_dir: Callable[[str], Path], train: Path, dev: Path, out: Path, **train_opts
) -> dict:
    """One epoch of LoRA on the tiny BERT with no dropout anywhere: two ways of training it
    (eager/compiled, one process or two) must log the same losses to float tolerance."""
    model_dir = tiny_model_dir("bert-nodropout")
    method = {"name": "lora", "dropout": 0.0}
    return classification_recipe(model_dir, train, dev, out, method, epochs=1, **train_opts)


def classification_recipe(
    model_dir: Path, train: Path, dev: Path, out: Path, method: dict, **train_opts
) -> dict:
    return {
        "model": {"name": str(model_dir)},
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": {"train": str(train), "eval": str(dev)},
        "method": method,
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "lr": 5e-3,
            "max_length": 32,
            "seed": 0,
            "logging_steps": 2,
            **train_opts,
        },
        "eval": {"batch_size": 16},
        "output": {"dir": str(out)},
    }
