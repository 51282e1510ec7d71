"""The candidate's optional adapter hooks, exercised like our own code is: config validation and the logging path
fuzzed with hypothesis, checkpoints under injected faults. Used by ``pogo-audit hooks`` and ``report --candidate``.

Hooks are looked up on the trainer the factory builds, then in the factory's module (``make_config`` is usually a
module-level function): ``make_config(**fields)``, ``log(metrics, step)`` (+ optional ``read_log()``),
``save_checkpoint(path)`` / ``load_checkpoint(path)``.
"""
