"""The Parquet dataset of traces: the only user of pyarrow in replay/.

- `layout`: where the dataset's folders are, the file layout, trace names.
- `parquet_meta`: a Parquet file's key-value metadata, read from its footer without pyarrow.
- `footer`: what a trace file's footer says (format version, provenance, a bundle's index),
  and the listing built from footers alone; like `layout`, it never imports pyarrow, so
  `imds-replay traces` does not either.
- `schema`: the columns of a trace file; traces to Arrow tables.
- `files`: one file: reading and validating it whole, atomic writes.
- `dataset`: writing in place, scanning (validated) and finding traces.
- `fleet`: fleet traces (a bundle of one trace per VM) by name.

May import: replay.errors, replay.core.
"""
