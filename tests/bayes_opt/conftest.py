"""Fixtures for the bayes_opt tests; fakes live in ``bo_fakes``."""

from __future__ import annotations

import optuna
import pytest
from bo_fakes import make_trace

from tailwise.simulator.traces import Trace

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def trace() -> Trace:
    return make_trace()
