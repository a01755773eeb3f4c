"""Helpers shared by several test directories (importable as ``support``: pytest puts
``tests/`` on ``sys.path`` through ``tests/conftest.py``)."""
