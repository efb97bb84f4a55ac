"""The run directory: its files, lock and atomic writes, artifacts and model card."""
