"""finetune: parameter-efficient fine-tuning of Hugging Face Transformers from one YAML recipe.

Kept import-light on purpose: `finetune --help` must not pull in torch or transformers.
"""

__version__ = "0.1.0"
