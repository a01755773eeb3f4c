"""Baseline policies: the yardsticks every tailwise policy is measured against.

* ``fcfs`` — vLLM's default (:class:`~tailwise.scorer.interface.FcfsQueue`).
* ``vllm-priority`` — vLLM's ``--scheduling-policy priority``: waiting ordered by
  (priority, arrival); the victim is the running request with the largest
  (priority, arrival).
* ``sjf-oracle`` — non-preemptive shortest job first on the *true* job size.
* ``srpt-oracle`` — shortest remaining processing time on the true size, preemptive via
  ordering: running requests are ranked by remaining work, so budget goes to the shortest
  and KV pressure evicts the longest.
* ``predicted-sjf`` — SJF on a noisy prediction of the output length (log-normal error
  with configurable σ, deterministic per request id and seed).

Job size is engine work in seconds, with the same conversion as γ-boost's attained work
(:meth:`tailwise.scorer.request.ReqInfo.attained_s`, :attr:`StepTimeModel.prefill_token_s`,
:attr:`StepTimeModel.decode_token_s`): uncached prompt tokens at their marginal prefill
cost plus output tokens at their batched decode cost (≈ 6 prefill tokens each on H100).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from tailwise.scorer.interface import FcfsQueue, KeyedQueue
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel


class OracleError(ValueError):
    """An oracle policy was given a request without its true output length."""


def _true_output(req: ReqInfo) -> int:
    if req.true_output_tokens is None:
        raise OracleError(
            f"request {req.request_id!r}: oracle policies need true_output_tokens "
            "(only the simulator knows them)"
        )
    return req.true_output_tokens


class _SizeAware(KeyedQueue):
    def __init__(self, model: StepTimeModel = H100_LLAMA3_8B) -> None:
        super().__init__()
        self.cp = model.prefill_token_s
        self.cd = model.decode_token_s

    def job_size_s(self, req: ReqInfo, output_tokens: int) -> float:
        return req.uncached_prompt_tokens * self.cp + output_tokens * self.cd

    def attained(self, req: ReqInfo) -> float:
        return req.attained_s(self.cp, self.cd)


class VllmPriority(KeyedQueue):
    """vLLM's priority scheduling (``Request.__lt__``: priority, then arrival)."""

    name = "vllm-priority"

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        # priority dominates; arrival breaks ties (arrival times are < 1e9 s in traces)
        return req.priority * 1e12 + req.arrival_time

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        return sorted(running, key=lambda r: (r.priority, r.arrival_time))


class OracleSJF(_SizeAware):
    """Non-preemptive SJF on the true job size; running requests keep admission order."""

    name = "sjf-oracle"

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return self.job_size_s(req, _true_output(req))


class OracleSRPT(_SizeAware):
    """SRPT on true remaining work, preemptive through the running order."""

    name = "srpt-oracle"

    def remaining_s(self, req: ReqInfo) -> float:
        total = req.prompt_tokens * self.cp + _true_output(req) * self.cd
        return max(total - self.attained(req), 0.0)

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return self.remaining_s(req)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        return sorted(running, key=self.remaining_s)


def noisy_prediction(true_tokens: int, request_id: str, sigma: float, seed: int) -> int:
    """A deterministic log-normal prediction ``true·exp(σ·z)``, at least 1 token.

    >>> noisy_prediction(100, "r1", 0.0, 0)
    100
    >>> noisy_prediction(100, "r1", 1.0, 0) == noisy_prediction(100, "r1", 1.0, 0)
    True
    """
    if sigma <= 0:
        return max(int(true_tokens), 1)
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "little") + 0.5) / 2.0**64
    u2 = (int.from_bytes(digest[8:], "little") + 0.5) / 2.0**64
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return max(round(true_tokens * math.exp(sigma * z)), 1)


class PredictedSJF(_SizeAware):
    """SJF on a predicted output length (``predicted_output_tokens``, or a noisy oracle)."""

    name = "predicted-sjf"

    def __init__(
        self, model: StepTimeModel = H100_LLAMA3_8B, sigma: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__(model)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"predicted-sjf: sigma must be finite and >= 0, got {sigma!r}")
        self.sigma = sigma
        self.seed = seed

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        if req.predicted_output_tokens is None:
            req.predicted_output_tokens = noisy_prediction(
                _true_output(req), req.request_id, self.sigma, self.seed
            )
        return self.job_size_s(req, req.predicted_output_tokens)


class Fcfs(FcfsQueue):
    """vLLM's default FCFS order (alias kept for the registry)."""

    name = "fcfs"
