"""Kairos SLO mode (seed 002): urgency-ordered prefill, slack-guided decode batching.

Prefill. For the ``window`` oldest waiting requests (FCFS order) we predict when each
would finish prefilling if the queue were served FCFS, with the step-time model over
chunks of :data:`tailwise.scorer.step_time.WORK_REF_CHUNK` tokens. Its slack is the TTFT SLO of its
class minus the time it has waited minus that predicted finish, and its urgency::

    u = (slack / SLO_TTFT) / input_len

Lowest ``u`` is served first (little slack per token of work). Requests whose slack is
already negative can no longer meet the SLO: they are demoted behind every request that
still can (FCFS among themselves), never dropped. Requests beyond the window keep FCFS
order; each step that leaves requests outside the window is counted
(``window_overflow``), which bounds the per-step cost at O(window).

Decode. A decoding request's slack is ``SLO_TPOT·(n_gen + 1) − (now − t_first) −
step_time(1, len)``. The running order puts prefilling requests first, then decoders by
ascending slack, then decoders already past their SLO (demoted). With ``decode_cap``
on, the batch grows from the most urgent decoder while ``step_time(|B|)`` stays within
the smallest slack in the batch (the throughput ``|B|/step_time(|B|)`` of the linear
step model rises with ``|B|``, so the paper's second condition always holds). No cap is
returned when the whole batch fits.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.policy import Policy, SloParams
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import WORK_REF_CHUNK, StepTimeModel


class KairosPolicy(QueueDiscipline):
    name = "kairos"
    time_dependent = True

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.slo = policy.slo
        self.model = policy.step_time
        self.window = policy.slo.window
        self.caps_decode = policy.slo.decode_cap
        self._order: list[tuple[float, int, ReqInfo]] = []
        self._live: dict[ReqInfo, tuple[float, int, ReqInfo]] = {}
        self._seq = 0
        self._choice: tuple[float, ReqInfo | None] | None = None
        self._chunk_ms = self.model.prefill_ms(WORK_REF_CHUNK)
        self._tpots: dict[str, float] = {}  # TPOT target per SLO class

    # -- prefill ordering --------------------------------------------------------------------
    def predicted_prefill_s(self, tokens: int) -> float:
        """Time to prefill ``tokens`` queued tokens FCFS in full chunks."""
        full, rest = divmod(max(tokens, 0), WORK_REF_CHUNK)
        return (full * self._chunk_ms + self.model.prefill_ms(rest)) / 1000.0

    def urgency(self, req: ReqInfo, waited_s: float, finish_s: float) -> float:
        ttft, _ = self.slo.targets(req.slo_class)
        slack = ttft - waited_s - finish_s
        return (slack / ttft) / max(req.uncached_prompt_tokens, 1)

    def add(self, req: ReqInfo, now: float) -> None:
        self._seq += 1
        entry = (req.arrival_time, self._seq, req)
        bisect.insort(self._order, entry, key=lambda e: (e[0], e[1]))
        self._live[req] = entry
        self._choice = None

    def peek(self, now: float) -> ReqInfo | None:
        if self._choice is not None and self._choice[0] == now:
            return self._choice[1]
        if not self._order:
            return None
        if len(self._order) > self.window:
            self.counters["window_overflow"] += 1
        best: ReqInfo | None = None
        best_u = float("inf")
        cum = 0
        for _, _, req in self._order[: self.window]:
            cum += req.uncached_prompt_tokens
            waited = now - req.arrival_time
            finish = self.predicted_prefill_s(cum)
            ttft, _ = self.slo.targets(req.slo_class)
            if ttft - waited - finish < 0:
                continue  # cannot meet its SLO any more: demoted
            u = self.urgency(req, waited, finish)
            if u < best_u:
                best_u, best = u, req
        if best is None:
            best = self._order[0][2]  # everyone in the window is late: FCFS among them
            self.counters["all_late"] += 1
        self._choice = (now, best)
        return best

    def remove(self, req: ReqInfo) -> bool:
        entry = self._live.pop(req, None)
        if entry is None:
            return False
        i = bisect.bisect_left(self._order, (entry[0], entry[1]), key=lambda e: (e[0], e[1]))
        del self._order[i]
        self._choice = None
        return True

    def __len__(self) -> int:
        return len(self._order)

    def waiting(self) -> Iterator[ReqInfo]:
        return iter([e[2] for e in self._order])

    # -- decode ------------------------------------------------------------------------------
    def decode_slack(self, req: ReqInfo, now: float) -> float:
        _, tpot = self.slo.targets(req.slo_class)
        t_first = req.first_token_time if req.first_token_time is not None else now
        return (tpot * (req.num_output_tokens + 1) - (now - t_first)
                - self.model.step_s(0, 1, req.num_tokens))

    @staticmethod
    def _decoding(req: ReqInfo) -> bool:
        return req.num_output_tokens > 0 and req.num_computed_tokens >= req.num_tokens - 1

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        def rank(r: ReqInfo) -> tuple[int, float]:
            if not self._decoding(r):
                return (0, r.arrival_time)
            s = self.decode_slack(r, now)
            return (1, s) if s >= 0 else (2, s)

        return sorted(running, key=rank)

    def decode_cap(self, running: Sequence[ReqInfo], now: float) -> int | None:
        if not self.caps_decode:
            return None
        cap = slack_decode_cap(running, now, self.model, self.slo, self._tpots)
        if cap is not None:
            self.counters["decode_capped_steps"] += 1
        return cap


def slack_decode_cap(running: Sequence[ReqInfo], now: float, model: StepTimeModel,
                     slo: SloParams, tpots: dict[str, float]) -> int | None:
    """Kairos's slack-guided decode batch: the most decodes (least slack first) whose
    step time fits the smallest non-negative TPOT slack ``s_r = TPOT·(n_gen+1) −
    (now − t_first) − step_time(1, len_r)``; ``None`` = no cap. ``tpots`` caches each
    SLO class's TPOT target. Shared by Kairos and tailwise's budget shaping."""
    # decode_slack inlined (same arithmetic, same floats): this runs every step over
    # every running request and dominated Kairos's simulation time
    d0, d1, d2 = model.decode_fixed_ms, model.decode_per_req_ms, model.decode_per_ctx_ms
    slacks = []
    for r in running:
        out = r.num_output_tokens
        n = r.prompt_tokens + out
        if out <= 0 or r.num_computed_tokens < n - 1:
            continue
        tpot = tpots.get(r.slo_class)
        if tpot is None:
            tpot = tpots[r.slo_class] = slo.targets(r.slo_class)[1]
        t_first = r.first_token_time if r.first_token_time is not None else now
        slacks.append((tpot * (out + 1) - (now - t_first) - (d0 + d1 * 1 + d2 * n) / 1000.0, n))
    slacks.sort()
    feasible = [(s, n) for s, n in slacks if s >= 0]
    if not feasible:
        return None
    min_slack = feasible[0][0]
    total_ctx = sum(n for _, n in slacks)
    if model.step_s(0, len(slacks), total_ctx) <= min_slack:
        return None
    ctx = 0
    cap = 0
    for b, (_, n) in enumerate(feasible, start=1):
        ctx += n
        if model.step_s(0, b, ctx) > min_slack:
            break
        cap = b
    return max(cap, 1)
