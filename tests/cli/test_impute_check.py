"""``benchmarks/impute_check.py``: the imputed window holds every request of the span, and
an unknown scenario is a one-line error."""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> object:
    spec = importlib.util.spec_from_file_location("bench_impute_check", BENCH / "impute_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_imputed_spans_hold_every_request_the_finished_ones_do_not() -> None:
    mod = _load()
    a = argparse.Namespace(requests=200, phase_s=60.0, round_every_s=20.0)
    out = mod.check("code-reasoning-slo", 0, a)  # type: ignore[attr-defined]
    assert out["n_imp"] and all(x == 1.0 for x in out["n_imp"])
    assert min(out["n_fin"]) < 1.0  # some span had unfinished requests left out
    # the replay's work is closer to the truth with the unfinished requests imputed
    err = [abs(math.log(x)) for x in out["w_imp"]]
    err_fin = [abs(math.log(x)) if x > 0 else math.inf for x in out["w_fin"]]
    assert statistics.median(err) < statistics.median(err_fin)


def test_unknown_scenario_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _load()
    monkeypatch.setattr(sys, "argv", ["impute_check", "--scenarios", "nope"])
    with pytest.raises(SystemExit, match="unknown scenario 'nope'"):
        mod.main()  # type: ignore[attr-defined]
