"""Run the `llm4rec` command in-process through its real entry point."""

from __future__ import annotations

from llm4rec.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``llm4rec ARGS``."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
