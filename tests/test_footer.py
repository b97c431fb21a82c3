"""Listing from footers without pyarrow: the Parquet footer decoder reads what pyarrow writes,
fails clearly on broken files, and `imds-replay traces` never imports pyarrow."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.Thrift import TType
from thrift.transport.TTransport import TMemoryBuffer

from replay.core.timeline import Trace
from replay.errors import InvalidTraceError
from replay.store import parquet_meta
from replay.store.dataset import write_bundle, write_trace
from replay.store.footer import META_TRACES, infos_of, list_traces
from replay.store.parquet_meta import (
    _CHUNK,
    CorruptFooter,
    decode_key_value_metadata,
    key_value_metadata,
)
from tests.helpers import simple_trace
from tests.strategies import traces

metadata = st.dictionaries(
    st.binary(max_size=30).filter(lambda k: not k.startswith(b"ARROW:")),
    st.binary(max_size=300),
    max_size=6,
)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    """Columns whose statistics are raw bytes (floats, ints), text, binary, lists and nulls."""
    n = draw(st.integers(0, 30))

    def column(values: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(values | st.none(), min_size=n, max_size=n))

    return pa.table(
        {
            "f": pa.array(column(st.floats(allow_nan=False)), pa.float64()),
            "i": pa.array(column(st.integers(-(2**31), 2**31 - 1)), pa.int32()),
            "s": pa.array(column(st.text(max_size=8)), pa.string()),
            "b": pa.array(column(st.binary(max_size=8)), pa.binary()),
            "l": pa.array(column(st.lists(st.text(max_size=4), max_size=3)), pa.list_(pa.string())),
        }
    )


def _pyarrow_reads(path: Path) -> dict[bytes, bytes]:
    return dict(pq.read_metadata(path).metadata or {})


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    meta=metadata,
    table=tables(),
    row_group_size=st.integers(1, 40),
    compression=st.sampled_from(["none", "zstd", "snappy"]),
    statistics=st.booleans(),
    page_index=st.booleans(),
    store_schema=st.booleans(),
)
def test_any_metadata_pyarrow_writes_decodes_to_the_same_dict(
    tmp_path: Path,
    meta: dict[bytes, bytes],
    table: pa.Table,
    row_group_size: int,
    compression: str,
    statistics: bool,
    page_index: bool,
    store_schema: bool,
) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "t.parquet"
    pq.write_table(
        table.replace_schema_metadata(meta),
        path,
        row_group_size=row_group_size,
        compression=compression,
        write_statistics=statistics,
        write_page_index=page_index,
        store_schema=store_schema,
    )
    assert key_value_metadata(path) == _pyarrow_reads(path)
    unread = set(list(meta)[::2])
    assert key_value_metadata(path, unread=unread) == {
        k: b"" if k in unread else v for k, v in _pyarrow_reads(path).items()
    }


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(traces(), min_size=1, max_size=3))
def test_trace_files_and_bundles_decode_as_pyarrow_reads_them(
    tmp_path: Path, batch: list[Trace]
) -> None:
    where = Path(tempfile.mkdtemp(dir=tmp_path))
    single = write_trace(batch[0], where)
    renamed = [replace(t, name=f"b-{i}", scenario="pack-scenario") for i, t in enumerate(batch)]
    bundle = write_bundle(renamed, where, "pack")
    for path in (single, bundle):
        assert key_value_metadata(path) == _pyarrow_reads(path)


# Any FileMetaData, encoded by Apache Thrift's own compact protocol (an independent encoder):
# fields of every wire type before and after key_value_metadata, in and around each pair.

SCALARS: dict[int, st.SearchStrategy[Any]] = {
    TType.BOOL: st.booleans(),
    TType.BYTE: st.integers(-128, 127),
    TType.I16: st.integers(-(2**15), 2**15 - 1),
    TType.I32: st.integers(-(2**31), 2**31 - 1),
    TType.I64: st.integers(-(2**63), 2**63 - 1),
    TType.DOUBLE: st.floats(allow_nan=False),
    TType.STRING: st.binary(max_size=40),
    TType.UUID: st.uuids(),
}
field_ids = st.integers(-100, 400)
kinds = st.recursive(
    st.sampled_from(list(SCALARS)),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from([TType.LIST, TType.SET]), inner),
        st.tuples(st.just(TType.MAP), inner, inner),
        st.tuples(
            st.just(TType.STRUCT),
            st.lists(st.tuples(field_ids, inner), max_size=4, unique_by=lambda f: f[0]),
        ),
    ),
    max_leaves=6,
)


def values(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, int):
        return SCALARS[kind]
    if kind[0] in (TType.LIST, TType.SET):
        return st.lists(values(kind[1]), max_size=4)
    if kind[0] == TType.MAP:
        return st.lists(st.tuples(values(kind[1]), values(kind[2])), max_size=3)
    return st.tuples(*(values(k) for _, k in kind[1]))


@st.composite
def fields(draw: st.DrawFn, excluding: set[int]) -> list[tuple[int, Any, Any]]:
    """Fields of any kinds and values, ids unique and not in excluding."""
    chosen = draw(
        st.lists(
            st.tuples(field_ids.filter(lambda i: i not in excluding), kinds),
            max_size=3,
            unique_by=lambda f: f[0],
        )
    )
    return [(fid, kind, draw(values(kind))) for fid, kind in chosen]


def ttype(kind: Any) -> int:
    return kind if isinstance(kind, int) else kind[0]


def write(p: TCompactProtocol, kind: Any, value: Any) -> None:
    t = ttype(kind)
    if t in (TType.LIST, TType.SET):
        (p.writeListBegin if t == TType.LIST else p.writeSetBegin)(ttype(kind[1]), len(value))
        for item in value:
            write(p, kind[1], item)
        (p.writeListEnd if t == TType.LIST else p.writeSetEnd)()
    elif t == TType.MAP:
        p.writeMapBegin(ttype(kind[1]), ttype(kind[2]), len(value))
        for k, v in value:
            write(p, kind[1], k)
            write(p, kind[2], v)
        p.writeMapEnd()
    elif t == TType.STRUCT:
        write_struct(p, [(fid, k, v) for (fid, k), v in zip(kind[1], value, strict=True)])
    else:
        writer = {
            TType.BOOL: p.writeBool,
            TType.BYTE: p.writeByte,
            TType.I16: p.writeI16,
            TType.I32: p.writeI32,
            TType.I64: p.writeI64,
            TType.DOUBLE: p.writeDouble,
            TType.STRING: p.writeBinary,
            TType.UUID: p.writeUuid,
        }[t]
        writer(value)


def write_struct(p: TCompactProtocol, members: list[tuple[int, Any, Any]]) -> None:
    p.writeStructBegin("s")
    for fid, kind, value in members:
        p.writeFieldBegin("f", ttype(kind), fid)
        write(p, kind, value)
        p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), pairs=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=300))))
@pytest.mark.parametrize("chunk", [1, 7, _CHUNK])
def test_any_compact_encoded_file_metadata_decodes_its_key_values(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    data: st.DataObject,
    pairs: list[tuple[bytes, bytes]],
) -> None:
    monkeypatch.setattr(parquet_meta, "_CHUNK", chunk)  # values across chunk boundaries
    around = data.draw(fields({5}))  # FileMetaData's other fields, before and after field 5
    buffer = TMemoryBuffer()
    p = TCompactProtocol(buffer)
    p.writeStructBegin("FileMetaData")
    for fid, kind, value in around:
        if fid > 5:
            continue
        p.writeFieldBegin("f", ttype(kind), fid)
        write(p, kind, value)
        p.writeFieldEnd()
    p.writeFieldBegin("key_value_metadata", TType.LIST, 5)
    p.writeListBegin(TType.STRUCT, len(pairs))
    for key, value in pairs:
        extra = data.draw(fields({1, 2}))
        members = [(1, TType.STRING, key), (2, TType.STRING, value), *extra]
        write_struct(p, data.draw(st.permutations(members)))
    p.writeListEnd()
    p.writeFieldEnd()
    for fid, kind, value in around:
        if fid > 5:
            p.writeFieldBegin("f", ttype(kind), fid)
            write(p, kind, value)
            p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    footer = buffer.getvalue()
    assert decode_key_value_metadata(footer) == dict(pairs)
    path = _with_footer(Path(tempfile.mkdtemp(dir=tmp_path)) / "t.parquet", b"PAR1", footer)
    assert key_value_metadata(path) == dict(pairs)
    unread = {k for k, _ in pairs[::2]}
    assert key_value_metadata(path, unread=unread) == {
        k: b"" if k in unread else v for k, v in dict(pairs).items()
    }


def _bundle_footer(tmp_path: Path) -> tuple[bytes, bytes, int]:
    """A real bundle's bytes before its footer, its footer, and where its metadata ends."""
    path = write_bundle([simple_trace(n) for n in ("x", "y")], tmp_path, "pack")
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length : -8]
    # created_by (field 6: a header byte, a length byte, "parquet-cpp-arrow version ...")
    # follows the key-value list.
    return data[: -8 - length], footer, footer.index(b"parquet-cpp-arrow") - 2


def _with_footer(path: Path, head: bytes, footer: bytes) -> Path:
    path.write_bytes(head + footer + len(footer).to_bytes(4, "little") + b"PAR1")
    return path


def test_a_footer_cut_anywhere_before_its_metadata_ends_is_a_clear_error(tmp_path: Path) -> None:
    head, footer, metadata_end = _bundle_footer(tmp_path)
    assert decode_key_value_metadata(footer[:metadata_end]) == decode_key_value_metadata(footer)
    path = tmp_path / "cut.parquet"
    for cut in range(metadata_end):
        with pytest.raises(InvalidTraceError, match=rf"^{path}: cannot read Parquet: "):
            key_value_metadata(_with_footer(path, head, footer[:cut]))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_corrupt_footer_bytes_decode_or_raise_corrupt_footer_and_nothing_else(
    tmp_path: Path, data: st.DataObject
) -> None:
    footer = data.draw(
        st.binary(max_size=200)
        | st.builds(
            lambda f, at, b: f[:at] + bytes([b]) + f[at + 1 :],
            st.just(_small_footer()),
            st.integers(0, len(_small_footer()) - 1),
            st.integers(0, 255),
        )
    )
    with contextlib.suppress(CorruptFooter):
        decode_key_value_metadata(footer)


_SMALL: list[bytes] = []


def _small_footer() -> bytes:
    """The footer of a small trace file, as pyarrow writes it (made once)."""
    if not _SMALL:
        with tempfile.TemporaryDirectory() as where:
            path = write_trace(simple_trace("small"), Path(where))
            data = path.read_bytes()
            length = int.from_bytes(data[-8:-4], "little")
            _SMALL.append(data[-8 - length : -8])
    return _SMALL[0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"PAR1", "4 bytes is too short for a Parquet file"),
        (b"not parquet at all", r"does not end in PAR1 \(not Parquet, or cut short\)"),
        (b"PAR1" + b"\0" * 8 + (99).to_bytes(4, "little") + b"PAR1", "footer length 99 exceeds"),
        (b"PAR1" + b"\0" * 8 + (8).to_bytes(4, "little") + b"PARE", "footer is encrypted"),
        (b"PAR1" + b"\x19\xfc" + (2).to_bytes(4, "little") + b"PAR1", "ends early"),
    ],
)
def test_a_file_that_is_not_parquet_names_itself_and_why(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(InvalidTraceError, match=rf"^{path}: cannot read Parquet: .*{problem}"):
        key_value_metadata(path)


def test_a_listing_reports_a_cut_bundle_by_path_and_lists_the_rest(tmp_path: Path) -> None:
    write_trace(simple_trace("fine"), tmp_path)
    path = write_bundle([simple_trace(n) for n in ("x", "y")], tmp_path, "pack")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    good, bad = list_traces(tmp_path)
    assert [t.name for t in good] == ["fine"]
    (problem,) = bad
    assert problem.path == path
    assert problem.problem.startswith(f"{path}: cannot read Parquet: ")


def test_a_bundle_listing_seeks_over_the_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_bundle([simple_trace(f"t{i}") for i in range(2000)], tmp_path, "pack")
    footer = int.from_bytes(path.read_bytes()[-8:-4], "little")
    provenance = len(_pyarrow_reads(path)[META_TRACES])
    reads: list[int] = []
    real_open = open

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if file == path:
            read = handle.read
            handle.read = lambda n=-1: reads.append(n) or read(n)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    assert [i.name for i in infos_of(path)] == [f"t{i}" for i in range(2000)]
    assert provenance > 4 * _CHUNK
    assert sum(reads) < footer - provenance + _CHUNK  # at most a chunk of it is read


def test_a_bundle_without_an_index_still_lists_from_its_provenance(tmp_path: Path) -> None:
    from replay.store.footer import META_INDEX
    from replay.store.schema import bundle_table

    path = tmp_path / "scenario=host-maintenance" / "older.parquet"
    path.parent.mkdir()
    table = bundle_table([simple_trace(n) for n in ("u", "v")])
    kept = {k: v for k, v in (table.schema.metadata or {}).items() if k != META_INDEX}
    pq.write_table(table.replace_schema_metadata(kept), path)
    assert [(i.name, i.bundle) for i in infos_of(path)] == [("u", True), ("v", True)]


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_traces_imports_no_pyarrow_numpy_pandas_or_aiohttp(traces_dir: Path, fmt: str) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from replay.cli import app;"
        f"r = CliRunner().invoke(app, ['traces', '--traces-dir', {str(traces_dir)!r},"
        f" '--format', {fmt!r}]);"
        "assert r.exit_code == 0, r.output; sys.stderr.write(r.stdout);"
        "print(sorted(m for m in ('pyarrow', 'numpy', 'pandas', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "9 traces in" in out.stderr or fmt == "json"
    if fmt == "json":
        assert len(orjson.loads(out.stderr)) == 9


def test_an_index_of_other_json_types_lists_the_same_entries(tmp_path: Path) -> None:
    from replay.store.footer import META_INDEX

    path = write_bundle([simple_trace(n) for n in ("x", "y")], tmp_path, "pack")
    meta = _pyarrow_reads(path)
    index = orjson.loads(meta[META_INDEX])
    index.update(events=["1", 1.0], documents=[4, True], duration_s=[700, "700.0"])
    odd = tmp_path / "scenario=host-maintenance" / "odd.parquet"
    table = pq.read_table(path).replace_schema_metadata({**meta, META_INDEX: orjson.dumps(index)})
    pq.write_table(table, odd)
    listed = [(i.name, i.events, i.documents, i.duration_s) for i in infos_of(odd)]
    assert listed == [("x", 1, 4, 700.0), ("y", 1, 1, 700.0)]
    assert [type(v) for v in listed[1]] == [str, int, int, float]
    index.update(events=["one", 1])
    table = table.replace_schema_metadata({**meta, META_INDEX: orjson.dumps(index)})
    pq.write_table(table, odd)
    with pytest.raises(InvalidTraceError, match=rf"{odd}: malformed trace index: invalid literal"):
        infos_of(odd)
