"""README stays true: its CLI reference is the commands' own help, its commands exist."""

from __future__ import annotations

import re

from replay.cli.reference import END, START, render, splice
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_cli_reference_is_the_commands_own_help() -> None:
    assert splice(README, render()) == README, "run scripts/cli-reference --write"


def test_quick_start_is_two_commands_run_and_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c.split()[0] for c in commands if c] == ["./scripts/run", "./scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def test_every_trace_column_is_documented() -> None:
    from replay.store.schema import SCHEMA

    section = README.split("## The trace format", 1)[1]
    for name in SCHEMA.names:
        assert f"| `{name}` |" in section, name


def test_markers_are_in_place() -> None:
    assert README.count(START) == 1 and README.count(END) == 1
