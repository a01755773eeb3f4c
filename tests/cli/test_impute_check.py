"""``benchmarks/impute_check.py``: the imputed window holds every request of the span, and
an unknown scenario is a one-line error."""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import pytest
from support.bench import load_benchmark


def test_imputed_spans_hold_every_request_the_finished_ones_do_not() -> None:
    mod = load_benchmark("impute_check")
    a = argparse.Namespace(requests=200, phase_s=60.0, round_every_s=20.0)
    out = mod.check("code-reasoning-slo", 0, a)
    assert out["n_imp"] and all(x == 1.0 for x in out["n_imp"])
    assert min(out["n_fin"]) < 1.0  # some span had unfinished requests left out
    # the replay's work is closer to the truth with the unfinished requests imputed
    err = [abs(math.log(x)) for x in out["w_imp"]]
    err_fin = [abs(math.log(x)) if x > 0 else math.inf for x in out["w_fin"]]
    assert statistics.median(err) < statistics.median(err_fin)


def test_unknown_scenario_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load_benchmark("impute_check")
    monkeypatch.setattr(sys, "argv", ["impute_check", "--scenarios", "nope"])
    with pytest.raises(SystemExit, match="unknown scenario 'nope'"):
        mod.main()
