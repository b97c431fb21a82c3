"""What users' tests import: ReplayClient (drive a running server), the pytest plugin, and
running a handler unmodified.

Installing imds-replay registers `replay.testing.plugin` with pytest (entry point pytest11),
which provides the `imds_replay` fixture. `fleet`: FleetClient and FleetVm, to drive a fleet
and poll or approve as one of its VMs.

- `client`: ReplayClient, for the control API.
- `plugin`: the `imds_replay` fixture (a server per test, or one shared, a session per test).
- `run`: `imds-replay run` as a library: run_in_namespace, run_handler, ReplaySpec.
- `sandbox`: run's side of CMD's namespaces; `netns`: the helper process inside them.
- `report`: what a run observed (Tally) and says (RunReport, expectations).

May import: everything below it (replay.server, replay.playback, replay.store, replay.core).
"""
