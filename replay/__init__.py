"""imds-replay: record Azure IMDS Scheduled Events and play them back at any speed."""

__version__ = "0.1.0"
