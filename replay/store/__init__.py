"""The Parquet dataset of traces: the only user of pyarrow in replay/.

- `schema`: the columns and footer metadata of a trace file; traces to Arrow tables.
- `files`: one file: its footer, reading and validating it, atomic writes.
- `dataset`: the folder layout, trace names, writing in place, scanning and finding traces.
- `fleet`: fleet traces (a bundle of one trace per VM) by name.

May import: replay.errors, replay.core.
"""
