"""Recording what real VMs saw, and making traces of it.

- `capture_file`: the capture file format and its crash-safe writer.
- `capture`: polling a real IMDS endpoint into a capture file.
- `episodes`, `parse`: capture files and logs into episodes.
- `ingest`: episodes into labelled traces in the store.
- `synth`, `synth_write`: synthetic traces drawn from the reference or captured timings.
- `fleet_traces`: captures of several VMs that saw the same events into one fleet trace.

May import: replay.errors, replay.clock, replay.core, replay.store.
"""
