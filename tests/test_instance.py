"""Instance metadata as IMDS answers it: sub-paths, format=text, versions, the same rules."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from replay.clock import FakeClock
from replay.core import imds
from replay.core.instance import InstanceIdentity, answer, identity_for, vm_name
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from tests.helpers import event, trace_of

V = "2021-12-13"
H = {"Metadata": "true"}


def play(registry: SessionRegistry, trace: str, name: str = DEFAULT, **options: Any) -> None:
    registry.create(name, registry.trace(trace), SessionOptions(start=Start.now, **options))


async def fetch(client: Any, path: str, query: str = "", **headers: str) -> tuple[int, str, bytes]:
    resp = await client.get(f"{path}?api-version={V}{query}", headers={**H, **headers})
    return resp.status, resp.headers["Content-Type"], await resp.read()


async def document(client: Any, path: str = "/metadata/instance") -> Any:
    status, content_type, body = await fetch(client, path)
    assert status == 200, body
    assert content_type == "application/json; charset=utf-8"
    return orjson.loads(body)


async def text(client: Any, path: str) -> str:
    status, content_type, body = await fetch(client, path, "&format=text")
    assert status == 200, body
    assert content_type == "text/plain; charset=utf-8"
    return body.decode()


# -- coherent with the replay ------------------------------------------------------------------


async def test_compute_name_is_the_vm_the_events_list(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "terminate", speed=60)
    clock.advance(1)
    resp = await client.get("/metadata/scheduledevents?api-version=2020-07-01", headers=H)
    assert orjson.loads(await resp.read())["Events"][0]["Resources"] == ["vm-0"]
    assert (await document(client))["compute"]["name"] == "vm-0"
    assert await text(client, "/metadata/instance/compute/name") == "vm-0"


async def test_resources_option_names_the_vm(client: Any, registry: SessionRegistry) -> None:
    play(registry, "live-migration", resources=("web-7", "web-8"))
    assert await text(client, "/metadata/instance/compute/name") == "web-7"
    assert await text(client, "/metadata/instance/compute/osProfile/computerName") == "web-7"


async def test_vm_id_is_stable_for_a_session_and_differs_between_sessions(
    client: Any, registry: SessionRegistry
) -> None:
    play(registry, "live-migration")
    play(registry, "live-migration", name="other")
    first = await text(client, "/metadata/instance/compute/vmId")
    assert uuid.UUID(first)
    assert await text(client, "/metadata/instance/compute/vmId") == first
    play(registry, "live-migration")  # the same session again: the same VM
    assert await text(client, "/metadata/instance/compute/vmId") == first
    assert await text(client, "/s/other/metadata/instance/compute/vmId") != first


async def test_a_scale_set_instance_has_its_set_and_a_fault_domain(
    client: Any, registry: SessionRegistry
) -> None:
    play(registry, "live-migration", resources=("WestNO_1", "WestNO_0"))
    compute = (await document(client))["compute"]
    assert compute["name"] == "WestNO_1"
    assert compute["vmScaleSetName"] == "WestNO"
    assert compute["platformFaultDomain"] == "1"
    assert compute["resourceId"].endswith("/virtualMachineScaleSets/WestNO/virtualMachines/1")


async def test_a_standalone_vm_has_no_scale_set(client: Any, registry: SessionRegistry) -> None:
    play(registry, "live-migration")
    compute = (await document(client))["compute"]
    assert compute["vmScaleSetName"] == ""
    assert compute["resourceId"].endswith("/providers/Microsoft.Compute/virtualMachines/vm-0")


async def test_an_identity_given_in_the_options_is_answered(
    client: Any, registry: SessionRegistry
) -> None:
    """What a fleet does: each VM's session carries its own identity."""
    own = InstanceIdentity("node-3", "6b1c2f7e-0000-4000-8000-000000000003", fault_domain=2)
    play(registry, "live-migration", identity=own)
    compute = (await document(client))["compute"]
    assert (compute["name"], compute["vmId"], compute["platformFaultDomain"]) == (
        "node-3",
        own.vm_id,
        "2",
    )


async def test_the_idle_session_is_vm_0(client: Any) -> None:
    assert await text(client, "/metadata/instance/compute/name") == "vm-0"


# -- selection and formats ---------------------------------------------------------------------


async def test_a_sub_path_selects_part_of_the_document(client: Any) -> None:
    whole = await document(client)
    assert await document(client, "/metadata/instance/compute") == whole["compute"]
    assert (
        await document(client, "/metadata/instance/network/interface/0")
        == (whole["network"]["interface"][0])
    )
    assert await document(client, "/metadata/instance/compute/name") == "vm-0"  # JSON string


async def test_array_elements_are_chosen_by_index(client: Any) -> None:
    path = "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress"
    address = await text(client, path)
    assert address.startswith("10.0.") and address.count(".") == 3


async def test_text_lists_the_keys_of_a_folder_with_folders_ending_in_slash(client: Any) -> None:
    assert await text(client, "/metadata/instance") == "compute/\nnetwork/"
    assert await text(client, "/metadata/instance/network/interface") == "0/"
    keys = (await text(client, "/metadata/instance/compute")).split("\n")
    assert "name" in keys and "osProfile/" in keys and "tagsList/" in keys


async def test_a_trailing_slash_selects_the_same_part(client: Any) -> None:
    assert await text(client, "/metadata/instance/compute/name/") == "vm-0"


@pytest.mark.parametrize(
    "path",
    [
        "/metadata/instance/compute/nope",
        "/metadata/instance/network/interface/1",
        "/metadata/instance/network/interface/x",
        "/metadata/instance/compute/name/deeper",
        "/metadata/instancex",
        "/s/nobody/metadata/instance",
    ],
)
async def test_an_unknown_part_is_imds_404(client: Any, path: str) -> None:
    status, _, body = await fetch(client, path)
    assert status == 404
    assert orjson.loads(body) == {"error": imds.ERR_NOT_FOUND}


async def test_an_unknown_format_is_a_400(client: Any) -> None:
    status, _, body = await fetch(client, "/metadata/instance", "&format=xml")
    assert status == 400
    assert orjson.loads(body) == {"error": imds.ERR_FORMAT}


# -- the same rules as Scheduled Events ------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "error", "lists_versions"),
    [
        (f"?api-version={V}", {}, imds.ERR_METADATA, False),
        (f"?api-version={V}", {**H, "X-Forwarded-For": "10.1.1.1"}, imds.ERR_FORWARDED, False),
        ("", H, imds.ERR_NO_VERSION, True),
        ("?api-version=2099-01-01", H, imds.ERR_BAD_VERSION, True),
    ],
)
async def test_header_and_version_rules_apply(
    client: Any, query: str, headers: dict[str, str], error: str, lists_versions: bool
) -> None:
    resp = await client.get("/metadata/instance/compute/name" + query, headers=headers)
    assert resp.status == 400
    body = orjson.loads(await resp.read())
    assert body["error"] == error
    assert ("newest-versions" in body) is lists_versions


@pytest.mark.parametrize("version", ["2017-04-02", "2021-02-01", "2021-12-13"])
async def test_instance_api_versions_are_accepted(client: Any, version: str) -> None:
    resp = await client.get(f"/metadata/instance?api-version={version}", headers=H)
    assert resp.status == 200


async def test_other_methods_are_405(client: Any) -> None:
    resp = await client.post(f"/metadata/instance?api-version={V}", headers=H)
    assert resp.status == 405


async def test_versions_lists_the_instance_api_versions(client: Any) -> None:
    resp = await client.get("/metadata/versions", headers=H)
    assert resp.status == 200
    listed = orjson.loads(await resp.read())["apiVersions"]
    assert "2021-12-13" in listed and "2017-04-02" in listed
    assert listed == sorted(listed)
    assert (await client.get("/s/default/metadata/versions", headers=H)).status == 200
    assert (await client.get("/metadata/versions")).status == 400


# -- the core, without a server ----------------------------------------------------------------


def test_vm_name_prefers_the_options_then_the_trace_then_vm_0() -> None:
    trace = trace_of([(0.0, []), (10.0, [event(resources=("a", "b"))]), (20.0, [])])
    assert vm_name(("x",), trace) == "x"
    assert vm_name(None, trace) == "a"
    assert vm_name(None, trace_of([(0.0, []), (5.0, [event(resources=())]), (9.0, [])])) == "vm-0"


@pytest.mark.parametrize(("index", "domain"), [(0, 0), (4, 4), (5, 0), (12, 2)])
def test_scale_set_instances_spread_over_five_fault_domains(index: int, domain: int) -> None:
    identity = identity_for(f"pool_{index}", seed="s")
    assert (identity.scale_set, identity.fault_domain, identity.update_domain) == (
        "pool",
        domain,
        domain,
    )


def test_identities_differ_by_name_and_seed_and_repeat_otherwise() -> None:
    a = identity_for("vm-0", seed="t/default")
    assert a == identity_for("vm-0", seed="t/default")
    assert a.vm_id != identity_for("vm-1", seed="t/default").vm_id
    assert a.vm_id != identity_for("vm-0", seed="t/other").vm_id


def test_answer_returns_none_for_a_missing_part() -> None:
    identity = identity_for("vm-0", seed="s")
    assert answer(identity, "compute/none", "json") is None
    assert answer(identity, "compute/publicKeys", "text") == (b"", "text/plain; charset=utf-8")
