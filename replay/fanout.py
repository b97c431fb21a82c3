"""Offering one push to many connections at once, on every CPU the process may use.

On loopback a send() of a few hundred bytes costs about 13 microseconds of kernel time on the
project's 2-core machines (the same in C; benchmarks/push_fanout.py prints this floor), so
1,000 subscribers take 13 ms from one thread. The kernel work runs without the GIL, so helper
threads taking their share of the connections at the same time cut that by the number of
CPUs.

The caller (the event loop's thread) takes the first share itself and waits for the helpers
before it returns, so nothing else on the loop runs meanwhile: no connection is written by two
threads at once, none changes state or is closed while a helper looks at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from replay.cpus import usable_cpus

PER_THREAD_MIN = 32
"""Fewer connections than this per thread are offered by the calling thread alone: waking a
helper costs about as much as a few sends."""

HELPERS = usable_cpus() - 1
"""Helper threads by default: one fewer than the CPUs this process may run on."""

_pool: ThreadPoolExecutor | None = None


class Offerable(Protocol):
    def offer(self, data: bytes) -> int:
        """Write data now if possible: the bytes written, or a negative code."""
        ...


def offer_all(
    targets: Sequence[Offerable], data: bytes, *, helpers: int | None = None
) -> list[int]:
    """target.offer(data) for every target, spread over the calling thread and helpers.

    helpers (default HELPERS, at most 31) bounds the threads that join the calling one.
    """
    results = [0] * len(targets)
    threads = 1 + min(HELPERS if helpers is None else helpers, len(targets) // PER_THREAD_MIN - 1)
    if threads <= 1:
        _offer_range(targets, data, results, 0, len(targets))
        return results
    global _pool
    if _pool is None:  # threads start as they are first needed, and idle ones are reused
        _pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="push-fanout")
    share = -(-len(targets) // threads)
    bounds = [(lo, min(lo + share, len(targets))) for lo in range(0, len(targets), share)]
    futures = [_pool.submit(_offer_range, targets, data, results, lo, hi) for lo, hi in bounds[1:]]
    _offer_range(targets, data, results, *bounds[0])
    for future in futures:
        future.result()
    return results


def _offer_range(
    targets: Sequence[Offerable], data: bytes, results: list[int], lo: int, hi: int
) -> None:
    for i in range(lo, hi):
        results[i] = targets[i].offer(data)
