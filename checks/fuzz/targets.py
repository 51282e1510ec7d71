"""The fuzz targets ``pogo-audit fuzz --target`` accepts (kept free of heavy imports: the CLI reads them at start-up)."""

from __future__ import annotations

TARGETS = ("configs", "logging", "data", "candidates", "all")
