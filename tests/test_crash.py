"""Crash safety: capture and ingest killed with SIGKILL lose nothing they had made durable.

The kills are placed by observed progress, not by sleeping: lines in the capture file, the
read offset of the capture file in /proc/<pid>/fdinfo, a temporary file appearing in the
dataset. Each wait blocks (tests/watching.py: inotify on the folders involved and a pidfd on
the process, bounded by WITHIN_S) instead of spinning a core, and each test asserts that its
kill landed while the process was still at work: a kill after the end would prove nothing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.core.timeline import Trace, format_rfc1123
from replay.store.dataset import iter_traces, scan
from tests.serving import serving
from tests.watching import IN_CREATE, IN_MODIFY, IN_MOVED_TO, RECHECK_S, Watcher

POLL = "/metadata/scheduledevents?api-version=2020-07-01"
WITHIN_S = 60.0
"""The longest any wait here may take before the test fails."""
T0 = datetime(2025, 7, 1, tzinfo=UTC)


def replay(*args: str) -> list[str]:
    return [sys.executable, "-m", "replay", *args]


READ_EVERY_S = 0.01
"""How often a wait looks at a read offset (reads make too many events to wake on each)."""


def assert_did_not_spin(watcher: Watcher) -> None:
    """The waits slept between looks: a spinning wait never gives up the CPU by itself."""
    assert watcher.slept >= watcher.wakes // 2, (watcher.slept, watcher.wakes, watcher.cpu_s)


class Tail:
    """The complete JSON lines of a file that another process appends to, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.parsed: list[dict[str, Any]] = []

    def lines(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                new = f.read()
        except FileNotFoundError:
            return self.parsed
        self.offset += len(new)
        data = self.partial + new
        cut = data.rfind(b"\n") + 1
        self.parsed += complete_lines(data[:cut])
        self.partial = data[cut:]
        return self.parsed


def complete_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON lines of a capture up to its last newline (what fsync made durable)."""
    return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def closed_episodes(lines: list[dict[str, Any]]) -> list[list[list[dict[str, Any]]]]:
    """Each episode the lines hold from its first event to its empty document, as the list
    of distinct Events arrays it went through (an independent reading of the capture format)."""
    episodes: list[list[list[dict[str, Any]]]] = []
    current: list[list[dict[str, Any]]] | None = None
    quiet_seen = False
    for line in lines:
        if "document" not in line:
            continue
        events = line["document"]["Events"]
        if current is None:
            if not events:
                quiet_seen = True
            elif quiet_seen:  # an event the capture saw begin
                current = [events]
        elif events != current[-1]:
            if events:
                current.append(events)
            else:
                episodes.append(current)
                current = None
    return episodes


def traces_in(directory: Path) -> list[Trace]:
    found = [t for t in iter_traces(directory) if isinstance(t, Trace)]
    return sorted(found, key=lambda t: t.started_at or T0)


def episodes_of(traces: list[Trace]) -> list[list[list[dict[str, Any]]]]:
    return [[list(s.events) for s in t.snapshots[1:-1]] for t in traces]


def ingest(files: list[Path], traces_dir: Path) -> subprocess.Popen[bytes]:
    args = ["ingest", *map(str, files), "--traces-dir", str(traces_dir), "--format", "json"]
    return subprocess.Popen(replay(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=WITHIN_S)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = orjson.loads(out)
    assert report["errors"] == [] and report["skipped"] == [], report
    return report


# -- capture ---------------------------------------------------------------------------------------


def test_a_capture_killed_mid_run_ingests_everything_up_to_its_last_complete_line(
    traces_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "vm.jsonl"
    # The capture's first poll starts the replay: it sees each episode from its start.
    args = ["--trace", "live-migration", "--speed", "600", "--loop"]
    with serving(*args, traces_dir=traces_dir) as base:
        capture = ["capture", "--url", base + POLL, "--interval", "0.01", "--out", str(out)]
        proc = subprocess.Popen(replay(*capture), stderr=subprocess.DEVNULL)
        try:
            with Watcher(proc) as watcher:
                watcher.watch(tmp_path, IN_CREATE | IN_MODIFY)
                tail = Tail(out)

                def enough() -> bool:
                    assert proc.poll() is None, "capture stopped by itself"
                    return len(closed_episodes(tail.lines())) >= 2

                watcher.wait_for("two episodes in the capture", enough, WITHIN_S)
                proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=WITHIN_S)
    assert proc.returncode == -signal.SIGKILL  # killed mid-run: it never ends by itself
    assert_did_not_spin(watcher)
    data = out.read_bytes()
    # The kill may land anywhere; the line it cut short (if any) is the only loss.
    cuts = sorted(random.Random(9).sample(range(data.rfind(b"\n", 0, -1) + 1, len(data)), 3))
    for n, cut in enumerate([len(data), *cuts]):
        copy = tmp_path / f"cut-{n}.jsonl"
        copy.write_bytes(data[:cut])
        expected = closed_episodes(complete_lines(data[:cut]))
        target = tmp_path / f"traces-{n}"
        report = finish(ingest([copy], target))
        assert episodes_of(traces_in(target)) == expected
        assert all(t.scenario == "live-migration" for t in traces_in(target))
        for warning in report["warnings"]:
            assert "cut short" in warning or "still open" in warning, warning
        if not data[:cut].endswith(b"\n"):
            assert any("cut short" in w for w in report["warnings"]), report["warnings"]


# -- ingest ----------------------------------------------------------------------------------------


def _event(event_id: str, status: str, not_before: datetime | None) -> dict[str, Any]:
    return {
        "EventId": event_id,
        "EventStatus": status,
        "EventType": "Freeze",
        "ResourceType": "VirtualMachine",
        "Resources": ["vm-0"],
        "NotBefore": format_rfc1123(not_before) if not_before else "",
        "Description": "Host server is undergoing maintenance.",
        "EventSource": "Platform",
        "DurationInSeconds": 9,
    }


def write_capture(path: Path, *, episodes: int, heartbeats: int, tag: int) -> None:
    """A capture-format file: heartbeats a minute apart, then an episode, `episodes` times."""

    def stamp(t: float) -> str:
        return (T0 + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def lines() -> Iterator[bytes]:
        yield orjson.dumps({"capture": {"format": 1, "url": "test", "interval_s": 1.0}})
        t, incarnation = 0.0, 1
        yield orjson.dumps({"t": stamp(t), "document": {"DocumentIncarnation": 1, "Events": []}})
        for k in range(episodes):
            for _ in range(heartbeats):
                t += 60
                yield orjson.dumps({"t": stamp(t), "heartbeat": {"polls": int(t), "errors": 0}})
            event_id = f"{tag:08X}-{k:04X}-4000-8000-000000000000"
            t += 30
            for status, events in (
                ("Scheduled", [_event(event_id, "Scheduled", T0 + timedelta(seconds=t + 900))]),
                ("Started", [_event(event_id, "Started", None)]),
                ("gone", []),
            ):
                incarnation += 1
                doc = {"DocumentIncarnation": incarnation, "Events": events}
                yield orjson.dumps({"t": stamp(t), "document": doc})
                t += 900 if status == "Scheduled" else 60

    path.write_bytes(b"\n".join(lines()) + b"\n")


@dataclass
class Dataset:
    """What a traces directory holds: trace names, temporary files, bad files."""

    names: set[str]
    temporary: list[str]
    bad: list[str]


def look(traces_dir: Path) -> Dataset:
    good, bad = scan(traces_dir)
    temporary = [
        str(p.relative_to(traces_dir))
        for p in traces_dir.rglob("*")
        if p.is_file() and p.suffix != ".parquet"
    ]
    return Dataset({t.name for t in good}, temporary, [b.problem for b in bad])


def listed(traces_dir: Path) -> set[str]:
    """The names `imds-replay traces --format json` lists, with no warnings."""
    out = subprocess.run(
        replay("traces", "--traces-dir", str(traces_dir), "--format", "json"),
        capture_output=True,
        check=True,
        timeout=WITHIN_S,
    )
    assert b"warning" not in out.stderr, out.stderr.decode()
    return {t["name"] for t in orjson.loads(out.stdout)}


def bytes_read(pid: int, path: Path) -> int | None:
    """How far process pid has read into path (its fd's offset), None if it has no fd on it."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                return int(info.split("pos:")[1].split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def temporary_files(traces_dir: Path) -> list[str]:
    return [
        entry.name
        for folder in os.scandir(traces_dir)
        if folder.is_dir()
        for entry in os.scandir(folder.path)
        if not entry.name.endswith(".parquet")
    ]


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A capture that takes ingest a moment (about 30 MB), and the traces it makes."""
    work = tmp_path_factory.mktemp("big")
    path = work / "big.jsonl"
    write_capture(path, episodes=4, heartbeats=60_000, tag=0xB16)
    report = finish(ingest([path], work / "reference"))
    names = {t["name"] for t in report["traces"]}
    assert len(names) == 4
    return path, names


_seeded = random.Random(7)
KILL_AT = [f"read {_seeded.random():.2f}" for _ in range(4)]
KILL_AT += ["temporary file", "first trace", "third trace"]
"""Where ingest dies: after reading a seeded share of the file, while writing its first trace
(a temporary file exists), or after one or three of its four traces are in place."""


@pytest.mark.parametrize("kill_at", KILL_AT)
def test_an_ingest_killed_anywhere_leaves_whole_traces_and_a_rerun_completes_it(
    traces_dir: Path, big_capture: tuple[Path, set[str]], kill_at: str
) -> None:
    path, new_names = big_capture
    before = look(traces_dir)
    size = path.stat().st_size
    proc = ingest([path], traces_dir)
    watcher = Watcher(proc)
    try:
        watcher.watch(traces_dir, IN_CREATE | IN_MOVED_TO, subfolders=True)  # ingest writing
        if kill_at.startswith("read "):
            at = float(kill_at.split()[1]) * size

            def reached() -> bool:
                pos = bytes_read(proc.pid, path)
                return proc.poll() is not None or (pos is not None and pos >= at)

        elif kill_at == "temporary file":

            def reached() -> bool:
                return proc.poll() is not None or bool(temporary_files(traces_dir))

        else:
            count = 1 if kill_at == "first trace" else 3

            def reached() -> bool:
                added = len(look_names(traces_dir) - before.names)
                return proc.poll() is not None or added >= count

        every_s = READ_EVERY_S if kill_at.startswith("read ") else RECHECK_S
        watcher.wait_for(f"ingest to reach {kill_at}", reached, WITHIN_S, every_s=every_s)
        proc.send_signal(signal.SIGKILL)
        was_killed = proc.wait(timeout=WITHIN_S) == -signal.SIGKILL
    finally:
        watcher.close()
        proc.kill()
        proc.communicate(timeout=WITHIN_S)
    assert was_killed, f"ingest finished before {kill_at}: make the capture bigger"
    assert_did_not_spin(watcher)

    after = look(traces_dir)
    assert after.bad == []  # never a half-written .parquet
    assert before.names <= after.names <= before.names | new_names
    assert all(Path(name).name.startswith(".") for name in after.temporary), after.temporary
    assert listed(traces_dir) == after.names
    if kill_at.startswith("read "):
        assert after.names == before.names  # killed while reading: nothing written yet
    if kill_at == "temporary file":
        assert after.temporary, "killed mid-write: its temporary file stays behind, hidden"

    finish(ingest([path], traces_dir))  # the rerun completes the dataset
    assert listed(traces_dir) == look(traces_dir).names == before.names | new_names


def look_names(traces_dir: Path) -> set[str]:
    return {p.stem for p in traces_dir.glob("scenario=*/*.parquet") if not p.name.startswith(".")}


def test_an_ingest_of_one_episode_killed_anywhere_leaves_the_dataset_as_before_or_complete(
    traces_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "one.jsonl"
    write_capture(path, episodes=1, heartbeats=100_000, tag=0x0E)
    before = look(traces_dir)
    for fraction in (0.3, 0.9, 2.0):  # 2: when its temporary file appears
        proc = ingest([path], traces_dir)
        at = fraction * path.stat().st_size
        watcher = Watcher(proc)
        try:
            watcher.watch(traces_dir, IN_CREATE | IN_MOVED_TO, subfolders=True)

            def reached(at: float = at, proc: subprocess.Popen[bytes] = proc) -> bool:
                pos = bytes_read(proc.pid, path)
                return (
                    proc.poll() is not None
                    or bool(temporary_files(traces_dir))
                    or (pos is not None and pos >= at)
                )

            what = f"ingest to reach {fraction:g} of the file"
            watcher.wait_for(what, reached, WITHIN_S, every_s=READ_EVERY_S)
            proc.send_signal(signal.SIGKILL)
            was_killed = proc.wait(timeout=WITHIN_S) == -signal.SIGKILL
        finally:
            watcher.close()
            proc.kill()
            proc.communicate(timeout=WITHIN_S)
        assert was_killed, f"ingest finished before {fraction:g}: make the capture bigger"
        assert_did_not_spin(watcher)
        after = look(traces_dir)
        assert after.bad == []
        assert len(after.names - before.names) in (0, 1)  # as before, or complete
        assert listed(traces_dir) == after.names
    finish(ingest([path], traces_dir))
    assert len(look(traces_dir).names - before.names) == 1


def test_two_ingests_of_different_files_at_the_same_time_both_land(
    traces_dir: Path, tmp_path: Path
) -> None:
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for tag, path in enumerate(files, 0xA):
        write_capture(path, episodes=3, heartbeats=20_000, tag=tag)
    before = look(traces_dir).names
    procs = [ingest([path], traces_dir) for path in files]
    assert all(p.poll() is None for p in procs)  # both running at once
    reports = [finish(p) for p in procs]
    new = {t["name"] for r in reports for t in r["traces"]}
    assert len(new) == 6 and all(t["status"] == "added" for r in reports for t in r["traces"])
    after = look(traces_dir)
    assert after.names == before | new and after.bad == [] and after.temporary == []
    assert listed(traces_dir) == after.names
