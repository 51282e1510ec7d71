"""Static scan of a target's source for device-to-host syncs (see :mod:`checks.jax_profile.scan.scanner`)."""

from checks.jax_profile.scan.scanner import StaticScan, SyncScanner, scan_sources

__all__ = ["StaticScan", "SyncScanner", "scan_sources"]
