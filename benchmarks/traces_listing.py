"""How long `imds-replay traces` takes to list a large dataset, from a fresh process.

Writes --count synthetic traces (bundles of 5,000, as `imds-replay synth` does) into a temporary
dataset, then runs `imds-replay traces --format json` and `--format table` on it, and on the
shipped reference traces for the floor (interpreter start and imports), --repeat times each.
Prints the best wall time and the CPU time (user + sys) of that run. The target is under 1 s
for 100,000 traces. On a shared machine wall time includes waiting for a CPU; the CPU time
does not.

Run: .venv/bin/python benchmarks/traces_listing.py [--count 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "replay"]


def timed(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of the command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*COMMAND, *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traces-bench-"))
    try:
        dataset = work / "traces"
        synth = ["synth", "--scenario", "live-migration", "--count", str(args.count)]
        subprocess.run(
            [*COMMAND, *synth, "--traces-dir", str(dataset)], check=True, stdout=subprocess.DEVNULL
        )
        files = sum(1 for _ in dataset.glob("*/*.parquet"))
        print(f"{args.count} traces in {files} files; load average {os.getloadavg()[0]:.1f}")
        for label, where in (
            (f"{args.count} traces", dataset),
            ("9 reference traces (the floor)", ROOT / "traces"),
        ):
            for fmt in ("json", "table"):
                runs = [
                    timed(["traces", "--traces-dir", str(where), "--format", fmt])
                    for _ in range(args.repeat)
                ]
                wall, cpu = min(runs)
                print(f"  {label:32} --format {fmt:5}  {wall:5.2f} s wall  {cpu:5.2f} s CPU")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
