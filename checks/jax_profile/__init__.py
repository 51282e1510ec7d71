"""JAX performance profile of a training loop: compiles, retraces, host syncs, host-to-device transfers, jit gains.

A *target* (:mod:`~checks.jax_profile.targets`) is what gets profiled: ``step()`` runs one update, the optional
``epoch()`` runs ``updates_per_epoch`` updates in one jitted ``scan``/``fori_loop``; users pass their own with
``--target pkg.mod:factory``. What is measured, in one process (:func:`profile_target`):

* per jitted function name: jaxpr traces and backend compiles, in total and after the warm-up (must be 0), with the
  ``jax_explain_cache_misses`` explanation of every miss after the warm-up (:mod:`~checks.jax_profile.compiles`);
* host-to-device transfers during the steady-state loop and the first culprit's location
  (:mod:`~checks.jax_profile.transfers`);
* device-to-host syncs measured at run time (:mod:`~checks.jax_profile.runtime`): the conversions of a concrete
  ``jax.Array`` to the host (``__array__``, ``float``/``int``/``bool``/``__index__``, ``.item()``, ``.tolist()``,
  ``jax.device_get``, ``np.asarray`` of an array) are intercepted during the measured calls, each at the user's line
  and counted per call, so per-step syncs are told from one-time ones;
* a static scan (``ast``) of the source reachable from ``step``/``epoch`` for device-to-host syncs, each with
  file:line and whether it is inside jitted code or the Python step loop (:mod:`~checks.jax_profile.scan`): the
  second opinion, and the only view of jitted code;
* host-memory growth per call of the training loop (:mod:`~checks.jax_profile.memory`);
* the target's ``evaluate()``, when it has one: compiles on every evaluation (a jitted function re-created per call);
* whether ``step`` runs a ``jax.jit`` function at all (:func:`~checks.jax_profile.findings.jit_evidence`), and for a
  step that does not, what jit would gain (:mod:`~checks.jax_profile.jit_gain`);
* wall-time ratios measured side by side (:mod:`~checks.jax_profile.timing`): a Python loop of steps over one epoch
  with the same number of updates, and ``step`` under ``jax.disable_jit()`` over ``step`` jitted. Reported, never
  asserted.

Verdict ``fail`` on: a compile after the warm-up, a step that is not jitted, a host sync inside jitted code, in every
measured step of a step-trained loop or once per update in every measured epoch, host-to-device transfers on every
step of a step-trained loop, unbounded host-memory growth, a compile on every evaluation. Notes (reported, not
failing): per-epoch and per-evaluation transfers and syncs, syncs in some steps only (evaluation, setup), those of the
per-update API of an epoch-trained target whose measured epochs do not sync (the reference's ``train_step`` returns
host floats by design; CORL trains by epochs), probes that stopped (a generator target running out). The target
contract is documented in ``examples/README.md`` ("Profiling your JAX trainer").
"""

from checks.jax_profile.compiles import OTHER_ROW, ProfileSession, explanations_gist
from checks.jax_profile.profile import CHECK, profile_algo, profile_target
from checks.jax_profile.scan import StaticScan, scan_sources
from checks.jax_profile.targets import (
    JaxTarget,
    as_target,
    load_target,
    multi_actor_targets,
    rebrac_target,
    synthetic_buffer,
)

__all__ = [
    "CHECK", "OTHER_ROW", "JaxTarget", "ProfileSession", "StaticScan", "as_target", "explanations_gist",
    "load_target", "multi_actor_targets", "profile_algo", "profile_target", "rebrac_target", "scan_sources",
    "synthetic_buffer",
]
