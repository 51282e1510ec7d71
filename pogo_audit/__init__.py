"""pogo-audit: machine-checked evidence that a multi-actor (POGO) trainer still runs the original algorithm."""

__version__ = "0.1.0"
