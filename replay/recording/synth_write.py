"""Writing synthetic traces: bundles of a plan, one process per CPU, identical for any --jobs."""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from replay.cpus import usable_cpus
from replay.errors import ReplayError
from replay.recording.synth import Plan, SynthOptions, bundle_name, synth_traces
from replay.store.dataset import scan, write_bundle
from replay.store.footer import infos_of
from replay.store.layout import scenario_files


@dataclass(frozen=True, slots=True)
class SynthResult:
    """What a run wrote: bundle paths, trace count, and stale bundles of an earlier run removed."""

    paths: list[Path]
    traces: int
    removed: list[Path]


def _owned(options: SynthOptions, traces_dir: Path) -> dict[Path, int]:
    """This prefix and seed's bundles already in the dataset (synthetic only), by chunk number."""
    pattern = re.compile(re.escape(f"{options.prefix}-s{options.seed}-part") + r"(\d{4,})")
    owned = {}
    for path in scenario_files(traces_dir, options.scenario):
        match = pattern.fullmatch(path.stem)
        try:
            infos = infos_of(path) if match else []
        except ReplayError:
            continue  # not ours to replace or remove; write_bundle says why if it is in the way
        if match and infos and all(i.bundle and i.origin == "synthetic" for i in infos):
            owned[path] = int(match.group(1))
    return owned


def _check_names_free(options: SynthOptions, traces_dir: Path, owned: Sequence[Path]) -> None:
    """Refuse when one of this run's trace names is used by a file the run will not rewrite."""
    pattern = re.compile(re.escape(f"{options.prefix}-s{options.seed}-") + r"(\d{6,})")
    good, bad = scan(traces_dir, validate_all=False)
    for path, name in [(i.path, i.name) for i in good] + [(b.path, b.trace) for b in bad]:
        match = pattern.fullmatch(name or "")
        if match and int(match.group(1)) < options.count and path not in owned:
            raise ReplayError(
                f"trace name {name!r} is already used by {path}; pick another --name or --seed"
            )


def write_synth(
    plan: Plan,
    traces_dir: Path,
    progress: Callable[[int], None] | None = None,
    *,
    jobs: int | None = None,
) -> SynthResult:
    """Write the plan's traces in bundles of per_file; re-running replaces this seed's bundles.

    Bundles are written by `jobs` processes at once (default: the CPUs available; 1 writes
    in this process). Each bundle is its own atomic file and depends only on the plan and its
    number, so the files are the same for any jobs. progress(n) is called with the number of
    traces done so far.
    """
    o = plan.options
    owned = _owned(o, traces_dir)
    _check_names_free(o, traces_dir, list(owned))
    chunks = -(-o.count // o.per_file)
    jobs = min(chunks, jobs or usable_cpus())
    if jobs <= 1:
        paths = [_write_chunk(plan, traces_dir, chunk, progress) for chunk in range(chunks)]
    else:
        paths = _write_chunks_in_parallel(plan, traces_dir, chunks, jobs, progress)
    # Bundles of an earlier, larger run with this prefix and seed would be stale: remove them.
    removed = [p for p, chunk in owned.items() if chunk >= len(paths)]
    for path in removed:
        path.unlink()
    return SynthResult(paths, o.count, removed)


def _chunk(options: SynthOptions, chunk: int) -> range:
    """The indexes of the traces in bundle number `chunk`."""
    start = chunk * options.per_file
    return range(start, min(start + options.per_file, options.count))


def _write_chunk(
    plan: Plan, traces_dir: Path, chunk: int, progress: Callable[[int], None] | None = None
) -> Path:
    """Generate and write bundle number `chunk` (per_file traces from chunk * per_file)."""
    indexes = _chunk(plan.options, chunk)
    batch = []
    for trace in synth_traces(plan, indexes.start, indexes.stop):
        batch.append(trace)
        if progress is not None and len(batch) % 500 == 0:
            progress(indexes.start + len(batch))
    path = write_bundle(batch, traces_dir, bundle_name(plan.options, chunk))
    if progress is not None:
        progress(indexes.stop)
    return path


def _write_chunks_in_parallel(
    plan: Plan,
    traces_dir: Path,
    chunks: int,
    jobs: int,
    progress: Callable[[int], None] | None,
) -> list[Path]:
    """Bundles from worker processes (spawned: forking a process with threads can hang)."""
    paths: dict[int, Path] = {}
    done = 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_write_chunk, plan, traces_dir, c): c for c in range(chunks)}
        try:
            for future in as_completed(futures):
                chunk = futures[future]
                paths[chunk] = future.result()
                done += len(_chunk(plan.options, chunk))
                if progress is not None:
                    progress(done)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return [paths[c] for c in range(chunks)]
