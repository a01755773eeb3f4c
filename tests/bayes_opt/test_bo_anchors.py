"""Anchors (paper modes, recalled champions) and the gate's confirmation window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from bo_fakes import make_trace, summary

from tailwise.bayes_opt.anchors import AnchorError, Recall, anchor_policies, mode_anchor, same
from tailwise.bayes_opt.tuner import Tuner, TunerConfig, TunerConfigError
from tailwise.records.trace import Trace
from tailwise.scorer.policy import Mode, Policy, SafetyParams, SloClass, SloParams

BASE = Policy(mode=Mode.TAILWISE, slo=SloParams(classes=(SloClass("chat", 1.0, 0.04),)),
              safety=SafetyParams(max_boost_s=50.0, aging_s=100.0))


class ModeEvaluator:
    """Mean TTLT by mode, optionally per window length: ``latency[(mode, n)]`` first,
    then ``latency[mode]``, else 3 s (the baseline is 4 s)."""

    def __init__(self, latency: Mapping[Any, float]) -> None:
        self.latency = dict(latency)
        self.runs: list[tuple[int, Mode]] = []

    def run(self, window: Trace, policy: Policy) -> Mapping[str, Any]:
        self.runs.append((len(window), policy.mode))
        v = self.latency.get((policy.mode, len(window)), self.latency.get(policy.mode, 3.0))
        return summary(v)

    def baseline(self, window: Trace) -> Mapping[str, Any]:
        return summary(4.0)


def tuner(ev: ModeEvaluator, **cfg: Any) -> Tuner:
    return Tuner(TunerConfig(storage="memory", **cfg), BASE, evaluator=ev)


def test_a_mode_anchor_keeps_the_operators_slo_classes_model_and_envelope() -> None:
    for name, p in anchor_policies(BASE, ("fcfs", "uniboost", "ewsjf", "kairos", "tailwise")):
        assert p.slo.classes == BASE.slo.classes and p.safety == BASE.safety
        assert p.step_time == BASE.step_time
        assert p.mode.value == {"uniboost": "boost"}.get(name, name)
    assert mode_anchor(BASE, "kairos").slo.decode_cap
    with pytest.raises(AnchorError, match=r"tuner\.anchors"):
        mode_anchor(BASE, "nope")
    with pytest.raises(TunerConfigError, match=r"tuner\.anchors"):
        TunerConfig(anchors=("kairos", "nope"))


def test_recall_is_bounded_newest_first_and_ignores_identity_fields() -> None:
    a, b, c = (BASE.replace(safety=SafetyParams(max_boost_s=m, aging_s=100.0))
               for m in (10.0, 20.0, 30.0))
    r = Recall(2)
    for p in (a, b, a.replace(version=7, note="again"), c):
        r.add(p)
    assert [p.safety.max_boost_s for p in r.policies] == [30.0, 10.0]
    back = Recall.from_json(2, [*r.to_json(), {"mode": "???"}])
    assert len(back.policies) == 2 and all(same(x, y) for x, y in zip(back.policies, r.policies,
                                                                       strict=True))
    assert Recall.from_json(3, "damaged").policies == []


def test_an_anchor_of_another_mode_that_wins_the_window_is_promoted() -> None:
    ev = ModeEvaluator({Mode.KAIROS: 1.0})
    res = tuner(ev, anchors=("tailwise", "kairos", "uniboost", "ewsjf")).tune(
        make_trace(200), BASE, (), 4)
    assert res.promoted is not None and res.promoted.mode is Mode.KAIROS
    roles = {t.role for t in res.trials}
    assert roles == {"champion", "anchor", "challenger"}
    # without anchors the sampler (tailwise parameters only) cannot reach it
    ev2 = ModeEvaluator({Mode.KAIROS: 1.0})
    assert tuner(ev2, anchors=(), recall=0).tune(make_trace(200), BASE, (), 4).promoted is None


def test_the_gate_refuses_a_winner_that_loses_on_the_previous_window() -> None:
    first, second = make_trace(200, seed=1), make_trace(201, seed=2)
    # kairos wins on the second window but is much worse on the first
    lat = {Mode.TAILWISE: 3.0, (Mode.KAIROS, 200): 8.0, (Mode.KAIROS, 201): 1.0}
    for confirm, promoted in ((True, False), (False, True)):
        tu = tuner(ModeEvaluator(lat), anchors=("kairos",), recall=0, confirm=confirm)
        assert tu.tune(first, BASE, (), 1).promoted is None
        res = tu.tune(second, BASE, (), 1)
        assert (res.promoted is not None) is promoted, res.reason
        if not promoted:
            assert "previous window" in res.reason


def test_a_recalled_champion_is_measured_again_after_the_policy_moved_on() -> None:
    ev = ModeEvaluator({Mode.KAIROS: 1.0})
    tu = tuner(ev, anchors=("kairos",), recall=4, confirm=False)
    won = tu.tune(make_trace(200), BASE, (), 1).promoted
    assert won is not None and won.mode is Mode.KAIROS
    # the operator (or a later round) went back to BASE; without the kairos anchor the
    # recalled champion still brings kairos back
    tu2 = tuner(ModeEvaluator({Mode.KAIROS: 1.0}), anchors=(), recall=4, confirm=False)
    tu2._recall.add(won)
    res = tu2.tune(make_trace(200), BASE, (), 1)
    assert res.promoted is not None and same(res.promoted, won.replace(note=res.promoted.note))


class PathEvaluator(ModeEvaluator):
    """Kairos is worth ``on_window`` on the window itself and ``on_paths`` on its
    reshuffles (their names carry ``~seed``); tailwise 3 s everywhere."""

    def __init__(self, on_window: float, on_paths: float) -> None:
        super().__init__({})
        self.on_window, self.on_paths = on_window, on_paths

    def run(self, window: Trace, policy: Policy) -> Mapping[str, Any]:
        self.runs.append((len(window), policy.mode))
        if policy.mode is not Mode.KAIROS:
            return summary(3.0)
        return summary(self.on_paths if "~" in window.name else self.on_window)


def test_the_gate_refuses_a_winner_that_holds_on_one_sample_path_only() -> None:
    """``reshuffles``: the winner must beat the champion by more than the margin on the
    mean over the window and its reshuffles (kairos 1 s on the window, 5 s on each of 3
    reshuffles: mean 4 s against the champion's 3 s); a win on every path is promoted,
    and the champion's reshuffled replays are made once per round."""
    w = make_trace(200, seed=1)
    tu = tuner(PathEvaluator(1.0, 5.0), anchors=("kairos",), recall=0, reshuffles=3)
    res = tu.tune(w, BASE, (), 1)
    assert res.promoted is None and "3 reshuffles it gains only" in res.reason
    assert tuner(PathEvaluator(1.0, 5.0), anchors=("kairos",), recall=0).tune(
        w, BASE, (), 1).promoted is not None  # off: the window alone decides
    ev = PathEvaluator(1.0, 1.5)
    tu = tuner(ev, anchors=("kairos", "uniboost"), recall=0, reshuffles=3)
    res = tu.tune(w, BASE, (), 1)
    assert res.promoted is not None and "holds over 3 reshuffles" in res.reason
    # the champion once for the round, then once per reshuffle, each with its stressed
    # copy: not again for the second winner tried (uniboost, 3 s, loses on the window)
    assert ev.runs.count((len(w), Mode.TAILWISE)) == 2 * (1 + 3)
    # a later round on the same window with another champion measures that champion
    ev.runs.clear()
    tu.tune(w, BASE.replace(safety=SafetyParams(max_boost_s=40.0, aging_s=100.0)), (), 1)
    assert ev.runs.count((len(w), Mode.TAILWISE)) == 2 * (1 + 3)
    with pytest.raises(TunerConfigError, match=r"tuner\.reshuffles"):
        TunerConfig(reshuffles=-1)


class CrashOnPaths(PathEvaluator):
    def run(self, window: Trace, policy: Policy) -> Mapping[str, Any]:
        if "~" in window.name and policy.mode is Mode.KAIROS:
            raise RuntimeError("simulator crashed")
        return super().run(window, policy)


def test_a_replay_failing_on_a_reshuffle_refuses_that_winner_not_the_round() -> None:
    res = tuner(CrashOnPaths(1.0, 1.0), anchors=("kairos",), recall=0, reshuffles=2).tune(
        make_trace(200, seed=1), BASE, (), 1)
    assert res.promoted is None and "replay on a reshuffle failed" in res.reason
