"""The results model every check produces and every renderer reads: check results, divergences, crash findings,
notes and listings (JSON with a schema version)."""
