"""``checks.jax_profile.compiles``: the session counts compiles per function and phase, captures JAX's cache-miss
explanations, and restores the jax config and logger."""

from __future__ import annotations

import logging

import jax

from checks.jax_profile.compiles import ProfileSession, explanation_gist, explanations_gist


def test_session_restores_config_and_logger():
    logger = logging.getLogger("jax")
    handlers, level = list(logger.handlers), logger.level
    before = jax.config.jax_explain_cache_misses
    with ProfileSession() as session:
        assert jax.config.jax_explain_cache_misses is True

        @jax.jit
        def twice(x):
            return 2 * x

        with session.phase("steady"):
            twice(jax.numpy.ones(2))
            twice(jax.numpy.ones(3))
    assert jax.config.jax_explain_cache_misses == before
    assert logger.handlers == handlers and logger.level == level
    row = next(r for r in session.function_table({"twice"}) if r["name"] == "twice")
    assert row["compiles"] == 2 and row["compiles_after_warmup"] == 2
    assert any("f32[3]" in t or "float32[3]" in t for t in row["cache_miss_explanations"])


def test_explanation_gists_are_one_line():
    redefined = "TRACING CACHE MISS at f.py:3 because:\n  the function was re-defined repeatedly"
    changed = ("TRACING CACHE MISS at f.py:3 because:\n  for sgd_step defined at f.py:1\n"
               "  * at lr, now 0.1 and before 0.05\n  * see https://jax.readthedocs.io/x for more")
    assert explanation_gist(redefined).startswith("new function object on every call")
    assert explanation_gist(changed) == "at lr, now 0.1 and before 0.05; see  for more"
    assert explanations_gist([changed, changed, redefined]) == "at lr, now 0.1 and before 0.05; see  for more (+2 more like it)"
    assert explanations_gist([]) == ""
