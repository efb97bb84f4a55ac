"""What `compare` and `sweep` share: the runner (one recipe per process, finished runs read
back), the learning-rate search of `compare --tune`, bootstrap intervals and noise verdicts, and
the report (markdown, csv, json, plot)."""
