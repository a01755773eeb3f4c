"""The in-process learner: the sidecar's adaptive loops without the network.

:class:`LocalLearner` is both a :class:`~tailwise.scorer.hooks.TelemetrySink` (the engine reports
arrivals and finishes to it) and a :class:`~tailwise.scorer.hooks.PolicySource` (the engine reads
the policy in force from it). It runs the loops that make a policy adaptive:

* Refine-and-Prune partition refresh (EWSJF and tailwise modes) from arrivals' uncached
  prompt lengths, every ``ewsjf.refresh_requests`` arrivals or ``ewsjf.refresh_s`` engine
  seconds;
* DistBoost: γ refitted by :func:`tailwise.scorer.boost.fit_gamma` from the sizes of recently
  finished requests and the recent arrival rate, every ``refit_every`` finishes;
* γ-Ada: :class:`tailwise.scorer.boost.GammaAda` steering γ from measured tail TTLT.

Each change is published as a new, validated policy version (``source=learned``), which
the engine swaps in at its next step — exactly how a sidecar push arrives. Used by
``tailwise simulate`` for the adaptive policies, and by tests; the gRPC sidecar runs the
same estimators.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

from tailwise.partitioner.refine_prune import RefinePrune
from tailwise.scorer.boost import GammaAda, fit_gamma
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import BoostVariant, Mode, Policy, Source
from tailwise.scorer.request import ReqInfo


class LocalLearner:
    """Adaptive policy source fed by engine telemetry; see the module docstring."""

    def __init__(self, policy: Policy, *, refit_every: int = 200, size_window: int = 2000,
                 rate_window: int = 500, seed: int = 0) -> None:
        policy.validate()
        self._policy = policy
        self.versions = 0
        self.partitioner: RefinePrune | None = None
        if policy.mode in (Mode.EWSJF, Mode.TAILWISE):
            self.partitioner = RefinePrune(policy.ewsjf, seed=seed)
        variant = policy.boost.variant if policy.mode is Mode.BOOST else None
        self.fit_dist = variant is BoostVariant.DIST
        self.ada = GammaAda(policy.boost) if variant is BoostVariant.ADA else None
        self.refit_every = refit_every
        self.cp = policy.step_time.prefill_token_s
        self.cd = policy.step_time.decode_token_s
        self._sizes: deque[float] = deque(maxlen=size_window)
        self._arrivals: deque[float] = deque(maxlen=rate_window)
        self._finishes = 0
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
        self._arrivals.append(now)
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
        self._finishes += 1
        size = req.prompt_tokens * self.cp + req.num_output_tokens * self.cd
        self._sizes.append(size)
        b = self._policy.boost
        if self.ada is not None and self.ada.learn_one(now - req.arrival_time):
            self._publish(now, "gamma-ada", boost=dataclasses.replace(b, gamma=self.ada.gamma))
        if self.fit_dist and self._finishes % self.refit_every == 0 and len(self._arrivals) > 1:
            span = self._arrivals[-1] - self._arrivals[0]
            if span > 0:
                rate = (len(self._arrivals) - 1) / span
                g = fit_gamma(list(self._sizes), rate, b.gamma_min, b.gamma_max)
                if not math.isclose(g, b.gamma, rel_tol=0.05):
                    self._publish(now, "distboost", boost=dataclasses.replace(b, gamma=g))
