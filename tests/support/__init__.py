"""Helpers that tests and benchmarks share: paths to the real data, recipes, tiny models and runs.

Test modules import from here, never from one another; pytest fixtures built on these helpers live
in ``tests/conftest.py``. ``tests/`` is on ``sys.path`` under pytest (its conftest.py sits there);
benchmarks put it there themselves."""
