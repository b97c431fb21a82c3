"""The pure core: what a replay serves, as functions of trace time. No I/O, no clock reads.

- `timeline`: a trace as IMDS documents at offsets; the rules a trace must keep.
- `schedule`: approvals reshape a trace's future into a round's transitions.
- `imds`: the wire format per api-version (rendering, error bodies, versions).
- `instance`: who the VM is (/metadata/instance): InstanceIdentity, sub-paths, format=text.
- `reference`: the shipped reference scenarios (scenarios.json) as traces.
- `faults`: fault playbooks and the per-client rate limiter, as data and pure draws.
- `speed`: speed factors as users write them.
- `fleet`: the fleet file (groups, VMs and their addresses), VM identities, fleet traces.
- `rollout`: a group's events rolled out per fault domain (or together) as a schedule.

May import: the standard library, orjson, replay.errors. Not aiohttp, pyarrow, pandas, or the
clock (a test keeps them out).
"""
