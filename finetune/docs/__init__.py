"""The documentation generated from the registries: the option table (options.py, from the
recipe schema), the method support and learning-rate tables (methods.py), the architecture
table (architectures.py), each written between marker comments (blocks.py) in README.md and
docs/. Tests compare every committed block with a fresh rendering, so the docs cannot drift.

`python -m finetune.docs` rewrites every generated block at once.
"""
