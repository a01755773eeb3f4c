"""The ``operator`` objective on hand-built summaries: it ranks candidates the way an
operator would read their dashboards, is 0 at the baseline, and refuses bad weights."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.bayes_opt.objective import (
    OPERATOR_TERMS,
    ObjectiveConfig,
    ObjectiveError,
    Weights,
    evaluate,
    gain,
    log_ratios,
)

CFG = ObjectiveConfig()


def cls(ttft_mean: float = 1.0, ttft_p99: float = 4.0, slo: float = 0.9,
        n: int = 100) -> dict[str, Any]:
    return {"requests": n, "ttft": {"mean": ttft_mean, "p99": ttft_p99}, "slo_attainment": slo}


def summ(ttlt_p99: float = 20.0, wasted: int = 0, **classes: dict[str, Any]) -> dict[str, Any]:
    classes = classes or {"interactive": cls(), "batch": cls(5.0, 30.0, 0.95, 400)}
    n = sum(c["requests"] for c in classes.values())
    return {"overall": {"requests": n, "ttlt": {"p99": ttlt_p99},
                        "wasted_recompute_tokens": wasted}, "classes": classes}


def value(s: dict[str, Any], b: dict[str, Any], cfg: ObjectiveConfig = CFG) -> float:
    return evaluate(s, b, cfg)[0]


def test_equal_to_the_baseline_scores_zero() -> None:
    b = summ(wasted=5000)
    assert value(b, b) == 0.0
    assert all(v == 0.0 for v in log_ratios(b, b, CFG).values())


def test_lower_ttft_scores_better_and_higher_worse() -> None:
    b = summ()
    better = summ(interactive=cls(ttft_mean=0.5), batch=cls(5.0, 30.0, 0.95, 400))
    worse = summ(interactive=cls(ttft_mean=2.0), batch=cls(5.0, 30.0, 0.95, 400))
    assert value(better, b) > 0.0 > value(worse, b)
    # log-ratios: halving and doubling are symmetric
    assert value(better, b) == pytest.approx(-value(worse, b))


def test_every_term_moves_the_value_in_the_operators_direction() -> None:
    b = summ(ttlt_p99=20.0, wasted=50_000)
    batch = cls(5.0, 30.0, 0.95, 400)
    worse = {
        "ttft_mean": summ(wasted=50_000, interactive=cls(ttft_mean=3.0), batch=batch),
        "ttft_p99": summ(wasted=50_000, interactive=cls(ttft_p99=9.0), batch=batch),
        "ttlt_p99": summ(ttlt_p99=30.0, wasted=50_000),
        "slo_miss": summ(wasted=50_000, interactive=cls(slo=0.7), batch=batch),
        "wasted": summ(wasted=200_000),
    }
    for term, s in worse.items():
        r = log_ratios(s, b, CFG)
        assert r[term] > 0, term
        assert all(v == 0.0 for k, v in r.items() if k != term), term
        assert value(s, b) < 0, term
        # with only this term weighted, the value is exactly minus its log-ratio
        only = ObjectiveConfig(weights=Weights(**{k: float(k == term) for k in OPERATOR_TERMS}))
        assert value(s, b, only) == pytest.approx(-r[term])


def test_a_small_class_is_not_drowned_by_a_large_one() -> None:
    """Classes count equally: a 2x TTFT loss on 20 interactive requests is not
    bought back by a 1.2x gain on 2000 batch requests."""
    b = summ(interactive=cls(1.0, 4.0, 0.9, 20), batch=cls(5.0, 30.0, 0.95, 2000))
    s = summ(interactive=cls(2.0, 4.0, 0.9, 20), batch=cls(5.0 / 1.2, 30.0, 0.95, 2000))
    assert value(s, b) < 0


def test_clipping_bounds_each_term() -> None:
    b = summ(wasted=0)
    s = summ(wasted=10**9)  # a collapsed baseline cannot dominate beyond ln(max_ratio)
    assert log_ratios(s, b, CFG)["wasted"] == pytest.approx(math.log(CFG.max_ratio))
    assert value(s, b) == pytest.approx(-0.25 * math.log(10.0) / 4.25)


def test_candidate_missing_a_figure_is_nan_and_baseline_missing_skips_it() -> None:
    b = summ()
    s = summ()
    s["overall"]["ttlt"] = {"p99": None}
    assert math.isnan(value(s, b))
    # the baseline lacks P99 TTLT: that term is skipped, the rest still score
    assert value(b, s) == 0.0
    assert math.isnan(value(summ(), None))  # no baseline, nothing to be relative to


def test_gain_is_the_difference_of_operator_values() -> None:
    assert gain(0.12, 0.02, CFG) == pytest.approx(0.10)
    assert math.isnan(gain(math.nan, 0.0, CFG))


@given(st.floats(0.05, 20.0), st.floats(0.05, 20.0), st.floats(0.05, 20.0))
def test_value_is_antisymmetric_and_monotone_in_ttft(a: float, b: float, c: float) -> None:
    sa = summ(interactive=cls(ttft_mean=a), batch=cls(5.0, 30.0, 0.95, 400))
    sb = summ(interactive=cls(ttft_mean=b), batch=cls(5.0, 30.0, 0.95, 400))
    assert value(sa, sb) == pytest.approx(-value(sb, sa), abs=1e-12)
    sc = summ(interactive=cls(ttft_mean=c), batch=cls(5.0, 30.0, 0.95, 400))
    if a <= c:
        assert value(sa, sb) >= value(sc, sb) - 1e-12


@pytest.mark.parametrize(("weights", "field"), [
    ({"ttft_mean": -1.0}, "objective.weights.ttft_mean"),
    ({"ttlt_p99": math.nan}, "objective.weights.ttlt_p99"),
    ({"wasted": math.inf}, "objective.weights.wasted"),
    ({k: 0.0 for k in OPERATOR_TERMS}, "objective.weights: at least one"),
    ({"ttft_mean": "1"}, "objective.weights.ttft_mean"),
    ({"bogus": 1.0}, "objective.weights:"),
])
def test_bad_weights_are_refused_naming_the_field(weights: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectiveError, match=field.replace(".", r"\.")):
        ObjectiveConfig(weights=weights)  # type: ignore[arg-type]  # a config table
