"""Unexpected exceptions: one line with the cause and the path of a full log; --debug: traceback.

The CLI cases run in a real subprocess, because what matters is exactly what a user's terminal
receives on stderr (CliRunner would catch the --debug traceback itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app

CRASHING_CLI = textwrap.dedent(
    """
    import logging, sys
    import finetune.commands.validate

    def boom(*args, **kwargs):
        logging.getLogger("finetune.commands.validate").debug("checking %s", args[0])
        logging.getLogger("finetune.commands.validate").info("half way")
        raise RuntimeError("disk cache corrupted\\nsecond line of detail")

    finetune.commands.validate.check_recipe = boom
    from finetune.cli import app
    sys.argv = ["finetune", *sys.argv[1:]]
    app()
    """
)


def run_cli(tmp_path: Path, *args: str, log_dir: Path | None = None) -> subprocess.CompletedProcess:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: x}\n")
    env = {
        **os.environ,
        "FINETUNE_LOG_DIR": str(log_dir or tmp_path / "logs"),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-c", CRASHING_CLI, *args, "validate", str(recipe)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_crash_is_one_line_plus_the_log_path(tmp_path):
    proc = run_cli(tmp_path)
    assert proc.returncode == 1
    lines = [line.rstrip() for line in proc.stderr.strip().splitlines()]
    assert lines[0].split() == ["INFO", "half", "way"]  # the command's own log line
    lines = lines[1:]
    assert lines[0] == "unexpected error: RuntimeError: disk cache corrupted"
    assert "Traceback" not in proc.stderr + proc.stdout and "second line" not in proc.stderr
    (log,) = (tmp_path / "logs").iterdir()
    assert lines[1] == f"full traceback in {log}; rerun with --debug to see it here"
    assert len(lines) == 2


def test_crash_log_holds_command_log_records_and_traceback(tmp_path):
    run_cli(tmp_path)
    (log,) = (tmp_path / "logs").iterdir()
    text = log.read_text()
    assert "command: finetune validate" in text and "finetune 0." in text
    assert (
        "DEBUG finetune.commands.validate: checking" in text
        and "INFO finetune.commands.validate: half way" in text
    )
    assert "Traceback (most recent call last)" in text and "second line of detail" in text
    assert text.index("half way") < text.index("Traceback")


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli(tmp_path, "--debug")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "RuntimeError: disk cache corrupted" in proc.stderr and "in boom" in proc.stderr


def test_unwritable_log_dir_falls_back_to_tmp(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    proc = run_cli(tmp_path, log_dir=blocker / "logs")
    assert proc.returncode == 1 and "unexpected error: RuntimeError" in proc.stderr
    path = Path(proc.stderr.split("full traceback in ", 1)[1].split(";", 1)[0])
    assert path.exists() and path.parent != blocker and "Traceback" in path.read_text()
    path.unlink()


@pytest.mark.parametrize("error", [KeyError("id2label"), ZeroDivisionError(), OSError("disk")])
def test_any_exception_in_the_pipeline_is_one_line(tmp_path, runner, monkeypatch, error):
    """`run` raising deep inside: exit 1, its type and first line, a log path, no traceback."""
    import finetune.commands.run

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(finetune.commands.run, "run", fail)
    monkeypatch.setenv("FINETUNE_LOG_DIR", str(tmp_path / "logs"))
    (tmp_path / "r.yaml").write_text("model: {name: x}\n")
    result = runner.invoke(app, ["run", str(tmp_path / "r.yaml")])
    assert result.exit_code == 1
    assert f"unexpected error: {type(error).__name__}" in result.output
    assert "full traceback in" in result.output and "Traceback" not in result.output
    assert len(list((tmp_path / "logs").iterdir())) == 1


def test_user_errors_do_not_write_crash_logs(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("FINETUNE_LOG_DIR", str(tmp_path / "logs"))
    result = runner.invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "file not found" in result.output
    assert not (tmp_path / "logs").exists()


def test_error_catalogue_in_docs_is_generated_from_the_code():
    """docs/errors.md is `python -m finetune.errors`; regenerate it after changing an error."""
    from finetune.errors import catalogue_markdown, error_classes

    committed = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()
    assert committed == catalogue_markdown(), "run: python -m finetune.errors > docs/errors.md"
    codes = [cls.code for cls in error_classes()]
    assert len(codes) == len(set(codes)), "error codes must be unique"
    for cls in error_classes():
        assert cls.__doc__ and cls.hint and cls.example and cls.title, cls.__name__
