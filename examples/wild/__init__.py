"""The wild corpus: research-style multi-actor POGO trainers with planted defects and machine-checkable answer keys.

See ``examples/wild/README.md``. Trainer files (``pogo_*.py``) import only torch/numpy/stdlib; each has an answer key
``<trainer>.answers.json``, an adapter ``<short>_adapter.py`` (the Trainer protocol) and is built with any subset of
its defects fixed by :mod:`examples.wild.corpus`.
"""
