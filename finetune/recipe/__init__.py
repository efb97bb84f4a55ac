"""Recipes: the pydantic schema (every option, once), YAML + dotted overrides, option docs."""
