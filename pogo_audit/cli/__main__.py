"""``python -m pogo_audit.cli``: the ``pogo-audit`` command."""

import sys

from pogo_audit.cli.main import main

sys.exit(main())
