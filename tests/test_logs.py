"""ingest reads the logs people have: each shape gives the same trace, with exact phases."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from typer.testing import CliRunner

from replay.cli import app
from replay.core.timeline import Trace
from replay.errors import ReplayError
from replay.recording.documents import parse_path
from replay.recording.episodes import BadLineError
from replay.recording.ingest import capture_traces, ingest_file, parse_files
from replay.recording.logs import LogOptions
from replay.recording.parse import parse_capture
from replay.recording.times import parse_tz, prefix_time, value_time
from replay.store.dataset import load_trace
from replay.store.layout import trace_files
from tests.helpers import event

BASE = datetime(2025, 9, 1, 6, 0, tzinfo=UTC)
SCHEDULED = event("E1", not_before_s=600)
STARTED = event("E1", status="Started")
runner = CliRunner()


def doc(incarnation: int, *events: dict[str, Any]) -> dict[str, Any]:
    return {"DocumentIncarnation": incarnation, "Events": list(events)}


CHANGES = [(0, doc(1)), (100, doc(2, SCHEDULED)), (200, doc(3, STARTED)), (260, doc(4))]
POLLS = [(t, [d for at, d in CHANGES if at <= t][-1]) for t in range(0, 305, 5)]
"""A poll every 5 s: quiet until 100 s, Scheduled until 200 s, Started until 260 s, then gone."""


def assert_the_episode(trace: Trace, start: datetime = BASE + timedelta(seconds=70)) -> None:
    """The one episode of POLLS: it starts at the last quiet poll 30 s before the event (70 s);
    Scheduled 30 s later, Started 100 s after that, gone 60 s after that."""
    assert trace.scenario == "host-maintenance"
    assert trace.started_at == start
    statuses = [[e["EventStatus"] for e in s.events] for s in trace.snapshots]
    assert [s.offset_s for s in trace.snapshots] == [0.0, 30.0, 130.0, 190.0]
    assert statuses == [[], ["Scheduled"], ["Started"], []]


def only_trace(path: Path, **options: Any) -> Trace:
    (trace,) = capture_traces(parse_capture(path, options=LogOptions(**options)))
    return trace


def iso(t: float, digits: int = 3) -> str:
    moment = BASE + timedelta(seconds=t)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[: 20 + digits - 1 if digits else 19] + "Z"


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def structured_log() -> list[str]:
    """A handler's structured log, newest first, the document under Event, other kinds between."""
    lines = []
    for t, d in POLLS:
        lines.append(dumps({"@timestamp": iso(t), "level": "info", "msg": "poll", "Event": d}))
        lines.append(dumps({"@timestamp": iso(t + 1), "level": "debug", "msg": "no change"}))
        if d["Events"]:
            single = {"@timestamp": iso(t + 2), "msg": "event", "event": d["Events"][0]}
            lines.append(dumps(single))
        lines.append("")
    return lines[::-1]


def journald_log() -> list[str]:
    """journalctl -o json: the document as text after a prefix in MESSAGE, time in µs."""
    lines = []
    for t, d in POLLS:
        us = str(int((BASE + timedelta(seconds=t)).timestamp() * 1_000_000))
        common = {"__REALTIME_TIMESTAMP": us, "_HOSTNAME": "vm1", "SYSLOG_IDENTIFIER": "maint"}
        lines.append(dumps({**common, "MESSAGE": "handler alive", "PRIORITY": "7"}))
        lines.append(dumps({**common, "MESSAGE": f"scheduled events: {json.dumps(d)}"}))
    return lines


def kubectl_log() -> list[str]:
    """kubectl logs --timestamps: RFC 3339 with nanoseconds, the pod's output after it."""
    lines = []
    for t, d in POLLS:
        stamp = (BASE + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S") + ".123456789Z"
        lines.append(f"{stamp} {dumps(d)}")
        lines.append(f"{stamp} polled in 3 ms")
    return lines


def app_log() -> list[str]:
    """A handler's text log: a time, a level, then the document after a message prefix."""
    lines = []
    for t, d in POLLS:
        lines.append(f"{iso(t)} INFO maintenance: scheduled events: {json.dumps(d)} (3 ms)")
        lines.append(f"{iso(t)} [DEBUG] maintenance: nothing to do")
    return lines


def epoch_log() -> list[str]:
    return [f"{int((BASE + timedelta(seconds=t)).timestamp())} {dumps(d)}" for t, d in POLLS]


def curl_log() -> list[str]:
    """A curl loop: a naive date line, a status line, the body; a 503 on one poll."""
    lines = []
    for t, d in POLLS:
        lines.append((BASE + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S"))
        if t == 150:
            lines += ["503 Service Unavailable;", '{"error": "Service unavailable"}']
        else:
            lines += ["200 OK;", dumps(d)]
    return lines


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("make", "shape", "detail", "start"),
    [
        (structured_log, "json", "time from field @timestamp; document at Event", 70),
        (journald_log, "json", "field __REALTIME_TIMESTAMP; document at MESSAGE (as text)", 70),
        (kubectl_log, "plain", "time at the line start; document after the time", 70.123456),
        (epoch_log, "plain", "time at the line start; document after the time", 70),
        (app_log, "plain", "document in the text after the time", 70),
    ],
)
def test_each_log_shape_ingests_to_the_same_episode(
    tmp_path: Path, make: Callable[[], list[str]], shape: str, detail: str, start: float
) -> None:
    parsed = parse_capture(write(tmp_path / "handler.log", make()))
    assert (parsed.format, parsed.skipped, parsed.warnings) == (shape, [], [])
    assert detail in parsed.detail
    (trace,) = capture_traces(parsed)
    assert_the_episode(trace, BASE + timedelta(seconds=start))


def test_other_records_are_counted_and_skipped(tmp_path: Path) -> None:
    parsed = parse_capture(write(tmp_path / "handler.log", structured_log()))
    with_events = sum(1 for _, d in POLLS if d["Events"])
    assert parsed.polls == len(POLLS)
    assert parsed.no_document == 2 * len(POLLS) + with_events  # messages, events, blank lines
    assert "sorted by time" in parsed.detail  # newest first


def test_a_curl_loop_with_naive_times_needs_tz(tmp_path: Path) -> None:
    log = write(tmp_path / "curl.log", curl_log())
    naive = r"curl\.log:1: time '2025-09-01 06:00:00' has no zone.*--tz"
    with pytest.raises(BadLineError, match=naive):
        parse_capture(log, skip_bad=True)  # not a bad line to skip: every line would be
    parsed = parse_capture(log, options=LogOptions(tz=parse_tz("UTC")))
    assert (parsed.format, parsed.failed_polls, parsed.polls) == ("curl", 1, len(POLLS) - 1)
    (trace,) = capture_traces(parsed)
    assert_the_episode(trace)


def test_tz_places_naive_times_in_their_zone(tmp_path: Path) -> None:
    log = write(tmp_path / "curl.log", curl_log())
    trace = only_trace(log, tz=parse_tz("Europe/Berlin"))  # UTC+2 in September
    assert trace.started_at == BASE + timedelta(seconds=70) - timedelta(hours=2)


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.ZstdCompressor().compress])
def test_compressed_logs_are_read_as_they_are(
    tmp_path: Path, compress: Callable[[bytes], bytes]
) -> None:
    log = tmp_path / "handler.log.x"
    log.write_bytes(compress(write(tmp_path / "plain", kubectl_log()).read_bytes()))
    plain = parse_capture(tmp_path / "plain")
    packed = parse_capture(log)
    assert packed.episodes == plain.episodes and packed.identity == plain.identity


def test_the_cli_reads_standard_input_and_names_each_shape(tmp_path: Path) -> None:
    text = "".join(line + "\n" for line in curl_log())
    result = runner.invoke(
        app,
        ["ingest", "-", "--tz", "UTC", "--traces-dir", str(tmp_path / "t"), "--format", "json"],
        input=text,
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert [(f["file"], f["shape"], f["polls"], f["failed_polls"]) for f in summary["files"]] == [
        ("<stdin>", "curl (time on its own line; document is the body)", len(POLLS) - 1, 1)
    ]
    (written,) = summary["traces"]
    assert_the_episode(load_trace(tmp_path / "t", written["name"]))


def test_the_cli_error_for_naive_times_names_file_line_and_flag(tmp_path: Path) -> None:
    log = write(tmp_path / "curl.log", curl_log())
    result = runner.invoke(app, ["ingest", str(log), "--traces-dir", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert f"{log}:1: time '2025-09-01 06:00:00' has no zone; say which with --tz" in result.stderr
    assert trace_files(tmp_path / "t") == []


def test_jobs_give_identical_traces(tmp_path: Path) -> None:
    makers = [structured_log, journald_log, kubectl_log, epoch_log]
    logs = [write(tmp_path / f"{m.__name__}.log", m()) for m in makers]
    results = {jobs: parse_files(logs, jobs=jobs) for jobs in (1, 2)}
    traces = {
        jobs: [capture_traces(p) for p in parsed if not isinstance(p, ReplayError)]
        for jobs, parsed in results.items()
    }
    assert len(traces[1]) == len(makers)
    assert traces[1] == traces[2]


def test_a_record_with_two_documents_needs_document_field(tmp_path: Path) -> None:
    lines = [dumps({"time": iso(t), "Event": d, "Previous": doc(0)}) for t, d in POLLS]
    log = write(tmp_path / "two.log", lines)
    with pytest.raises(BadLineError, match=r"two\.log:1: holds 2 documents \(Event, Previous\)"):
        parse_capture(log)
    assert_the_episode(only_trace(log, document_field=parse_path("Event")))


def test_time_field_names_a_nested_time(tmp_path: Path) -> None:
    lines = [dumps({"meta": {"at": iso(t, 6)}, "data": {"doc": d}}) for t, d in POLLS]
    log = write(tmp_path / "nested.log", lines)
    with pytest.raises(BadLineError, match=r"nested\.log:1: a document but no time"):
        parse_capture(log)
    assert_the_episode(only_trace(log, time_field=parse_path("meta.at")))


def test_log_format_forces_a_shape_and_an_unknown_one_asks_for_it(tmp_path: Path) -> None:
    log = write(tmp_path / "odd.log", ["starting", "still starting"])
    with pytest.raises(ReplayError, match=r"odd\.log: cannot tell.*--log-format"):
        parse_capture(log)
    assert parse_capture(log, options=LogOptions(log_format="plain")).no_document == 2


def test_ingest_file_takes_log_options(tmp_path: Path) -> None:
    report = ingest_file(
        write(tmp_path / "curl.log", curl_log()), tmp_path / "t", options=LogOptions(tz=UTC)
    )
    assert report.shape.startswith("curl") and [o.status for o in report.outcomes] == ["added"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"2025-09-01T06:00:00Z x", datetime(2025, 9, 1, 6, tzinfo=UTC)),
        (b"2025-09-01 06:00:00,250+02:00 x", datetime(2025, 9, 1, 4, 0, 0, 250000, tzinfo=UTC)),
        (b"[2025-09-01T06:00:00.123456789Z] x", datetime(2025, 9, 1, 6, 0, 0, 123456, UTC)),
        (b"2025-09-01 06:00:00 UTC x", datetime(2025, 9, 1, 6, tzinfo=UTC)),
        (b"Mon Sep  1 06:00:00 UTC 2025", datetime(2025, 9, 1, 6, tzinfo=UTC)),
        (b"1756706400 x", datetime(2025, 9, 1, 6, tzinfo=UTC)),
        (b"1756706400.5 x", datetime(2025, 9, 1, 6, 0, 0, 500000, tzinfo=UTC)),
        (b"1756706400250 x", datetime(2025, 9, 1, 6, 0, 0, 250000, tzinfo=UTC)),
        (b"2025-09-01T06:00:00 x", datetime(2025, 9, 1, 6)),
        (b"12345 x", None),
        (b"2025-09-01 x", None),
        (b"2025-09-01T06:00:00Zx", None),
    ],
)
def test_line_prefix_times(text: bytes, expected: datetime | None) -> None:
    got = prefix_time(text)
    assert (got[0] if got else None) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-09-01T06:00:00.5Z", datetime(2025, 9, 1, 6, 0, 0, 500000, tzinfo=UTC)),
        (1756706400, datetime(2025, 9, 1, 6, tzinfo=UTC)),
        (1756706400.25, datetime(2025, 9, 1, 6, 0, 0, 250000, tzinfo=UTC)),
        (1756706400250, datetime(2025, 9, 1, 6, 0, 0, 250000, tzinfo=UTC)),
        ("1756706400250000", datetime(2025, 9, 1, 6, 0, 0, 250000, tzinfo=UTC)),
        (1756706400250000000, datetime(2025, 9, 1, 6, 0, 0, 250000, tzinfo=UTC)),
        ("soon", None),
        (True, None),
    ],
)
def test_field_times(value: Any, expected: datetime | None) -> None:
    assert value_time(value) == expected


def test_an_unknown_zone_is_a_user_error() -> None:
    with pytest.raises(ReplayError, match="--tz 'Mars/Olympus' is not a time zone"):
        parse_tz("Mars/Olympus")


def test_a_newer_export_of_the_same_log_names_its_episodes_the_same(tmp_path: Path) -> None:
    """Exported newest first, a log's first line changes with every export; its earliest
    poll does not, and names its episodes."""
    later = [
        dumps({"@timestamp": iso(t), "level": "info", "msg": "poll", "Event": doc(4)})
        for t in range(305, 400, 5)
    ]
    first = ingest_file(write(tmp_path / "export-1.log", structured_log()), tmp_path / "t")
    again = write(tmp_path / "export-2.log", later[::-1] + structured_log())
    second = ingest_file(again, tmp_path / "t")
    assert [o.status for o in first.outcomes] == ["added"]
    # The same episode, updated in place (its source names the new file and its lines).
    assert [(o.name, o.status) for o in second.outcomes] == [(first.outcomes[0].name, "updated")]
    assert len(trace_files(tmp_path / "t")) == 1
