"""Where jax-profile findings point: the line that decides, never the user's glue (the ``--target`` module)."""

from __future__ import annotations

import textwrap

from checks.jax_profile.findings import _update_function, jit_site, miss_site
from checks.jax_profile.targets import JaxTarget
from pogo_audit.model import glue

SOURCE = textwrap.dedent('''
    import jax


    def main():
        def run_eval(params):
            def act(p, x):
                return p * x

            policy = jax.jit(act)
            return policy(params, 1.0)

        @jax.jit
        def once(p):
            return p

        return run_eval, once
''')


def test_a_per_call_jit_is_located_where_the_new_function_is_wrapped(tmp_path):
    path = tmp_path / "trainer.py"
    path.write_text(SOURCE)
    lines = [line.strip() for line in SOURCE.splitlines()]
    def_line = lines.index("def act(p, x):") + 1
    assert jit_site(str(path), def_line) == lines.index("policy = jax.jit(act)") + 1
    decorated = lines.index("@jax.jit") + 1
    assert jit_site(str(path), decorated) is None  # a decorated def: no wrapping call, the def is the place


def test_a_cache_miss_is_located_at_the_call_and_never_in_glue(tmp_path):
    trainer, adapter = tmp_path / "trainer.py", tmp_path / "adapter.py"
    trainer.write_text(SOURCE)
    adapter.write_text("x = 1\n")
    text = f"TRACING CACHE MISS at {trainer}:11:15 (main) costing 3 ms because:\n  for act defined at {trainer}:7"
    assert miss_site(text)[1] == 11
    with glue.declared([trainer]):
        assert miss_site(text) is None
    assert miss_site("TRACING CACHE MISS at <string>:1 because") is None


def test_not_jitted_names_the_update_function_not_the_glue(tmp_path, monkeypatch):
    trainer, adapter = tmp_path / "wild_trainer.py", tmp_path / "wild_glue.py"
    trainer.write_text("def update(state):\n    return state + 1\n")
    adapter.write_text("import wild_trainer\n\n\ndef step():\n    return wild_trainer.update(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import wild_glue
    import wild_trainer

    target = JaxTarget(name="t", step=wild_glue.step, scan_roots={"step": wild_trainer.update})
    with glue.declared([adapter]):
        (path, line), why = _update_function(target)
        assert path.endswith("wild_trainer.py") and line == 1 and why == ""
        bare = JaxTarget(name="t", step=wild_glue.step)
        (path, line), why = _update_function(bare)
        assert path is None and "not located" in why
