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


def test_a_shared_server_gives_each_test_a_fresh_isolated_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nimds_replay_server = shared\n")
    pytester.makepyfile(
        """
        import json, urllib.request

        BASES = set()

        def get(url):
            request = urllib.request.Request(
                url + "/metadata/scheduledevents?api-version=2020-07-01",
                headers={"Metadata": "true"},
            )
            return json.loads(urllib.request.urlopen(request).read())

        def approve(url, event_id):
            body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
            request = urllib.request.Request(
                url + "/metadata/scheduledevents?api-version=2020-07-01",
                data=body,
                headers={"Metadata": "true"},
            )
            urllib.request.urlopen(request).read()

        def test_first(imds_replay):
            BASES.add(imds_replay.server.base_url)
            imds_replay.start("user-reboot", virtual=True)
            imds_replay.advance()
            (event,) = get(imds_replay.url)["Events"]
            approve(imds_replay.url, event["EventId"])
            assert imds_replay.approvals == [event["EventId"]]

        def test_second(imds_replay):
            BASES.add(imds_replay.server.base_url)
            assert len(BASES) == 1  # the same server
            assert get(imds_replay.url) == {"DocumentIncarnation": 1, "Events": []}
            assert imds_replay.approvals == [] and imds_replay.documents == [
                {"DocumentIncarnation": 1, "Events": []}
            ]
            names = [s["name"] for s in imds_replay.server.client.sessions()]
            assert imds_replay.name in names and "test-1" not in names  # the first is gone
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_an_unknown_server_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nimds_replay_server = pooled\n")
    pytester.makepyfile("def test_x(imds_replay):\n    pass\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*imds_replay_server = 'pooled': use one of per-test, shared*"])
