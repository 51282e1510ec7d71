"""Property-based fuzzing of the config, logging and data layers with hypothesis.

Small strategies (:mod:`checks.fuzz.strategies`) generate valid and near-valid multi-actor configs (as the YAML
mappings ``from_dict`` reads), ``--set`` overrides, logging payloads and Minari-like episodes. Each property
(:mod:`checks.fuzz.properties`) is a plain function that raises on a violation, so pytest can call it directly.
:func:`checks.fuzz.runner.run_fuzz` runs the properties of a target (:mod:`checks.fuzz.registry`) under explicit
hypothesis settings and returns one :class:`~pogo_audit.model.results.CheckResult` per property.

Nothing is imported here: importing :mod:`checks.fuzz.targets` (the CLI does at start-up) must not pull in torch and
hypothesis.
"""
