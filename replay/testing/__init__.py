"""What users' tests import: ReplayClient (drive a running server) and the pytest plugin.

Installing imds-replay registers `replay.testing.plugin` with pytest (entry point pytest11),
which provides the `imds_replay` fixture. `fleet`: FleetClient and FleetVm, to drive a fleet
and poll or approve as one of its VMs.

May import: everything below it (replay.server, replay.playback, replay.store, replay.core).
"""
