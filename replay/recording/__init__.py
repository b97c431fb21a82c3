"""Recording what real VMs saw, and making traces of it.

- `capture_file`: the capture file format and its crash-safe writer.
- `capture`, `capture_http`: polling a real IMDS endpoint into a capture file.
- `capture_main`, `capture_script`: the same capture as one stdlib-only Python 3.8 file.
  capture_file, capture_http, capture and capture_main import only the standard library.
- `sources`: opening what ingest reads (gzip, zstd, stdin).
- `times`, `documents`, `logs`: the log shapes: where a record's time and document are.
- `machine`: the episode state machine, and the capture format's lines.
- `episodes`, `parse`: capture files and logs into episodes (parse is the entry point).
- `ingest`: episodes into labelled traces in the store.
- `synth`, `synth_write`: synthetic traces drawn from the reference or captured timings.
- `fleet_traces`: captures of several VMs that saw the same events into one fleet trace.

May import: replay.errors, replay.clock, replay.core, replay.store.
"""
