"""Where traces live: the dataset's folders, its layout, and trace names (no pyarrow here).

Layout: `<traces_dir>/scenario=<scenario>/<name>.parquet` (hive-partitioned by scenario). Only
this module knows it; ingest, synth and analysis ask it. Trace names are unique in the dataset.

Where: `--traces-dir` or `$IMDS_REPLAY_TRACES` when given; else in a checkout its `traces/`;
else (installed from a wheel) the user's data directory, which writes go to, read together with
the reference traces shipped inside the package (never written to).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

from replay.errors import ReplayError

TRACES_ENV = "IMDS_REPLAY_TRACES"


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


APP_NAME = "imds-replay"
_PACKAGE = Path(__file__).resolve().parent.parent  # replay/


def checkout_traces_dir() -> Path | None:
    """The traces/ of the checkout this package runs from, or None when installed."""
    checkout = _PACKAGE.parent / "traces"
    if (_PACKAGE.parent / "pyproject.toml").exists() and checkout.is_dir():
        return checkout
    return None


def shipped_traces_dir() -> Path:
    """The reference traces installed with the package (read only)."""
    return _PACKAGE / "_traces"


def user_traces_dir() -> Path:
    """The user's own traces when installed: under the platform's user data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "traces"


def default_traces_dir() -> Path:
    """$IMDS_REPLAY_TRACES, else the checkout's traces/, else the user's data directory."""
    env = os.environ.get(TRACES_ENV)
    if env:
        return Path(env)
    return checkout_traces_dir() or user_traces_dir()


def dataset_dirs(traces_dir: Path) -> list[Path]:
    """The folders the dataset at traces_dir spans, the one written to first: the user's data
    directory also reads the reference traces shipped with the package."""
    shipped = shipped_traces_dir()
    if traces_dir == user_traces_dir() and shipped.is_dir() and shipped != traces_dir:
        return [traces_dir, shipped]
    return [traces_dir]


def location_of(path: Path) -> str:
    """Where a trace file lives, for listings: shipped (with the package), user (the data
    directory), checkout (its traces/), or dataset (--traces-dir, $IMDS_REPLAY_TRACES)."""
    if path.is_relative_to(shipped_traces_dir()):
        return "shipped"
    if path.is_relative_to(user_traces_dir()):
        return "user"
    checkout = checkout_traces_dir()
    if checkout is not None and path.is_relative_to(checkout):
        return "checkout"
    return "dataset"


def check_name(name: str, what: str = "trace name") -> str:
    """Return name if it is safe as a file or folder name, else raise ReplayError."""
    if not NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ReplayError(
            f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def scenario_of_file(path: Path) -> str:
    """The scenario a trace file sits under, from its folder `scenario=<name>`."""
    return path.parent.name.removeprefix("scenario=")


def scenario_files(traces_dir: Path, scenario: str) -> list[Path]:
    """The trace files in one scenario's folder, sorted (none when it has no folder)."""
    folder = traces_dir / f"scenario={check_name(scenario, 'scenario')}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def episode_files(traces_dir: Path, episode: str) -> list[Path]:
    """The files of an ingested episode, whatever scenario it was labelled (`*-<episode>`)."""
    return sorted(traces_dir.glob(f"scenario=*/*-{check_name(episode, 'episode')}.parquet"))


def trace_path(traces_dir: Path, scenario: str, name: str) -> Path:
    """Where a trace (or bundle) of this scenario and name lives."""
    return (
        traces_dir / f"scenario={check_name(scenario, 'scenario')}" / f"{check_name(name)}.parquet"
    )


def trace_files(traces_dir: Path) -> list[Path]:
    """Every trace file in the dataset (all its dataset_dirs), sorted per folder, the written
    folder first; temporary files are never listed."""
    return [
        p
        for root in dataset_dirs(traces_dir)
        if root.is_dir()
        for p in sorted(root.glob("scenario=*/*.parquet"))
        if not p.name.startswith(".")
    ]
