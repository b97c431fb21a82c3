"""ingest: capture files (both formats) -> episodes -> labelled traces in the store."""

from __future__ import annotations

import shutil
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from replay.cli import app
from replay.errors import ReplayError
from replay.recording.ingest import ingest_file, scenario_of
from replay.recording.parse import BadLineError, parse_capture
from replay.store.dataset import load_trace, write_trace
from replay.store.files import read_trace
from replay.store.layout import check_name, trace_files
from tests.helpers import event, trace_of

DATA = Path(__file__).parent / "data" / "captures"
BASE = datetime(2025, 9, 1, 6, 0, tzinfo=UTC)
runner = CliRunner()


def stamp(offset_s: float) -> str:
    return (BASE + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def doc(incarnation: int, *events: dict[str, Any]) -> dict[str, Any]:
    return {"DocumentIncarnation": incarnation, "Events": list(events)}


def polls(
    changes: list[tuple[float, dict[str, Any]]], end_s: float, every_s: float = 5.0
) -> list[tuple[float, Any]]:
    """What a shell loop polling every every_s seconds logs, given when the document changed."""
    out: list[tuple[float, Any]] = []
    t = 0.0
    while t <= end_s:
        out.append((t, [d for at, d in changes if at <= t][-1]))
        t += every_s
    return out


def write_log(path: Path, lines: list[tuple[float, Any]], tail: str = "") -> Path:
    """A plain log: `<timestamp> <body>` per poll; a str body is written as is."""
    text = "".join(
        f"{stamp(t)} {body if isinstance(body, str) else orjson.dumps(body).decode()}\n"
        for t, body in lines
    )
    path.write_text(text + tail)
    return path


def write_capture(path: Path, lines: list[dict[str, Any]], fmt: int = 1) -> Path:
    header = {"capture": {"format": fmt, "url": "u", "interval_s": 1.0, "host": "h"}}
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in [header, *lines]))
    return path


SCHEDULED = event("E1", not_before_s=600)
STARTED = event("E1", status="Started")
ONE_EPISODE = [(0.0, doc(1)), (100.0, doc(2, SCHEDULED)), (200.0, doc(3, STARTED)), (260, doc(4))]


# -- the "Done when" check: unseen captures in both formats --------------------------------

# Worked out by hand from the fixture files: per trace, its start and per event the offsets
# (first seen, Scheduled, Started, gone, NotBefore, approved) in seconds.
LM, F1, R1, C1 = (
    "A3F1C2D4-5B6E-4F70-8A91-B2C3D4E5F601",
    "0B7E5D21-9C4A-4E3B-8F12-6D5A4C3B2A10",
    "C9D8E7F6-A5B4-4C3D-9E2F-1A0B9C8D7E6F",
    "77E2A0C1-3D4F-4B5A-8C6D-9E0F1A2B3C4D",
)
SPOT, HOST, PREB, LM2 = (
    "5E0C9A7B-1D2E-4F3A-9B8C-7D6E5F4A3B2C",
    "E4D3C2B1-A098-4765-8432-10FEDCBA9876",
    "2F3E4D5C-6B7A-4980-A1B2-C3D4E5F60718",
    "9A8B7C6D-5E4F-4A3B-8C2D-1E0F9A8B7C6E",
)
EXPECTED = {
    "live-migration": ("2025-08-04T10:01:05", {LM: (85, 85, 986, 991, 985, None)}),
    "host-maintenance": (
        "2025-08-04T10:18:36",
        {F1: (84, 84, 985, 994, 984, None), R1: (204, 204, 208, 354, 1104, 204.15)},
    ),
    "canceled-maintenance": ("2025-08-04T10:39:10", {C1: (50, 50, None, 530, 950, None)}),
    "spot-eviction": ("2025-08-05T08:09:30.250000", {SPOT: (30, 30, 60, 120, 59.75, None)}),
    "host-failure": ("2025-08-05T08:16:10", {HOST: (30, None, 30, 630.25, None, None)}),
    "platform-reboot": (
        "2025-08-05T08:32:50.250000",
        {PREB: (30, 30, 930, 1030, 929.75, None), LM2: (130, 130, 180, 185, 179.75, None)},
    ),
}


def test_unseen_captures_in_both_formats_ingest_with_their_true_timelines(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    files = [str(p) for p in sorted(DATA.iterdir())]
    result = runner.invoke(app, ["ingest", *files, "--traces-dir", str(traces), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["by_scenario"] == {
        s: {"added": 1, "updated": 0, "unchanged": 0} for s in sorted(EXPECTED)
    }
    assert len(report["warnings"]) == 2  # each file's cut-short last line
    assert all("cut short" in w for w in report["warnings"])
    for row in report["traces"]:
        trace = load_trace(traces, row["name"])
        started_at, events = EXPECTED[trace.scenario]
        assert trace.started_at == datetime.fromisoformat(started_at + "+00:00")
        assert trace.origin == "captured"
        phases = {
            lc.event_id: (
                lc.first_seen_s,
                lc.scheduled_s,
                lc.started_s,
                lc.gone_s,
                lc.not_before_s,
                lc.approved_s,
            )
            for lc in trace.lifecycles.values()
        }
        assert phases == events, trace.name
        assert trace.source["file"] == Path(row["file"]).name

    before = {p: p.stat().st_mtime_ns for p in trace_files(traces)}
    again = runner.invoke(app, ["ingest", *files, "--traces-dir", str(traces), "--format", "json"])
    assert again.exit_code == 0, again.output
    assert {r["status"] for r in orjson.loads(again.stdout)["traces"]} == {"unchanged"}
    assert {p: p.stat().st_mtime_ns for p in trace_files(traces)} == before


def test_timings_then_reports_the_true_medians(tmp_path: Path) -> None:
    traces = str(tmp_path / "traces")
    files = [str(p) for p in sorted(DATA.iterdir())]
    assert runner.invoke(app, ["ingest", *files, "--traces-dir", traces]).exit_code == 0
    result = runner.invoke(app, ["timings", "--traces-dir", traces, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["scenario"]: row for row in orjson.loads(result.stdout)}
    for scenario, (_, events) in EXPECTED.items():
        phases: dict[str, list[float]] = {"notice_s": [], "scheduled_s": [], "started_s": []}
        phases["total_s"] = []
        for first, _, started, gone, not_before, _ in events.values():
            if not_before is not None:
                phases["notice_s"].append(not_before - first)
            if started is not None and started != first:
                phases["scheduled_s"].append(started - first)
            if started is not None:
                phases["started_s"].append(gone - started)
            phases["total_s"].append(gone - first)
        for phase, values in phases.items():
            expected = statistics.median(values) if values else None
            assert rows[scenario][phase] == expected, (scenario, phase)


def test_the_table_counts_traces_per_scenario(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["ingest", str(DATA / "vm-a.jsonl"), "--traces-dir", str(tmp_path / "t")]
    )
    assert result.exit_code == 0, result.output
    assert "1 of 1 files ingested" in result.stdout
    assert "live-migration" in result.stdout and "canceled-maintenance" in result.stdout
    assert "warning:" in result.stderr and "vm-a.jsonl:32" in result.stderr


# -- scenario labels ------------------------------------------------------------------------

LM_TEXT = "Virtual machine is being paused because of a memory-preserving Live Migration operation."


def started(**kw: Any) -> list[tuple[float, list[dict[str, Any]]]]:
    return [(0, []), (10, [event(**kw)]), (20, [event(status="Started", **kw)]), (30, [])]


@pytest.mark.parametrize(
    ("steps", "scenario"),
    [
        ([(0, []), (10, [event()]), (20, [])], "canceled-maintenance"),
        ([(0, []), (10, [event(event_type="Preempt")]), (20, [])], "canceled-maintenance"),
        ([(0, []), (10, [event(status="Started", event_type="Reboot")]), (20, [])], "host-failure"),
        (
            [
                (0, []),
                (10, [event(status="Started", event_type="Reboot", source="User")]),
                (20, []),
            ],
            "host-failure",
        ),
        ([(0, []), (10, [event(status="Started")]), (20, [])], "host-maintenance"),
        (started(description=LM_TEXT), "live-migration"),
        (started(), "host-maintenance"),
        (started(event_type="Reboot", source="User"), "user-reboot"),
        (started(event_type="Reboot"), "platform-reboot"),
        (started(event_type="Redeploy", source="User"), "user-redeploy"),
        (started(event_type="Redeploy"), "platform-redeploy"),
        (started(event_type="Preempt"), "spot-eviction"),
        (started(event_type="Terminate", source="User"), "terminate"),
        (started(source="User"), "other-freeze"),
        (
            [
                (0, []),
                (10, [event("A", event_type="Terminate")]),
                (15, [event("A", event_type="Terminate"), event("B")]),
                (20, [event("A", status="Started", event_type="Terminate"), event("B")]),
                (30, []),
            ],
            "terminate",
        ),
    ],
)
def test_the_first_event_decides_the_scenario_by_the_first_matching_rule(
    steps: list[tuple[float, list[dict[str, Any]]]], scenario: str
) -> None:
    assert scenario_of(trace_of(steps)) == scenario


# -- bad lines and atomicity ------------------------------------------------------------------


def two_episode_log(tmp_path: Path, middle: str) -> Path:
    first = polls(ONE_EPISODE, 300)
    later = [(t + 400, d) for t, d in polls(ONE_EPISODE, 300)]
    later = [(t, {**d, "DocumentIncarnation": d["DocumentIncarnation"] + 4}) for t, d in later]
    return write_log(tmp_path / "vm.log", [*first, (350, middle), *later])


def test_a_bad_line_names_file_and_line_and_nothing_from_the_file_is_written(
    tmp_path: Path,
) -> None:
    log = two_episode_log(tmp_path, "{not json")
    with pytest.raises(BadLineError, match=r"vm\.log:62: not a JSON document") as info:
        ingest_file(log, tmp_path / "traces")
    assert info.value.lineno == 62
    assert trace_files(tmp_path / "traces") == []


def test_skip_bad_skips_the_line_and_keeps_the_rest(tmp_path: Path) -> None:
    log = two_episode_log(tmp_path, "{not json")
    report = ingest_file(log, tmp_path / "traces", skip_bad=True)
    assert [o.status for o in report.outcomes] == ["added", "added"]
    assert [str(s) for s in report.skipped] == [f"{log}:62: " + report.skipped[0].why]


def test_the_cli_reports_a_bad_file_and_exits_2_after_ingesting_the_others(
    tmp_path: Path,
) -> None:
    log = two_episode_log(tmp_path, "{not json")
    traces = tmp_path / "traces"
    result = runner.invoke(
        app, ["ingest", str(log), str(DATA / "vm-a.jsonl"), "--traces-dir", str(traces)]
    )
    assert result.exit_code == 2
    assert f"error: {log}:62: not a JSON document" in result.stderr
    assert f"nothing from {log} was written" in result.stderr
    assert "Traceback" not in result.output
    assert len(trace_files(traces)) == 3  # vm-a.jsonl's episodes


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (
            [(0, doc(1)), (10, doc(2, SCHEDULED)), (20, doc(2, STARTED))],
            "Events changed but DocumentIncarnation 2 is not above 2",
        ),
        (
            [(0, doc(5)), (10, doc(4, SCHEDULED))],
            "Events changed but DocumentIncarnation 4 is not above 5",
        ),
        ([(0, doc(1)), (10, doc(3, SCHEDULED)), (20, doc(2, SCHEDULED))], "went back from 3"),
        ([(0, doc(1)), (10, {"DocumentIncarnation": 2, "Events": [{"EventId": "x"}]})], "missing"),
    ],
)
def test_documents_that_break_the_incarnation_rules_are_bad_lines(
    tmp_path: Path, changes: list[tuple[float, dict[str, Any]]], why: str
) -> None:
    log = write_log(tmp_path / "vm.log", polls(changes, 30))
    line = 1 + int(changes[-1][0] // 5)
    with pytest.raises(BadLineError, match=rf"vm\.log:{line}: .*{why}"):
        parse_capture(log)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("2025-09-01T06:01:00 " + '{"DocumentIncarnation":1,"Events":[]}', "has no zone"),
        ("yesterday " + '{"DocumentIncarnation":1,"Events":[]}', "not an ISO-8601 or epoch"),
        (stamp(60) + ' {"DocumentIncarnation": 2, "Events": [', "its JSON does not parse"),
        (stamp(60) + ' {"Docu', "not a JSON document after the timestamp"),
    ],
)
def test_plain_lines_that_cannot_be_read_are_bad(tmp_path: Path, line: str, why: str) -> None:
    log = tmp_path / "vm.log"
    log.write_text(f"{stamp(0)} {orjson.dumps(doc(1)).decode()}\n{line}\n")
    with pytest.raises(BadLineError, match=rf"vm\.log:2: .*{why}"):
        parse_capture(log)


def test_a_line_out_of_order_is_put_in_its_place_where_its_document_must_fit(
    tmp_path: Path,
) -> None:
    """Sorted, line 3 (Started at 5 s) comes before line 2 (Scheduled at 10 s, incarnation 2)."""
    lines = [(0, doc(1)), (10, doc(2, SCHEDULED)), (5, doc(3, STARTED)), (20, doc(4))]
    with pytest.raises(
        BadLineError, match=r"vm\.log:2: Events changed but DocumentIncarnation 2 is not above 3"
    ):
        parse_capture(write_log(tmp_path / "vm.log", lines))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ({"capture": {"format": 1}}, "a second capture header"),
        ({"t": stamp(1), "note": "hello"}, "unknown line kind"),
        ({"document": doc(1)}, "no 't' timestamp"),
        ({"t": stamp(1), "approved": "E1"}, "approved must be a list"),
        ({"t": 5, "error": "x"}, "not an ISO-8601 timestamp: 5"),
    ],
)
def test_capture_lines_that_cannot_be_used_are_bad(
    tmp_path: Path, line: dict[str, Any], why: str
) -> None:
    path = write_capture(tmp_path / "c.jsonl", [{"t": stamp(0), "document": doc(1)}, line])
    with pytest.raises(BadLineError, match=rf"c\.jsonl:3: {why}"):
        parse_capture(path)


def test_a_newer_capture_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "c.jsonl", [], fmt=2)
    with pytest.raises(ReplayError, match=r"capture format 2.*upgrade imds-replay"):
        parse_capture(path)


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="cannot read"):
        parse_capture(tmp_path / "nope.log")


# -- episodes -------------------------------------------------------------------------------


def test_failed_polls_repeats_and_blank_lines_are_used_not_rejected(tmp_path: Path) -> None:
    lines = polls(ONE_EPISODE, 300)
    lines[3] = (lines[3][0], "")  # curl printed nothing
    lines[25] = (lines[25][0], '{"error": "Internal error"}')  # an IMDS error body
    log = write_log(tmp_path / "vm.log", lines, tail="\n\n")
    parsed = parse_capture(log)
    assert (parsed.format, parsed.warnings, parsed.skipped) == ("plain", [], [])
    (episode,) = parsed.episodes
    assert [(t - episode.start_at).total_seconds() for t, _, _ in episode.docs] == [0, 30, 130, 190]


def test_an_episode_starts_at_its_quiet_document_when_seen_for_under_30_s(tmp_path: Path) -> None:
    changes = [(0.0, doc(1)), (20.0, doc(2, SCHEDULED)), (40.0, doc(3))]
    report = ingest_file(write_log(tmp_path / "vm.log", polls(changes, 50)), tmp_path / "t")
    trace = load_trace(tmp_path / "t", report.outcomes[0].name)
    assert trace.started_at == BASE
    assert [s.offset_s for s in trace.snapshots] == [0.0, 20.0, 40.0]


def test_an_incarnation_bump_alone_collapses_into_the_previous_document(tmp_path: Path) -> None:
    changes = [(0.0, doc(1)), (50, doc(2, SCHEDULED)), (60, doc(3, SCHEDULED)), (70, doc(4))]
    parsed = parse_capture(write_log(tmp_path / "vm.log", polls(changes, 80)))
    (episode,) = parsed.episodes
    assert [d["DocumentIncarnation"] for _, d, _ in episode.docs] == [1, 2, 4]


def test_a_capture_that_starts_mid_event_skips_that_episode_with_a_warning(
    tmp_path: Path,
) -> None:
    changes = [(0.0, doc(3, STARTED)), (20.0, doc(4)), *[(t + 100, d) for t, d in ONE_EPISODE]]
    changes = [(t, {**d, "DocumentIncarnation": i + 3}) for i, (t, d) in enumerate(changes)]
    parsed = parse_capture(write_log(tmp_path / "vm.log", polls(changes, 400)))
    assert parsed.warnings == [
        f"{tmp_path / 'vm.log'}:1: the capture starts mid-event (E1); that episode's start "
        "was not seen, so it is skipped"
    ]
    assert len(parsed.episodes) == 1


def test_approvals_belong_to_the_episode_they_were_made_in(tmp_path: Path) -> None:
    lines = [
        {"t": stamp(0), "document": doc(1)},
        {"t": stamp(5), "approved": ["OLD"]},
        {"t": stamp(10), "heartbeat": {"polls": 10}},
        {"t": stamp(40), "document": doc(2, SCHEDULED)},
        {"t": stamp(40.25), "approved": ["E1"]},
        {"t": stamp(45), "approved": ["OTHER"]},
        {"t": stamp(50), "document": doc(3, STARTED)},
        {"t": stamp(60), "document": doc(4)},
        {"t": stamp(61), "approved": ["LATE"]},
    ]
    report = ingest_file(write_capture(tmp_path / "c.jsonl", lines), tmp_path / "t")
    trace = load_trace(tmp_path / "t", report.outcomes[0].name)
    assert [(a.offset_s, a.event_ids) for a in trace.approvals] == [(30.25, ("E1",))]
    assert trace.started_at == BASE + timedelta(seconds=10)  # the heartbeat 30 s before E1
    assert trace.source["capture"]["host"] == "h"


# -- idempotence and growth -----------------------------------------------------------------


def test_names_are_safe_stable_and_content_derived(tmp_path: Path) -> None:
    log = write_log(tmp_path / "vm.log", polls(ONE_EPISODE, 300))
    (outcome,) = ingest_file(log, tmp_path / "t").outcomes
    assert check_name(outcome.name) == outcome.name
    scenario, short_id, digest = outcome.name.rsplit("-", 2)
    assert (scenario, short_id, len(digest)) == ("host-maintenance", "e1", 10)
    copy = tmp_path / "other" / "vm.log"
    copy.parent.mkdir()
    shutil.copy(log, copy)
    assert ingest_file(copy, tmp_path / "t").outcomes[0].status == "unchanged"


def test_a_stored_trace_whose_content_differs_is_updated_back_to_the_capture(
    tmp_path: Path,
) -> None:
    log = write_log(tmp_path / "vm.log", polls(ONE_EPISODE, 300))
    traces = tmp_path / "t"
    (added,) = ingest_file(log, traces).outcomes
    captured = read_trace(added.path)
    # The same name and file, another document: the Scheduled event's NotBefore moved.
    snaps = list(captured.snapshots)
    moved = {**snaps[1].events[0], "NotBefore": event("E1", not_before_s=900)["NotBefore"]}
    snaps[1] = replace(snaps[1], document={**snaps[1].document, "Events": [moved]})
    tampered = replace(captured, snapshots=tuple(snaps))
    assert write_trace(tampered, traces) == added.path
    assert read_trace(added.path) != captured
    (again,) = ingest_file(log, traces).outcomes
    assert (again.name, again.status, again.path) == (added.name, "updated", added.path)
    assert read_trace(added.path) == captured
    assert trace_files(traces) == [added.path]


def test_a_grown_capture_keeps_its_traces_and_adds_the_new_episode(tmp_path: Path) -> None:
    second = [
        (t + 300, {**d, "DocumentIncarnation": d["DocumentIncarnation"] + 4})
        for t, d in ONE_EPISODE
    ]
    full = polls([*ONE_EPISODE, *second], 600)
    log = write_log(tmp_path / "vm.log", full[:90])  # stops while the second event is Scheduled
    report = ingest_file(log, tmp_path / "t")
    assert [o.status for o in report.outcomes] == ["added"]
    assert "still open" in report.warnings[0]
    write_log(tmp_path / "vm.log", full)
    report = ingest_file(log, tmp_path / "t")
    assert [o.status for o in report.outcomes] == ["unchanged", "added"]
    assert len(trace_files(tmp_path / "t")) == 2


def test_relabelling_updates_the_trace_instead_of_duplicating_it(tmp_path: Path) -> None:
    log = write_log(tmp_path / "vm.log", polls(ONE_EPISODE, 300))
    traces = tmp_path / "t"
    (first,) = ingest_file(log, traces, scenario="lab-test").outcomes
    assert (first.scenario, first.status) == ("lab-test", "added")
    (second,) = ingest_file(log, traces).outcomes
    assert (second.scenario, second.status) == ("host-maintenance", "updated")
    assert trace_files(traces) == [second.path]


def test_a_bad_scenario_name_is_refused(tmp_path: Path) -> None:
    log = write_log(tmp_path / "vm.log", polls(ONE_EPISODE, 300))
    with pytest.raises(ReplayError, match=r"scenario '\.\./x'"):
        ingest_file(log, tmp_path / "t", scenario="../x")


def test_lines_out_of_order_are_put_in_time_order(tmp_path: Path) -> None:
    """A log viewer's export: the same polls in any order give the same episode."""
    lines = [f"{stamp(t)} {orjson.dumps(d).decode()}" for t, d in polls(ONE_EPISODE, 300)]
    in_order = parse_capture(write_text(tmp_path / "a.log", lines))
    newest_first = parse_capture(write_text(tmp_path / "b.log", lines[::-1]))
    shuffled = parse_capture(write_text(tmp_path / "c.log", lines[1::2] + lines[::2]))
    assert timeline(newest_first) == timeline(in_order) == timeline(shuffled)
    assert "sorted by time" in newest_first.detail and "sorted" not in in_order.detail
    (episode,) = in_order.episodes
    assert [(t - BASE).total_seconds() for t, _, _ in episode.docs] == [70, 100, 200, 260]


def test_a_record_seen_twice_counts_once(tmp_path: Path) -> None:
    lines = [f"{stamp(t)} {orjson.dumps(d).decode()}" for t, d in polls(ONE_EPISODE, 300)]
    doubled = parse_capture(write_text(tmp_path / "a.log", lines[::-1] + lines))
    assert timeline(doubled) == timeline(parse_capture(write_text(tmp_path / "b.log", lines)))


def timeline(parsed: Any) -> list[list[tuple[datetime, Any]]]:
    """Each episode's documents with their times (line numbers left out)."""
    return [[(t, d) for t, d, _ in episode.docs] for episode in parsed.episodes]


def write_text(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_plain_lines_at_the_same_time_are_fine(tmp_path: Path) -> None:
    body = orjson.dumps(doc(1)).decode()
    log = tmp_path / "vm.log"
    log.write_text("".join(f"{stamp(t)} {body}\n" for t in (0, 5, 5, 10)))
    assert parse_capture(log).lines == 4
