"""tailwise's live prefix re-keying and queue-relative aging floor (RegimeParams)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailwise.records.trace import Trace
from tailwise.scorer.boost import boost
from tailwise.scorer.policy import Mode, Policy, PolicyError, RegimeParams
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.scorer.tailwise import TailwisePolicy
from tailwise.simulator.engine import EngineConfig, Simulator
from tailwise.wire import codec


def tailwise(**regime: object) -> TailwisePolicy:
    p = Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(RegimeParams(), **regime))
    sched = build_scheduler(p)
    assert isinstance(sched, TailwisePolicy)
    return sched


class Cache:
    """A prefix cache the test controls: request id -> prompt tokens it would hit."""

    def __init__(self) -> None:
        self.hit: dict[str, int] = {}
        self.calls: list[str] = []

    def __call__(self, req: ReqInfo) -> int:
        self.calls.append(req.request_id)
        return self.hit.get(req.request_id, 0)


def test_a_waiting_turn_whose_context_got_cached_is_rekeyed_and_served_first() -> None:
    """A 30k-token turn queued before its session's earlier turn was computed: once the
    probe says 29.9k of it are cached it overtakes a 2k-token later arrival; with the
    switch off it keeps its stale key and waits."""
    order = {}
    for on in (True, False):
        sched = tailwise(prefix_rekey=on, prefix_rekey_k=2)
        cache = Cache()
        if sched.uses_prefix_probe:
            sched.set_prefix_probe(cache)
        turn = ReqInfo("turn", 0.0, 30_000)
        other = ReqInfo("other", 0.1, 2_000)
        sched.add(turn, 0.0)
        sched.add(other, 0.1)
        assert sched.peek(0.2) is other  # both uncached: the shorter prompt first
        cache.hit["turn"] = 29_900
        order[on] = sched.pop(0.3).request_id
    assert order == {True: "turn", False: "other"}


def test_an_eviction_while_waiting_does_not_demote_a_request() -> None:
    sched = tailwise(prefix_rekey_k=4)
    cache = Cache()
    sched.set_prefix_probe(cache)
    cache.hit["r"] = 3000
    r = ReqInfo("r", 0.0, 4000, cached_tokens=3000)
    sched.add(r, 0.0)
    key = r.sched_key
    del cache.hit["r"]  # its cached prefix was evicted
    sched.peek(1.0)
    assert r.sched_key == key and sched.counters["prefix_rekeys"] == 0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 8))
def test_rekeying_probes_at_most_k_per_round_and_everyone_within_n_over_k(n: int, k: int) -> None:
    sched = tailwise(prefix_rekey_k=k)
    cache = Cache()
    sched.set_prefix_probe(cache)
    for i in range(n):
        sched.add(ReqInfo(f"r{i}", float(i), 1000 + i), float(i))
    rounds = -(-n // k)
    seen: set[str] = set()
    for t in range(rounds):
        cache.calls.clear()
        sched.peek(100.0 + t)
        sched.peek(100.0 + t)  # the same round again: no new probes
        assert len(cache.calls) <= k
        seen.update(cache.calls)
    assert len(seen) == n


def test_rekeying_keeps_the_queue_consistent_under_churn() -> None:
    """Random hits, admissions and requeues: every request comes out exactly once and
    the backlog the queue floor reads returns to zero."""
    rng = np.random.default_rng(3)
    sched = tailwise(prefix_rekey_k=3)
    cache = Cache()
    sched.set_prefix_probe(cache)
    reqs = [ReqInfo(f"r{i}", float(i), int(rng.integers(100, 20_000))) for i in range(200)]
    out: list[str] = []
    t = 0.0
    for r in reqs:
        t += 0.01
        sched.add(r, t)
        cache.hit[r.request_id] = int(rng.integers(0, r.prompt_tokens))
        if rng.random() < 0.4:
            out.append(sched.pop(t).request_id)
    while len(sched):
        t += 0.01
        out.append(sched.pop(t).request_id)
    assert sorted(out) == sorted(r.request_id for r in reqs)
    assert sched._backlog_tokens == 0
    assert sched.counters["prefix_rekeys"] > 0


@pytest.mark.parametrize("rekey", [True, False])
def test_the_simulator_installs_its_prefix_probe_when_the_policy_asks(rekey: bool) -> None:
    trace = Trace(name="t", arrival_s=np.array([0.0, 0.1]),
                  prompt_tokens=np.array([2048, 2048], np.int64),
                  output_tokens=np.array([4, 4], np.int64), hash_ids=[(1, 2), (1, 2)])
    sched = tailwise(prefix_rekey=rekey)
    sim = Simulator(trace, sched, EngineConfig(hash_block_tokens=512), H100_LLAMA3_8B)
    assert (sched.prefix_probe == sim.cached_prefix_tokens) is rekey
    assert (sched.prefix_probe is None) is not rekey
    assert np.isfinite(sim.run().records.finish).all()


def served(sched: TailwisePolicy, service_s: float) -> None:
    """32 finished requests, each ``service_s`` from first to last token: ``T = service_s``."""
    for i in range(32):
        r = ReqInfo(f"f{i}", 0.0, 10)
        r.first_token_time = 1.0
        sched.on_finish(r, 1.0 + service_s)


def fed(sched: TailwisePolicy, waiting_tokens: int, rate_tps: float) -> ReqInfo:
    """``waiting_tokens`` waiting while admissions run at ``rate_tps`` prefill tokens/s:
    every drain time sampled at an admission is ``waiting_tokens / rate_tps``. Returns
    the waiting request."""
    w = ReqInfo("w", 0.0, waiting_tokens)
    sched.add(w, 0.0)
    for i in range(10):
        sched.on_admit(ReqInfo(f"a{i}", 0.0, 1000), i * 1000 / rate_tps)
    return w


@given(st.integers(1000, 10_000_000), st.floats(100.0, 1e6), st.floats(0.5, 500.0))
def test_queue_floor_replaces_the_fixed_floor_by_fcfs_drain_time_both_ways(
        waiting: int, rate: float, service: float) -> None:
    """``E = min(max(2T, min(30 s, D), D₇₅), cap)`` with the floor on (every drain sample
    equal here, so ``D₇₅ = D``); ``clip(2T, 30 s, cap)`` off. So E drops below 30 s when
    FCFS's queue is shorter, and rises above it (toward FCFS's own wait) when it is
    longer: never beyond ``max(2T, D)`` nor the cap."""
    envelopes = {}
    for on in (True, False):
        sched = tailwise(queue_floor=on)
        served(sched, service)
        fed(sched, waiting, rate)
        sched.peek(1e6)  # a round refreshes the envelope
        envelopes[on] = sched.envelope_s()
    g = RegimeParams()
    drain = waiting / rate
    two_t = g.aging_factor * service
    assert envelopes[False] == pytest.approx(
        min(g.envelope_cap_s, max(g.aging_floor_s, two_t)), rel=1e-6)
    assert envelopes[True] == pytest.approx(min(g.envelope_cap_s, max(two_t, drain)), rel=1e-6)
    if drain <= g.aging_floor_s:  # a short FCFS queue: the floor only lowers E
        assert envelopes[True] <= envelopes[False] + 1e-9


@given(st.integers(1000, 10_000_000), st.floats(100.0, 1e6), st.floats(0.5, 500.0))
def test_queue_horizon_covers_fcfs_drain_time_plus_a_service_time(
        waiting: int, rate: float, service: float) -> None:
    """The boost horizon is ``max(2T, T + D₇₅)`` with ``queue_horizon`` on, ``2T`` off (every
    drain sample equal here, so ``D₇₅ = D``); γ follows it: a request with θ of service
    gets exactly that boost."""
    for on in (True, False):
        sched = tailwise(queue_horizon=on, queue_floor=False)
        assert sched.horizon_s() is None  # T not measured yet: γ stays the base policy's
        served(sched, service)
        fed(sched, waiting, rate)
        g = RegimeParams()
        drain = waiting / rate
        want = max(g.horizon_factor * service, service + drain) if on \
            else g.horizon_factor * service
        assert sched.horizon_s() == pytest.approx(want, rel=1e-6)
        if sched.gamma < sched.base_gamma:  # γ is also capped by the base policy's
            assert boost(sched.params.memguard_theta_s, sched.gamma, math.inf) == \
                pytest.approx(want, rel=1e-6)


def test_the_queue_horizon_lets_a_short_prompt_overtake_a_long_one_queued_longer_ago() -> None:
    """T = 10 s, FCFS's drain 100 s: a 200-token prompt arriving 80 s after a 60k-token one
    is served first with the queue-relative horizon (θ of work boosted T + D = 110 s: a
    head start of ~105 s over the long prompt), not without it (the horizon 2T = 20 s,
    γ capped at the base policy's 0.1: a head start of ~56 s)."""
    first = {}
    for on in (True, False):
        sched = tailwise(queue_horizon=on, queue_floor=False, relative_aging=False)
        served(sched, 10.0)
        assert sched.remove(fed(sched, 100_000, 1000.0))  # D = 100 s, then an empty queue
        sched.add(ReqInfo("long", 100.0, 60_000), 100.0)
        sched.add(ReqInfo("short", 180.0, 200), 180.0)
        first[on] = sched.peek(180.0).request_id
    assert first == {True: "short", False: "long"}


def test_fcfs_drain_samples_do_not_depend_on_how_an_engine_interleaves_pops_and_admits() -> None:
    """The simulator calls on_admit as it pops each request; vLLM pops the whole round,
    then admits: a request popped this round counts as waiting until its on_admit, so both
    orders sample the same D (on the old code the second admission's D differed)."""
    drains = []
    for interleaved in (True, False):
        sched = tailwise()
        for i in range(3):  # earlier admissions: a measured admission rate
            sched.on_admit(ReqInfo(f"e{i}", 0.0, 1000), float(i))
        reqs = [ReqInfo(f"w{i}", 3.0, n) for i, n in enumerate((500, 2000, 8000))]
        for r in reqs:
            sched.add(r, 3.0)
        if interleaved:
            for _ in range(2):
                sched.on_admit(sched.pop(4.0), 4.0)
        else:
            popped = [sched.pop(4.0), sched.pop(4.0)]
            for r in popped:
                sched.on_admit(r, 4.0)
        drains.append(list(sched._drains))
    assert drains[0] == drains[1]
    assert len(drains[0]) == 4 and drains[0][-1] < drains[0][-2]  # the backlog shrank


@pytest.mark.parametrize(("field", "value"), [
    ("prefix_rekey_k", 0), ("prefix_rekey_k", 1.5), ("queue_floor_factor", 0.0),
    ("queue_floor_factor", float("inf")), ("prefix_rekey", "yes"), ("queue_floor", 0),
    ("queue_horizon", 1), ("queue_horizon", None),
])
def test_bad_values_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(PolicyError, match=rf"^regime\.{field}"):
        Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(RegimeParams(), **{field: value})
               ).validate()


def test_an_older_sender_leaving_the_new_fields_unset_gets_the_defaults() -> None:
    p = Policy(mode=Mode.TAILWISE, regime=RegimeParams(prefix_rekey=False, prefix_rekey_k=3,
                                                       queue_floor=False, queue_floor_factor=2.5,
                                                       queue_horizon=False))
    msg = codec.policy_to_proto(p)
    assert codec.policy_from_proto(msg) == p
    for name in ("prefix_rekey", "prefix_rekey_k", "queue_floor", "queue_floor_factor",
                 "queue_horizon"):
        msg.regime.ClearField(name)
    assert codec.policy_from_proto(msg).regime == RegimeParams()
