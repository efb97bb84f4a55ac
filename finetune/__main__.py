"""Allows `python -m finetune` and `accelerate launch -m finetune run ...`."""

from finetune.cli import app

if __name__ == "__main__":
    app()
