"""One module per CLI command family: run, validate, eval/predict, compare, merge/push."""
