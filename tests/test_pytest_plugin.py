"""The `imds_replay` fixture, used exactly as README shows it."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

pytest_plugins = ["pytester"]


def readme_examples() -> dict[str, str]:
    """The README's code blocks marked `<!-- example: FILE -->`, by file name."""
    text = (ROOT / "README.md").read_text()
    pattern = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.DOTALL)
    return dict(pattern.findall(text))


def test_readme_handler_example_passes_as_written(pytester: pytest.Pytester) -> None:
    examples = readme_examples()
    assert {"handler.py", "test_handler.py"} <= set(examples)
    for name, code in examples.items():
        pytester.path.joinpath(name).write_text(code)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_virtual_time_serves_byte_identical_documents_every_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, urllib.request

        def test_run(imds_replay, tmp_path):
            imds_replay.start("live-migration", virtual=True, resources=["vm-a"])
            bodies = []
            for _ in range(4):
                request = urllib.request.Request(
                    imds_replay.url + "/metadata/scheduledevents?api-version=2020-07-01",
                    headers={"Metadata": "true"},
                )
                bodies.append(urllib.request.urlopen(request).read().decode())
                imds_replay.advance()
            print("BODIES", json.dumps(bodies))
        """
    )
    runs = []
    for _ in range(2):
        result = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        (line,) = [x for x in result.outlines if x.startswith("BODIES")]
        runs.append(line)
    assert runs[0] == runs[1]
    assert "Scheduled" in runs[0] and "Started" in runs[0] and "vm-a" in runs[0]


def test_fixture_serves_real_timing_when_not_virtual(imds_replay) -> None:  # type: ignore[no-untyped-def]
    status = imds_replay.start("spot-eviction", speed=600)
    assert status["state"] == "running"
    assert status["speed"] == 600
    assert imds_replay.url.startswith("http://127.0.0.1:")
