"""The in-process learner: the sidecar's adaptive loops without the network.

:class:`LocalLearner` is both a :class:`~tailwise.scorer.hooks.TelemetrySink` (the engine reports
arrivals and finishes to it) and a :class:`~tailwise.scorer.hooks.PolicySource` (the engine reads
the policy in force from it). It runs the loops that make a policy adaptive:

* Refine-and-Prune partition refresh (EWSJF and tailwise modes) from arrivals' uncached
  prompt lengths, every ``ewsjf.refresh_requests`` arrivals or ``ewsjf.refresh_s`` engine
  seconds;
* DistBoost and γ-Ada: one :class:`tailwise.learner.estimators.BoostEstimator` fed every
  finished request (DistBoost's online size fit proposes γ* every ``refit_every``
  finishes; γ-Ada steers γ from measured tail TTLT) — the same estimator the sidecar's
  learning loop runs.

Each change is published as a new, validated policy version (``source=learned``), which
the engine swaps in at its next step — exactly how a sidecar push arrives. Used by
``tailwise simulate`` for the adaptive policies, and by tests; the gRPC sidecar runs the
same estimators.
"""

from __future__ import annotations

import dataclasses

from tailwise.learner.estimators import BoostEstimator
from tailwise.partitioner.refine_prune import RefinePrune
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Mode, Policy, Source
from tailwise.scorer.request import ReqInfo


class LocalLearner:
    """Adaptive policy source fed by engine telemetry; see the module docstring."""

    def __init__(self, policy: Policy, *, refit_every: int = 200, seed: int = 0) -> None:
        policy.validate()
        self._policy = policy
        self.versions = 0
        self.partitioner: RefinePrune | None = None
        if policy.mode in (Mode.EWSJF, Mode.TAILWISE):
            self.partitioner = RefinePrune(policy.ewsjf, seed=seed)
        self.boost = BoostEstimator(policy, refit_every=refit_every)
        self.history: list[tuple[float, str, int]] = []  # (engine time, what, version)

    # -- PolicySource ------------------------------------------------------------------------
    def current(self) -> Policy:
        return self._policy

    def _publish(self, now: float, what: str, **changes: object) -> None:
        self.versions += 1
        self._policy = dataclasses.replace(
            self._policy, version=self._policy.version + 1, source=Source.LEARNED,
            created_at=max(now, 0.0), **changes)  # type: ignore[arg-type]
        self._policy.validate()
        self.history.append((now, what, self._policy.version))

    # -- TelemetrySink -----------------------------------------------------------------------
    def on_arrival(self, req: ReqInfo, now: float) -> None:
        if self.partitioner is not None:
            self.partitioner.learn_one(float(req.uncached_prompt_tokens))
            if self.partitioner.refresh(now):
                self._publish(now, "partition", queues=self.partitioner.partition())

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        return None

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        return None

    def on_step(self, stats: StepStats) -> None:
        return None

    def on_finish(self, req: ReqInfo, now: float) -> None:
        if not self.boost.active:
            return
        g = self.boost.learn_one(
            {"arrival_s": req.arrival_time, "finish_s": now,
             "prompt_tokens": float(req.prompt_tokens),
             "output_tokens": float(req.num_output_tokens)},
            current_gamma=self._policy.boost.gamma)
        if g is not None:
            what = "gamma-ada" if self.boost.ada is not None else "distboost"
            self._publish(now, what, boost=self.boost.apply(self._policy, g).boost)
