"""A pytest plugin that scripts/mutation loads (pyproject.toml, [tool.mutmut]): memo caches start
empty for every test.

mutmut runs each mutant's tests in a process forked from one that already ran the suite, so a
memoised result computed by unmutated code would hide a mutant of the function behind the memo
(reference_table -> _row, round_event_id -> event_id_for).
"""

from __future__ import annotations

from typing import Any

import pytest

from replay.core import reference
from replay.playback import rounds


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: Any) -> None:
    reference.reference_table.cache_clear()
    rounds.round_event_id.cache_clear()
