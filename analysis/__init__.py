"""Timing statistics over the trace store (pandas lives here, not in replay/)."""
