"""Fixtures of the fuzz tests: a planted logger bug the logging property must find."""

from __future__ import annotations

import numpy as np
import pytest

from multi_actor import logger


@pytest.fixture
def logger_crashes_on_float16(monkeypatch):
    """``to_scalar`` raises on float16 values (a planted bug)."""
    original = logger.to_scalar

    def crashing(value):
        if getattr(value, "dtype", None) == np.float16:
            raise TypeError("cannot convert float16 to a JSON scalar")
        return original(value)

    monkeypatch.setattr(logger, "to_scalar", crashing)
