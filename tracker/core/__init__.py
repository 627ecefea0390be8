"""The pure core: saga definitions, events, state and the rules that move a saga.

Imports only the standard library (``tests/unit/test_pure_core.py`` and the import contracts
in ``pyproject.toml`` check the whole package): time is passed in, bytes are decoded by the
shell, so the same inputs always give the same state and the same output ids.
"""
