"""What the `imds_replay` fixture costs a test: per-test servers against one shared server.

Writes a test file of N tests three ways (no fixture; `imds_replay` with the default
`imds_replay_server = per-test`; the same with `shared`) and runs each with pytest in a fresh
process, R rounds in turns. A conftest times every test's whole protocol (setup, call,
teardown; the shared server's start and stop fall in the first and last test), so interpreter
start-up, which varies by seconds on a busy machine, stays out. Prints, per way, the median
over rounds of the summed test time, and the overhead per test: (that sum with the fixture -
the sum without) / N. Goal: shared <= 5 ms per test.

Example: .venv/bin/python benchmarks/fixture_overhead.py --tests 40 --rounds 5 --body start
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_MS = 5.0
MODES = {
    "empty": ("", "def test_{i}():\n    pass\n"),
    "per-test": ("imds_replay_server = per-test\n", "def test_{i}(imds_replay):\n    {body}\n"),
    "shared": ("imds_replay_server = shared\n", "def test_{i}(imds_replay):\n    {body}\n"),
}
BODIES = {"pass": "pass", "start": 'imds_replay.start("user-reboot", virtual=True)'}


CONFTEST = """
import time
import pytest

SPENT = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    began = time.perf_counter()
    yield
    SPENT.append(time.perf_counter() - began)


def pytest_sessionfinish(session):
    with open("spent.txt", "w") as f:
        f.write(repr(sum(SPENT)))
"""


def write(root: Path, mode: str, tests: int, body: str) -> Path:
    folder = root / mode
    folder.mkdir()
    ini, test = MODES[mode]
    loop_scope = "asyncio_default_fixture_loop_scope = function"
    (folder / "pytest.ini").write_text(f"[pytest]\n{loop_scope}\n{ini}")
    (folder / "conftest.py").write_text(CONFTEST)
    tests_text = "\n\n".join(test.format(i=i, body=body) for i in range(tests))
    (folder / "test_many.py").write_text(tests_text)
    return folder


def run_once(folder: Path, tests: int) -> float:
    """Seconds the tests took, summed (start-up and collection left out)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or f"{tests} passed" not in proc.stdout:
        raise SystemExit(f"pytest failed in {folder}:\n{proc.stdout}\n{proc.stderr}")
    return float((folder / "spent.txt").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--body",
        choices=BODIES,
        default="pass",
        help="what each test does: nothing, or start a trace (virtual time)",
    )
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, {args.tests} tests, "
        f"each: {BODIES[args.body]}"
    )
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        body = BODIES[args.body]
        folders = {mode: write(Path(tmp), mode, args.tests, body) for mode in MODES}
        for rnd in range(args.rounds):
            order = list(MODES) if rnd % 2 == 0 else list(reversed(MODES))
            for mode in order:
                times[mode].append(run_once(folders[mode], args.tests))
    base = statistics.median(times["empty"])
    for mode, runs in times.items():
        median = statistics.median(runs)
        per_test_ms = (median - base) / args.tests * 1000
        listed = " ".join(f"{t:.3f}" for t in runs)
        extra = "" if mode == "empty" else f"; overhead {per_test_ms:.1f} ms per test"
        print(f"{mode:>8}: tests took {median:.3f} s in all, median (runs: {listed}){extra}")
    shared_ms = (statistics.median(times["shared"]) - base) / args.tests * 1000
    verdict = "met" if shared_ms <= GOAL_MS else "NOT met"
    print(f"goal: shared <= {GOAL_MS:g} ms per test: {verdict} ({shared_ms:.1f} ms)")


if __name__ == "__main__":
    main()
