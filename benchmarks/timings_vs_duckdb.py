"""`imds-replay timings` vs DuckDB over 1,000,000 synthetic events, in the same run.

Usage: .venv/bin/python benchmarks/timings_vs_duckdb.py [--events N] [--files N] [--repeat N]

Writes a temporary hive-partitioned dataset in the store's bundle format (SCHEMA, a provenance
list under `imds_replay.traces`): `--files` Parquet files spread over the nine reference
scenarios, each holding events/files single-event traces (empty, Scheduled, Started, empty;
canceled-maintenance skips Started, host-failure skips Scheduled), with phases drawn around the
reference medians and a third of the events approved. Then each engine runs in a fresh
subprocess, alternating: wall and CPU seconds from the file list to the per-scenario medians
(imports excluded for both), and the subprocess's peak RSS. The two answers must agree.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from replay.core.reference import REFERENCE_STARTED_AT, reference_table
from replay.core.timeline import format_rfc1123
from replay.store.footer import FORMAT_VERSION, META_TRACES, META_VERSION
from replay.store.schema import SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def _event_json(eid: str, status: str, scenario: Any, not_before: str) -> str:
    return orjson.dumps(
        {
            "EventId": eid,
            "EventStatus": status,
            "EventType": scenario.event_type,
            "ResourceType": "VirtualMachine",
            "Resources": ["vm-0"],
            "NotBefore": not_before if status == "Scheduled" else "",
            "Description": scenario.description,
            "EventSource": scenario.event_source,
            "DurationInSeconds": scenario.duration_in_seconds,
        }
    ).decode()


def _file_table(name: str, scenario: Any, count: int, rng: np.random.Generator) -> pa.Table:
    """A bundle of count single-event traces of one scenario: the store's schema and metadata."""
    appear = np.round(rng.uniform(5, 120, count))
    notice = np.round((scenario.notice_s or 0) * rng.uniform(0.7, 1.3, count))
    scheduled = np.maximum(notice + np.round(rng.normal(0, 60, count)), 1.0)
    approved = rng.random(count) < 1 / 3
    # an approved event starts soon after the approval instead of waiting for NotBefore
    approve_at = np.round(scheduled * rng.uniform(0.1, 0.5, count))
    scheduled = np.where(approved, approve_at + np.round(rng.uniform(1, 30, count)), scheduled)
    started = np.maximum(np.round((scenario.started_s or 60) * rng.lognormal(0, 0.3, count)), 1.0)
    removed = np.round(
        (scenario.removed_while_scheduled_after_s or 0) * rng.uniform(0.5, 1.5, count)
    )
    cols: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    provenance = []
    has_scheduled = scenario.first_seen_status == "Scheduled"
    has_started = scenario.removed_while_scheduled_after_s is None
    for i in range(count):
        trace = f"{name}-{i:05d}"
        eid = f"{rng.integers(0, 2**63):016X}{i:016X}"
        eid = f"{eid[:8]}-{eid[8:12]}-{eid[12:16]}-{eid[16:20]}-{eid[20:]}"
        t = float(appear[i])
        nb_s = t + float(notice[i])
        nb_at = datetime.fromtimestamp(REFERENCE_STARTED_AT.timestamp() + nb_s, UTC)
        nb = format_rfc1123(nb_at)
        steps: list[tuple[float, str | None]] = [(0.0, None)]
        if has_scheduled:
            steps.append((t, "Scheduled"))
            t += float(scheduled[i]) if has_started else float(removed[i])
        if has_started:
            steps.append((t, "Started"))
            t += float(started[i])
        steps.append((t, None))
        ok = bool(approved[i]) and has_scheduled and has_started
        provenance.append(
            {
                "name": trace,
                "scenario": scenario.scenario,
                "origin": "synthetic",
                "started_at": REFERENCE_STARTED_AT.isoformat(),
                "approvals": [[float(appear[i] + approve_at[i]), [eid]]] if ok else [],
                "source": {"generator": "benchmarks/timings_vs_duckdb.py", "bundle": name},
                "summary": {"events": 1, "documents": len(steps), "duration_s": t},
            }
        )
        for seq, (offset, status) in enumerate(steps):
            event = _event_json(eid, status, scenario, nb) if status else None
            doc = f'{{"DocumentIncarnation":{seq + 1},"Events":[{event or ""}]}}'
            row: dict[str, Any] = {
                "trace": trace,
                "seq": seq,
                "offset_s": offset,
                "incarnation": seq + 1,
                "document": doc,
                "event_index": 0 if status else None,
                "event_id": eid if status else None,
                "event_type": scenario.event_type if status else None,
                "event_status": status,
                "event_source": scenario.event_source if status else None,
                "resource_type": "VirtualMachine" if status else None,
                "resources": ["vm-0"] if status else None,
                "not_before": nb_at if status == "Scheduled" else None,
                "not_before_offset_s": nb_s if status == "Scheduled" else None,
                "duration_s": scenario.duration_in_seconds if status else None,
                "description": scenario.description if status else None,
                "approved_offset_s": float(appear[i] + approve_at[i]) if ok and status else None,
            }
            for key, value in row.items():
                cols[key].append(value)
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    return table.replace_schema_metadata(
        {META_VERSION: str(FORMAT_VERSION).encode(), META_TRACES: orjson.dumps(provenance)}
    )


def write_bundle_file(table: pa.Table, path: Path) -> None:
    """Write a bundle as store.dataset.write_bundle does (no Arrow schema copy in the footer)."""
    metadata = table.schema.metadata or {}
    with pq.ParquetWriter(path, SCHEMA, compression="zstd", store_schema=False) as writer:
        writer.write_table(table.replace_schema_metadata(None))
        writer.add_key_value_metadata({k.decode(): v.decode() for k, v in metadata.items()})


def generate(out: Path, events: int, files: int, seed: int = 0) -> None:
    """Write `events` single-event traces into `files` Parquet files under out."""
    rng = np.random.default_rng(seed)
    scenarios = list(reference_table().values())
    per_file = events // files
    for f in range(files):
        scenario = scenarios[f % len(scenarios)]
        count = per_file + (1 if f < events % files else 0)
        name = f"bench-{f:05d}"
        folder = out / f"scenario={scenario.scenario}"
        folder.mkdir(parents=True, exist_ok=True)
        write_bundle_file(_file_table(name, scenario, count, rng), folder / f"{name}.parquet")


def run_ours(traces_dir: Path) -> list[dict[str, Any]]:
    from analysis.timings import load_events, scenario_stats, to_records

    return to_records(scenario_stats(load_events(traces_dir)))


def run_duckdb(traces_dir: Path) -> list[dict[str, Any]]:
    import duckdb

    from analysis.timings import duckdb_sql

    rows = duckdb.sql(duckdb_sql(f"{traces_dir}/**/*.parquet"))
    names = [d[0] for d in rows.description]
    return [dict(zip(names, r, strict=True)) for r in rows.fetchall()]


def child(engine: str, traces_dir: Path) -> None:
    """Run one engine once and print JSON: seconds, peak RSS and the answer."""
    import duckdb  # noqa: F401  (imports are not part of the timed work for either engine)

    import analysis.timings  # noqa: F401

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    rows = run_ours(traces_dir) if engine == "ours" else run_duckdb(traces_dir)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_mib": rss / 1024,
        "rss_base_mib": rss_before / 1024,
    }
    print(orjson.dumps({**report, "rows": rows}).decode())


def measure(engine: str, traces_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", engine, str(traces_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def close(x: Any, y: Any) -> bool:
        if isinstance(x, float) or isinstance(y, float):
            return x is not None and y is not None and abs(x - y) <= 1e-9 * max(1, abs(x))
        return bool(x == y)

    return len(a) == len(b) and all(
        r.keys() == s.keys() and all(close(r[k], s[k]) for k in r)
        for r, s in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    tmp = None if args.keep else Path(tempfile.mkdtemp(prefix="imds-bench-"))
    traces_dir = args.keep or tmp / "traces"
    try:
        if not (traces_dir / ".complete").exists():
            start = time.perf_counter()
            generate(traces_dir, args.events, args.files)
            (traces_dir / ".complete").touch()
            print(
                f"generated {args.events:,} events in {args.files} files in "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
        size = sum(p.stat().st_size for p in traces_dir.rglob("*.parquet"))
        print(f"dataset: {traces_dir} ({size / 2**20:.0f} MiB), {os.cpu_count()} CPUs")
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "duckdb": []}
        for _ in range(args.repeat):
            for engine in runs:
                runs[engine].append(measure(engine, traces_dir))
        ours, duck = runs["ours"], runs["duckdb"]
        if not same(ours[0]["rows"], duck[0]["rows"]):
            print("ANSWERS DIFFER", ours[0]["rows"], duck[0]["rows"], sep="\n")
            sys.exit(1)
        print(f"answers agree over {sum(r['events'] for r in ours[0]['rows']):,} events")
        for engine, results in runs.items():
            secs = [r["seconds"] for r in results]
            cpu = statistics.median(r["cpu_s"] for r in results)
            print(
                f"{engine:>6}: median {statistics.median(secs):.2f} s "
                f"(runs {', '.join(f'{s:.2f}' for s in secs)}; CPU {cpu:.2f} s), "
                f"peak RSS {max(r['rss_mib'] for r in results):.0f} MiB "
                f"(after imports {results[0]['rss_base_mib']:.0f} MiB)"
            )
        ratio = statistics.median(r["seconds"] for r in ours) / statistics.median(
            r["seconds"] for r in duck
        )
        print(f"ours / duckdb = {ratio:.2f}x (target <= 1.5x)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
