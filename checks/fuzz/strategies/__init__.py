"""hypothesis strategies of the fuzz cases, one module per input kind: valid configs, near-valid configs, ``--set``
overrides, logging payloads and episodes."""
