"""ReplayClient against a real `imds-replay serve`: every verb, its errors, and the token."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.errors import ReplayError
from replay.testing.client import ControlError, ReplayClient
from tests.serving import serving

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> object:
    import shutil

    from tests.conftest import SHIPPED

    traces = tmp_path_factory.mktemp("client") / "traces"
    shutil.copytree(SHIPPED, traces)
    with serving("--token", TOKEN, traces_dir=traces) as url:
        yield url


def test_without_the_token_every_call_is_refused_with_401(base: str) -> None:
    with pytest.raises(ControlError) as refused:
        ReplayClient(base).sessions()
    assert refused.value.status == 401
    assert "token" in refused.value.message


def test_every_verb_drives_the_session(base: str) -> None:
    client = ReplayClient(base, token=TOKEN)
    assert {t["name"] for t in client.traces()} >= {"live-migration", "user-reboot"}
    status = client.start("user-reboot", session="verbs", start="virtual", resources=["vm-a"])
    assert status["state"] == "virtual" and status["resources"] == ["vm-a"]
    assert "verbs" in {s["name"] for s in client.sessions()}
    first = client.step(session="verbs")
    assert first["position_s"] > 0 and first["document"]["Events"]
    assert client.seek(0, session="verbs")["position_s"] == 0
    assert client.advance(5, session="verbs")["position_s"] == 5
    assert client.advance(session="verbs")["position_s"] == first["position_s"]
    assert client.set_speed("2x", session="verbs")["speed"] == 2
    assert client.resume(session="verbs")["state"] == "running"
    assert client.pause(session="verbs")["state"] == "paused"
    assert client.status("verbs")["name"] == "verbs"
    assert client.documents("verbs") == []  # nobody polled IMDS
    client.delete("verbs")
    assert "verbs" not in {s["name"] for s in client.sessions()}


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (lambda c: c.status("nobody"), 404, "no session 'nobody'"),
        (lambda c: c.start("live-migraton", session="typo"), 404, "did you mean"),
        (lambda c: c.seek(-1), 400, "outside the trace"),
        (lambda c: c.set_speed("fast"), 400, "not understood"),
        (lambda c: c.start("user-reboot", session="bad name!"), 400, "session name"),
    ],
)
def test_errors_carry_the_servers_status_and_message(
    base: str, call: object, status: int, words: str
) -> None:
    client = ReplayClient(base, token=TOKEN)
    client.start("user-reboot", start="virtual")
    with pytest.raises(ControlError) as failed:
        call(client)  # type: ignore[operator]
    assert failed.value.status == status
    assert words in failed.value.message
    assert str(failed.value).startswith(f"{status}: ")


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    from tests.serving import free_port

    client = ReplayClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(ReplayError) as failed:
        client.sessions()
    assert "cannot reach the replay server at http://127.0.0.1:" in str(failed.value)
