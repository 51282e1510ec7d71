"""The top layer: the ``pogo-audit`` command line (:mod:`pogo_audit.cli.main`) and its rich renderables. Only this
package prints."""

from pogo_audit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
