"""``jax-profile --target jax_research_target:research_target``: ``jax_research_script.main()`` driven as a
generator, one training-loop body (update, logging, the inline evaluation when due) per ``step()``.

Load with ``PYTHONPATH=tests/jax_profile``. Nothing of the script is copied; what the ``--target`` contract
(``checks/jax_profile/targets.py``) made this adapter do or work around:

* ``step()`` must return something to wait on: the script yields one ``SimpleNamespace`` (not a pytree, so the
  profiler's ``wait`` would see no array in it), hence ``step()`` returns the train states it holds.
* ``evaluate()`` needs the evaluation closure, which exists only inside the running ``main()``: the script had to
  hand ``run_eval`` out through what it yields (``run.evaluate``), and ``evaluate()`` can only be called after a
  ``step()``.
* Host-memory growth counts only when the target's *object state* grows too (``memory.state_bytes`` over the
  object's ``__dict__``); a generator's frame is not followed, so the log list that ``main()`` keeps in a local
  would be invisible. The script had to expose it (``run.log``) and this object keeps ``run`` as an attribute.
* ``num_updates`` must outlast every probe (warm-up + steady + runtime + memory + timing + eager steps); the
  script's own default (40) would run out, so it is raised here. The first-transfer probe (``transfer_guard
  "disallow"``) cuts a step short with an exception, which finishes a generator for good: any ``step()`` after it
  raises ``StopIteration``.
* There is no single jitted step function to name as ``step_fn`` (the update is three jitted closures and an eager
  one inside ``main``), and the static scan cannot follow ``next(generator)``: ``scan_roots`` points it at
  ``main`` itself. Without it (``step()`` + ``evaluate()`` only, the contract's minimum) the profile fails with a
  false "step is not jitted: step() calls no jax.jit function (static scan) and its first call compiled none of the
  scanned functions", located at this file's ``step``, and every compile row folds into "(library jits / eager
  ops)", since the jit evidence and the function names both come from the scanned files.
* ``jit_evidence`` is all-or-nothing: one jitted call reachable from ``step`` makes the step "jitted", so the eager
  part of the update cannot be reported as such through this contract.
"""

from __future__ import annotations

import jax_research_script as script


class ResearchTarget:
    loop = "step"
    scan_roots = {"step": script.main}
    batch_size = script.Config.batch_size
    training_steps = 1_000_000

    def __init__(self, **config) -> None:
        self.run = None
        self._updates = script.main(script.Config(**{"num_updates": 100_000, **config}))

    def step(self):
        self.run = next(self._updates)
        return self.run.critic_state, self.run.actor_states

    def evaluate(self):
        return self.run.evaluate()


def research_target() -> ResearchTarget:
    return ResearchTarget()


def steady_research_target() -> ResearchTarget:
    """The same script with a constant BC weight (``bc_decay=0``): no per-update recompile, so the host-memory probe
    and the timings run (the answer key's first interaction)."""
    return ResearchTarget(bc_decay=0.0)
