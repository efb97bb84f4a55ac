"""Examples -> Features: tokenised in chunks, through an on-disk cache.

Chunks keep the per-row Python objects of tokenisation bounded (one chunk at a time), so a
million-row split ends as a few flat arrays. The cache (`data.cache`, on by default) keys each
split by everything its token ids depend on: the examples' content (so any change to a file, a
sample size or a held-out fraction is a miss), the tokenizer's full definition, the task
section, the family, the labels and the length limits. `run --resume`, `eval`, `compare` and
`sweep` (ten methods, one data set) then tokenise each split once and memory-map it after.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from finetune import __version__
from finetune.cache import cache_home
from finetune.data.features import FORMAT, Features
from finetune.tasks.base import truncation_tally, warn_truncated

if TYPE_CHECKING:  # pragma: no cover
    from finetune.tasks.base import Example, Task
    from finetune.types import Feature, Tokenizer


class Digest(Protocol):
    """A hashlib hash object: what `examples_digest` feeds."""

    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


log = logging.getLogger(__name__)

CHUNK_ROWS = 8192
_TRUNCATED = "truncated.json"  # the split's truncation counts, warned again on each use


def cache_root() -> Path:
    return cache_home() / "features"


def encode_features(
    task: Task, examples: list[Example], training: bool, cache: bool = True
) -> Features:
    """The split's features: from the cache when this exact split was tokenised before."""
    key = cache_key(task, training, examples_digest([examples])) if cache and examples else None
    chunks = (examples[i : i + CHUNK_ROWS] for i in range(0, len(examples), CHUNK_ROWS))
    return _cached(key, lambda: _encoded(task, chunks, training))


def encode_chunks(
    task: Task,
    chunks: Callable[[], Iterable[list[Example]]],
    content: str,
    training: bool,
    cache: bool = True,
) -> Features:
    """The same for a split streamed from its file (`data/stream.py`): `content` is its
    `examples_digest`, and `chunks` (which reads the file again) runs only on a cache miss."""
    key = cache_key(task, training, content) if cache else None
    return _cached(key, lambda: _encoded(task, chunks(), training))


def _cached(key: str | None, make: Callable[[], Iterable[list[Feature]]]) -> Features:
    if key is not None:
        hit = _load(key)
        if hit is not None:
            log.info("tokenised %d rows: from the feature cache (%s)", len(hit), key[:12])
            return hit
    with truncation_tally() as truncated:
        features = Features.concat(make())
    if key is not None:
        _store(key, features, truncated)
    return features


def _encoded(
    task: Task, chunks: Iterable[list[Example]], training: bool
) -> Iterator[list[Feature]]:
    start = 0
    for examples in chunks:
        rows = task.encode(examples, training)
        for row in rows:
            row["idx"] += start
        start += len(examples)
        yield rows


def examples_digest(chunks: Iterable[list[Example]], *into: Digest) -> str:
    """SHA-256 of the examples' content, in order (part of the cache key), as hex. A streamed
    read passes its own hashers in `into` (the whole split's and this chunk's): each example is
    encoded once and fed to all of them; the first one's digest is returned."""
    digests: tuple[Digest, ...] = into or (hashlib.sha256(),)
    for examples in chunks:
        for ex in examples:
            data = repr((ex.source, ex.pair, ex.target)).encode("utf-8", "surrogatepass") + b"\x00"
            for digest in digests:
                digest.update(data)
    return str(digests[0].hexdigest())


def cache_key(task: Task, training: bool, content: str) -> str:
    settings = {
        "format": FORMAT,
        "finetune": __version__,
        "code": encoding_code_hash(),
        "libraries": _library_versions(),
        "task": task.name,
        # task.metric picks what is reported, not what is encoded
        "task_section": task.cfg.model_dump(mode="json", exclude={"metric"}),
        "family": task.family.model_type,
        "labels": task.state.labels,
        "prompt": prompt_mode(task),  # chat / plain: what `auto` resolved to for this run
        "max_length": task.settings.max_length,
        "max_target_length": task.settings.max_target_length,
        "training": training,
        "tokenizer": tokenizer_fingerprint(task.tokenizer),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(content.encode())
    return digest.hexdigest()


def prompt_mode(task: Task) -> str | None:
    from finetune.tasks.generation import GenerationTask

    return task.prompt_mode() if isinstance(task, GenerationTask) else None


@functools.cache
def encoding_code_hash() -> str:
    """The source of everything that turns examples into ids (the tasks, the feature store and
    this module): editing how a task encodes must not meet features made the old way."""
    import finetune.data.features
    import finetune.tasks

    package = Path(finetune.tasks.__file__).parent
    files = sorted(package.glob("*.py")) + [Path(finetune.data.features.__file__), Path(__file__)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


# tokenizer settings outside the backend JSON that change ids; paths, names and the state a
# saved tokenizer keeps from its last call (every call here passes its own limits) do not
_TOKENIZER_ATTRIBUTES = ("truncation_side", "padding_side", "model_input_names")
_NOT_SETTINGS = (
    "name_or_path",
    "vocab_file",
    "merges_file",
    "tokenizer_file",
    "cache_dir",
    "is_local",
    "local_files_only",
    "max_length",
    "stride",
    "truncation_strategy",
    "pad_to_multiple_of",
)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A hash of what decides the ids: the fast tokenizer's full JSON (vocabulary, merges,
    normaliser, post-processor) or a slow one's vocabulary, its construction settings
    (`init_kwargs`: lower-casing, BOS/EOS flags, ...), truncation side and input names, and
    its special and added tokens."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    settings = {k: v for k, v in (tokenizer.init_kwargs or {}).items() if k not in _NOT_SETTINGS}
    settings.update({k: getattr(tokenizer, k, None) for k in _TOKENIZER_ATTRIBUTES})
    settings["chat_template"] = getattr(tokenizer, "chat_template", None)
    settings["added"] = sorted((str(k), int(v)) for k, v in tokenizer.get_added_vocab().items())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # less the truncation/padding state, which each call to the tokenizer sets anew
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        digest.update(json.dumps(definition, sort_keys=True).encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    specials = getattr(tokenizer, "special_tokens_map", {})
    digest.update(json.dumps(specials, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _load(key: str) -> Features | None:
    directory = cache_root() / key
    if not directory.is_dir():
        return None
    try:
        features = Features.load(directory)
        for limit, what, count, total in json.loads((directory / _TRUNCATED).read_text()):
            warn_truncated(count, total, limit, what)  # as the first tokenisation warned
        return features
    except (OSError, ValueError, KeyError) as exc:  # a damaged entry is re-made, never trusted
        log.warning("feature cache entry %s unreadable (%s): tokenising again", directory, exc)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def _store(key: str, features: Features, truncated: list[tuple[int, str, int, int]]) -> None:
    """Written beside its final name and renamed: readers never see half an entry, and two
    processes writing the same split keep whichever finished first."""
    root = cache_root()
    staging: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        # a fresh name even for processes of two machines that share the cache and a PID
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}."))
        features.save(staging)
        (staging / _TRUNCATED).write_text(json.dumps(truncated), encoding="utf-8")
        os.rename(staging, root / key)
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not (root / key).is_dir():
            log.warning("could not write the feature cache under %s (%s)", root, exc)
