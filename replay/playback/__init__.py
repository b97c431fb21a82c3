"""Replaying a trace in time: everything here reads time through a Clock.

- `anchor`: the frozen mapping from the clock to trace and wall time; Start and State.
- `anchored`: the control verbs on one anchor (pause, resume, seek, step, advance, speed),
  shared by every replay.
- `rounds`: each loop round's schedule, approvals and EventIds; the shared schedule cache.
- `ticker`: the timer that pushes and logs each transition on time.
- `session`: Session: the anchor, the IMDS poll path, the control verbs.
- `status`: a session's status as JSON values.
- `registry`: the named sessions of one server and the traces they play.
- `push`: outbound push of a replay to a WebSocket server or webhook.
- `fleet`, `fleet_members`, `fleet_host`, `fleet_status`: many VMs on one anchor, their
  timelines and shared approvals, a server's fleet slot, and its status.

May import: replay.errors, replay.clock, replay.core, replay.store.
"""
