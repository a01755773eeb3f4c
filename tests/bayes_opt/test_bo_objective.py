"""Objective components on hand-made summaries (values computed by hand in comments)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tailwise.bayes_opt.objective import (
    Components,
    Lambdas,
    ObjectiveConfig,
    ObjectiveError,
    ObjectiveKind,
    components,
    evaluate,
    improvement,
    reward,
)


def group(ttlt_mean: float | None = 2.0, ttlt_p99: float | None = 10.0,
          **extra: Any) -> dict[str, Any]:
    return {"ttlt": {"mean": ttlt_mean, "p99": ttlt_p99}, "queue_delay": {"p99": 3.0},
            "goodput_rps": 4.0, "throughput_rps": 5.0, **extra}


def summ(overall: dict[str, Any], short: dict[str, Any] | None = None,
         long: dict[str, Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"overall": overall}
    if short is not None and long is not None:
        s["classes"] = {"short": short, "long": long}
    return s


CFG = ObjectiveConfig(kind=ObjectiveKind.REWARD)


def test_completion_is_slo_attainment_when_present() -> None:
    c = components(summ(group(slo_attainment=0.75)), None, CFG)
    assert c.completion == 0.75


def test_completion_falls_back_to_goodput_over_throughput() -> None:
    c = components(summ(group()), None, CFG)  # 4 / 5
    assert c.completion == pytest.approx(0.8)
    c0 = components(summ(group(goodput_rps=0.0, throughput_rps=0.0)), None, CFG)
    assert c0.completion == 0.0  # nothing completed ⇒ nothing attained its SLO


def test_latency_gain_averages_ratios_of_mean_and_p99() -> None:
    cand = summ(group(ttlt_mean=2.0, ttlt_p99=12.0))
    base = summ(group(ttlt_mean=4.0, ttlt_p99=8.0))
    # 1 − (2/4 + 12/8)/2 = 1 − (0.5 + 1.5)/2 = 0.0
    assert components(cand, base, CFG).latency_gain == pytest.approx(0.0)
    cfg_mean = ObjectiveConfig(latency_stats=("mean",))
    assert components(cand, base, cfg_mean).latency_gain == pytest.approx(0.5)
    # no baseline ⇒ no gain term
    assert components(cand, None, CFG).latency_gain == 0.0
    # same as the baseline ⇒ 0; twice as slow ⇒ −1
    assert components(base, base, CFG).latency_gain == 0.0
    slow = summ(group(ttlt_mean=8.0, ttlt_p99=16.0))
    assert components(slow, base, CFG).latency_gain == pytest.approx(-1.0)


def test_starvation_is_p99_queue_delay_over_fixed_reference() -> None:
    s = summ(group())  # queue_delay.p99 = 3.0
    assert components(s, None, CFG).starvation == pytest.approx(3.0 / 60.0)
    assert components(s, None, ObjectiveConfig(starvation_ref_s=6.0)).starvation == 0.5


def test_unfairness_is_gap_between_class_normalised_latencies() -> None:
    base = summ(group(), short=group(ttlt_mean=1.0), long=group(ttlt_mean=10.0))
    # short 4x faster (0.25), long 20% slower (1.2): |0.25 − 1.2| = 0.95
    cand = summ(group(), short=group(ttlt_mean=0.25), long=group(ttlt_mean=12.0))
    assert components(cand, base, CFG).unfairness == pytest.approx(0.95)
    # both classes scaled alike ⇒ fair
    same = summ(group(), short=group(ttlt_mean=0.5), long=group(ttlt_mean=5.0))
    assert components(same, base, CFG).unfairness == pytest.approx(0.0)
    # a class missing ⇒ 0
    assert components(summ(group()), base, CFG).unfairness == 0.0


def test_reward_combines_terms_with_lambdas() -> None:
    c = Components(completion=0.9, latency_gain=0.3, starvation=0.2, unfairness=0.5)
    # 1·0.9 + 1·0.3 − 0.5·0.2 − 0.1·0.5 = 1.05
    assert reward(c, Lambdas()) == pytest.approx(1.05)
    assert reward(c, Lambdas(2.0, 0.0, 0.0, 1.0)) == pytest.approx(1.8 - 0.5)
    # a zero weight ignores its (undefined) term
    nan_u = Components(0.9, 0.3, 0.2, math.nan)
    assert reward(nan_u, Lambdas(unfairness=0.0)) == pytest.approx(1.1)
    assert math.isnan(reward(nan_u, Lambdas()))


def test_missing_metrics_make_the_objective_nan() -> None:
    cand = summ(group(ttlt_mean=None, ttlt_p99=None, slo_attainment=0.0))
    base = summ(group())
    value, comp = evaluate(cand, base, CFG)
    assert math.isnan(value) and math.isnan(comp.latency_gain)
    assert comp.as_attrs()["L"] is None  # JSON-safe for Optuna attributes
    # a zero baseline latency cannot be a ratio
    assert math.isnan(evaluate(summ(group()), summ(group(ttlt_mean=0.0)), CFG)[0])
    assert math.isnan(evaluate({}, None, CFG)[0])


def test_alternative_objectives() -> None:
    s = summ(group(ttlt_p99=7.5, goodput_rps=3.25))
    p99 = ObjectiveConfig(kind=ObjectiveKind.P99_TTLT)
    good = ObjectiveConfig(kind="goodput")  # type: ignore[arg-type]  # strings accepted
    assert evaluate(s, None, p99)[0] == 7.5 and p99.direction == "minimize"
    assert evaluate(s, None, good)[0] == 3.25 and good.direction == "maximize"
    assert CFG.direction == "maximize"
    assert math.isnan(evaluate(summ(group(ttlt_p99=math.inf)), None, p99)[0])


def test_improvement_is_relative_and_direction_aware() -> None:
    assert improvement(1.1, 1.0, "maximize") == pytest.approx(0.1)
    assert improvement(-0.9, -1.0, "maximize") == pytest.approx(0.1)  # |reference|
    assert improvement(9.0, 10.0, "minimize") == pytest.approx(0.1)
    assert improvement(11.0, 10.0, "minimize") == pytest.approx(-0.1)
    assert improvement(0.5, 0.0, "maximize") == math.inf
    assert math.isnan(improvement(math.nan, 1.0, "maximize"))


@pytest.mark.parametrize("kwargs, field", [
    ({"kind": "p50"}, "objective.kind"),
    ({"lambdas": Lambdas(completion=-1.0)}, "lambdas.completion"),
    ({"lambdas": Lambdas(unfairness=math.nan)}, "lambdas.unfairness"),
    ({"latency_metric": "e2e"}, "latency_metric"),
    ({"latency_stats": ("p42",)}, "latency_stats"),
    ({"latency_stats": ()}, "latency_stats"),
    ({"starvation_ref_s": 0.0}, "starvation_ref_s"),
])
def test_bad_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectiveError, match=field):
        ObjectiveConfig(**kwargs)
