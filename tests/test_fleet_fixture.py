"""The `imds_replay` fixture with a fleet: poll and approve as a named VM, README's example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from replay.core.fleet import plan_fleet, read_fleet
from replay.errors import ReplayError
from replay.store.dataset import load_trace
from replay.store.layout import default_traces_dir
from replay.testing.client import ControlError
from tests.conftest import ROOT

pytest_plugins = ["pytester"]

TWO_DOMAINS = {
    "group": [{"name": "web", "trace": "user-reboot", "gap_s": 60}],
    "vm": [
        {"name": f"web-{i}", "address": f"10.0.0.{4 + i}", "group": "web", "fault_domain": i % 2}
        for i in range(4)
    ],
}


def readme_fleet_examples() -> dict[str, str]:
    """The README's code blocks marked `<!-- fleet-example: FILE -->`, by file name."""
    text = (ROOT / "README.md").read_text()
    pattern = re.compile(r"<!-- fleet-example: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)
    return dict(pattern.findall(text))


def test_readme_leader_election_example_passes_as_written(pytester: pytest.Pytester) -> None:
    examples = readme_fleet_examples()
    assert {"leader.py", "test_leader.py"} <= set(examples)
    for name, code in examples.items():
        pytester.path.joinpath(name).write_text(code)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_readme_fleet_file_is_a_valid_fleet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(readme_fleet_examples()["fleet.toml"])
    plan = plan_fleet(read_fleet(path), lambda name: load_trace(default_traces_dir(), name))
    (web,) = plan.groups
    assert [w.resources for w in web.waves] == [("web-0", "web-1"), ("web-2", "web-3")]


def test_a_test_polls_and_approves_as_named_vms(imds_replay: Any) -> None:
    status = imds_replay.start_fleet(TWO_DOMAINS, virtual=True)
    assert [vm["name"] for vm in status["vms"]] == ["web-0", "web-1", "web-2", "web-3"]
    web1, web2 = imds_replay.vm("web-1"), imds_replay.vm("web-2")
    assert web1.url == f"{imds_replay.url}/vm/web-1"
    imds_replay.fleet.step()  # fault domain 0's reboot is Scheduled
    (event,) = web2.poll()["Events"]
    assert (event["EventStatus"], event["Resources"]) == ("Scheduled", ["web-0", "web-2"])
    assert web1.approve("not-an-event") == 400
    assert web1.approve(event["EventId"]) == 200  # any VM of the group may approve
    assert web2.poll()["Events"][0]["EventStatus"] == "Started"
    assert [a["vm"] for a in imds_replay.fleet.approvals] == ["web-1"]
    assert [len(d["Events"]) for d in web2.documents] == [1, 1]
    assert web1.status()["events"][0]["affects"] is False


def test_a_fleet_file_path_starts_a_fleet_and_errors_say_what_is_wrong(
    imds_replay: Any, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(readme_fleet_examples()["fleet.toml"])
    status = imds_replay.start_fleet(path, speed=600)
    assert (status["state"], status["speed"]) == ("running", 600)
    with pytest.raises(ControlError) as caught:
        imds_replay.start_fleet({**TWO_DOMAINS, "group": [{"name": "web", "trace": "nope"}]})
    assert caught.value.status == 400
    assert "fleet: [[group]] 1 ('web'), field 'trace': trace 'nope' not found" in str(caught.value)
    with pytest.raises(ReplayError, match="IMDS answered 404"):
        imds_replay.vm("web-9").poll()


def test_a_test_gives_the_fleet_or_one_vm_a_fault_playbook(imds_replay: Any) -> None:
    unavailable = [{"from_s": 0, "to_s": 1e6, "status": 503}]
    imds_replay.start_fleet(TWO_DOMAINS, virtual=True, faults=unavailable, fault_seed=2)
    web0, web1 = imds_replay.vm("web-0"), imds_replay.vm("web-1")
    with pytest.raises(ReplayError, match="IMDS answered 503"):
        web0.poll()
    imds_replay.fleet.clear_faults(vm="web-0")
    assert web0.poll()["Events"] == []
    with pytest.raises(ReplayError, match="IMDS answered 503"):
        web1.poll()
    assert web1.status()["faults"] == {"windows": 1, "injected": {"status 503": 1}}
    imds_replay.fleet.clear_faults()
    drop = [{"from_s": 0, "to_s": 1e6, "drop": True}]
    assert imds_replay.fleet.set_faults(drop, vm="web-1")["faults"]["windows"] == 1
    with pytest.raises(ReplayError, match="cannot reach"):
        web1.poll()
    assert web0.poll()["Events"] == []
