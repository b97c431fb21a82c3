"""The CLI reference in README.md, generated from every command's --help."""

from __future__ import annotations

import re

START, END = "<!-- cli-reference -->", "<!-- /cli-reference -->"
ENV = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}


def render() -> str:
    """Markdown: `imds-replay --help`, then each command's help, as text blocks."""
    import typer.main
    from typer.testing import CliRunner

    from replay.cli import app

    runner = CliRunner()
    names = list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    parts = []
    for args in ([], *([name] for name in names)):
        result = runner.invoke(app, [*args, "--help"], env=ENV, prog_name="imds-replay")
        text = re.sub(r"[ \t]+$", "", result.output, flags=re.MULTILINE).strip("\n")
        title = " ".join(["imds-replay", *args])
        parts.append(f"### `{title}`\n\n```text\n{text}\n```")
    return "\n\n".join(parts)


def splice(readme: str, reference: str) -> str:
    """README text with the part between the markers replaced by the reference."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n\n{reference}\n\n{END}{tail}"
