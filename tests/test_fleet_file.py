"""The fleet file: TOML groups and VMs, and errors that name the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.core.fleet import (
    FleetFileError,
    GroupSpec,
    VmSpec,
    identity_of,
    parse_fleet,
    plan_fleet,
    read_fleet,
)
from replay.core.timeline import Trace
from replay.errors import TraceNotFoundError
from tests.helpers import simple_trace

GOOD = """
[[group]]
name = "web"
trace = "live-migration"
rollout = "fault-domain"
gap_s = 120

[[group]]
name = "db"
trace = "t1"
rollout = "together"

[[vm]]
name = "web-0"
address = "10.0.0.4"
group = "web"
fault_domain = 0

[[vm]]
name = "web-1"
address = "10.0.0.5"
group = "web"
fault_domain = 1

[[vm]]
name = "db-0"
address = "::1"
group = "db"
"""

VM = '[[vm]]\nname = "{name}"\naddress = "{address}"\ngroup = "{group}"\n'
GROUP = '[[group]]\nname = "web"\ntrace = "t1"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def resolve(name: str) -> Trace:
    if name in ("t1", "live-migration"):
        return simple_trace(name)
    raise TraceNotFoundError(name, ["t1", "live-migration"])


def test_a_fleet_file_reads_into_groups_and_vms_with_defaults(tmp_path: Path) -> None:
    spec = read_fleet(write(tmp_path, GOOD))
    assert spec.groups == (
        GroupSpec("web", "live-migration", "fault-domain", 120.0),
        GroupSpec("db", "t1", "together", 0.0),
    )
    assert spec.vms[2] == VmSpec("db-0", "::1", "db", 0)
    assert [vm.name for vm in spec.members("web")] == ["web-0", "web-1"]


def test_a_vm_identity_is_stable_and_its_own() -> None:
    web0 = identity_of(VmSpec("web-0", "10.0.0.4", "web", 1))
    assert web0 == identity_of(VmSpec("web-0", "10.0.0.4", "web", 1))
    assert web0.vm_id != identity_of(VmSpec("web-1", "10.0.0.5", "web", 1)).vm_id
    assert web0.compute_fields() == {
        "name": "web-0",
        "platformFaultDomain": "1",
        "vmId": web0.vm_id.lower(),
        "vmScaleSetName": "web",
    }


def test_addresses_are_normalised_as_the_server_sees_them() -> None:
    data = {
        "group": [{"name": "g", "trace": "t1"}],
        "vm": [{"name": "a", "address": "0:0:0:0:0:0:0:1", "group": "g"}],
    }
    assert parse_fleet(data).vms[0].address == "::1"


BAD = [
    # (file text, what the message must say after "<file>: ")
    (
        GROUP + VM.format(name="a", address="127.0.0.2", group="db"),
        "[[vm]] 1 ('a'), field 'group': unknown group 'db' (groups: web)",
    ),
    (
        GROUP
        + VM.format(name="a", address="127.0.0.2", group="web")
        + VM.format(name="a", address="127.0.0.3", group="web"),
        "[[vm]] 2 ('a'), field 'name': duplicate; [[vm]] 1 is also 'a'",
    ),
    (
        GROUP
        + VM.format(name="a", address="127.0.0.2", group="web")
        + VM.format(name="b", address="127.0.0.02", group="web"),
        "[[vm]] 2 ('b'), field 'address'",
    ),
    (
        GROUP
        + VM.format(name="a", address="127.0.0.2", group="web")
        + VM.format(name="b", address="127.0.0.2", group="web"),
        "[[vm]] 2 ('b'), field 'address': duplicate; [[vm]] 1 also has 127.0.0.2",
    ),
    (
        GROUP + VM.format(name="a", address="web-0.internal", group="web"),
        "[[vm]] 1 ('a'), field 'address': 'web-0.internal' is not an IP address",
    ),
    (
        GROUP
        + '[[group]]\nname = "db"\ntrace = "t1"\n'
        + VM.format(name="a", address="::1", group="web"),
        "[[group]] 2 ('db'), field 'name': no [[vm]] is in this group",
    ),
    (
        GROUP + GROUP + VM.format(name="a", address="::1", group="web"),
        "[[group]] 2 ('web'), field 'name': group 'web' is already defined",
    ),
    (
        GROUP.replace('trace = "t1"', 'trace = "t1"\nrollout = "random"')
        + VM.format(name="a", address="::1", group="web"),
        "[[group]] 1 ('web'), field 'rollout': 'random' is not one of fault-domain, together",
    ),
    (
        GROUP.replace('trace = "t1"', 'trace = "t1"\ngap_s = -1')
        + VM.format(name="a", address="::1", group="web"),
        "[[group]] 1 ('web'), field 'gap_s': must be 0 to",
    ),
    (
        GROUP.replace('trace = "t1"', 'trace = "t1"\ngap_s = "2m"')
        + VM.format(name="a", address="::1", group="web"),
        "[[group]] 1 ('web'), field 'gap_s': must be a number, got '2m'",
    ),
    (
        GROUP + VM.format(name="a", address="::1", group="web") + "fault_domain = true\n",
        "[[vm]] 1 ('a'), field 'fault_domain': must be an integer, got True",
    ),
    (
        GROUP + VM.format(name="a", address="::1", group="web") + "zone = 1\n",
        "[[vm]] 1 ('a'), field 'zone': unknown",
    ),
    (
        GROUP + '[[vm]]\nname = "a"\ngroup = "web"\n',
        "[[vm]] 1 ('a'), field 'address': missing",
    ),
    (
        GROUP + VM.format(name="a b", address="::1", group="web"),
        "[[vm]] 1 ('a b'), field 'name': 'a b' must be 1-64 letters",
    ),
    (
        GROUP + VM.format(name="a", address="::1", group="web") + "faults = 3\n",
        "[[vm]] 1 ('a'), field 'faults': must be a playbook file or a list of windows",
    ),
    (
        GROUP.replace(
            'trace = "t1"', 'trace = "t1"\nfaults = [{from_s = 5, to_s = 1, drop = true}]'
        )
        + VM.format(name="a", address="::1", group="web"),
        "[[group]] 1 ('web'), field 'faults': window 0: needs 0 <= from_s < to_s",
    ),
    (
        GROUP
        + VM.format(name="a", address="::1", group="web")
        + "faults = [{from_s = 0, to_s = 1, status = 404}]\n",
        "[[vm]] 1 ('a'), field 'faults': window 0: 'status' must be one of 410, 429, 500, 503",
    ),
    (
        GROUP + VM.format(name="a", address="::1", group="web") + 'faults = "nope.json"\n',
        "[[vm]] 1 ('a'), field 'faults': ",
    ),
    (VM.format(name="a", address="::1", group="web"), "no [[group]] entries"),
    ('[fleet]\nname = "x"\n', "unknown table 'fleet'"),
    ('group = "web"\n', "'group' must be an array of tables ([[group]])"),
    ("[[group]\n", "not TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_fleet_file_names_the_file_the_entry_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FleetFileError) as caught:
        read_fleet(path)
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)


def test_a_trace_that_does_not_exist_names_the_group_and_suggests_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GROUP.replace('"t1"', '"live-migraton"') + VM.format(name="a", address="::1", group="web"),
    )
    with pytest.raises(FleetFileError) as caught:
        plan_fleet(read_fleet(path), resolve)
    message = str(caught.value)
    assert message.startswith(f"{path}: [[group]] 1 ('web'), field 'trace': trace 'live-migraton'")
    assert "did you mean 'live-migration'?" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FleetFileError, match=r"nope\.toml: cannot read the fleet file"):
        read_fleet(tmp_path / "nope.toml")


def test_a_plan_gives_each_group_its_rollout_and_each_vm_its_identity(tmp_path: Path) -> None:
    plan = plan_fleet(read_fleet(write(tmp_path, GOOD)), resolve)
    assert [(r.group, r.rollout, len(r.waves)) for r in plan.groups] == [
        ("web", "fault-domain", 2),
        ("db", "together", 1),
    ]
    assert [(i.name, i.group, i.fault_domain) for i in plan.identities] == [
        ("web-0", "web", 0),
        ("web-1", "web", 1),
        ("db-0", "db", 0),
    ]


RETRY = '[{"from_s": 60, "to_s": 120, "status": 500}]'


def test_a_vm_plays_its_own_playbook_else_its_groups(tmp_path: Path) -> None:
    """A group's playbook file is read relative to the fleet file; a VM's own (inline) wins,
    an empty one turns faults off; a VM with neither is not in the plan's playbooks."""
    (tmp_path / "plays").mkdir()
    (tmp_path / "plays" / "retry.json").write_text(RETRY)
    text = GOOD.replace("gap_s = 120", 'gap_s = 120\nfaults = "plays/retry.json"')
    text = text.replace(
        "fault_domain = 1", "fault_domain = 1\nfaults = [{from_s = 0, to_s = 5, drop = true}]"
    )
    text += VM.format(name="web-2", address="10.0.0.6", group="web") + "faults = []\n"
    plan = plan_fleet(read_fleet(write(tmp_path, text)), resolve)
    assert {name: [(w.from_s, w.effect) for w in p] for name, p in plan.faults.items()} == {
        "web-0": [(60, "status")],
        "web-1": [(0, "drop")],
        "web-2": [],
    }


def test_a_missing_playbook_file_names_the_fleet_file_the_entry_and_the_playbook(
    tmp_path: Path,
) -> None:
    text = GROUP + VM.format(name="a", address="::1", group="web") + 'faults = "nope.json"\n'
    path = write(tmp_path, text)
    with pytest.raises(FleetFileError) as caught:
        read_fleet(path)
    assert str(caught.value) == (
        f"{path}: [[vm]] 1 ('a'), field 'faults': {tmp_path / 'nope.json'}: cannot read the "
        "playbook: No such file or directory"
    )


def test_a_fleet_given_as_data_takes_inline_windows_but_reads_no_file() -> None:
    tables = {
        "group": [
            {"name": "web", "trace": "t1", "faults": [{"from_s": 0, "to_s": 1, "drop": True}]}
        ],
        "vm": [{"name": "a", "address": "::1", "group": "web"}],
    }
    assert parse_fleet(tables).groups[0].faults is not None
    tables["vm"][0]["faults"] = "/etc/passwd"
    with pytest.raises(FleetFileError) as caught:
        parse_fleet(tables, "fleet")
    assert str(caught.value) == (
        "fleet: [[vm]] 1 ('a'), field 'faults': a playbook file is read only from a fleet "
        "file; give the windows"
    )
