"""vLLM's ``RequestQueue`` interface over a tailwise :class:`~tailwise.scorer.interface.QueueDiscipline`.

This is the seam through which tailwise reorders vLLM's waiting queue. vLLM's
``schedule()`` only ever looks at the head of ``self.waiting`` (``peek_request`` then
``pop_request``), puts preempted requests back with ``prepend_request`` and requests it
skipped this step with ``prepend_requests``, and removes aborted ones with
``remove_request(s)``. Each of those maps onto one policy call, with the step's time
frozen by :meth:`PolicyRequestQueue.begin_step` so that ``peek`` and ``pop`` agree.

Membership is owned here (``request_id -> Request``); the policy only orders. If the
policy raises or answers inconsistently, the queue records the failure in
:attr:`PolicyRequestQueue.failed`, serves the rest of the step in vLLM's FCFS order
(preempted first, then by arrival) and the scheduler drops back to stock vLLM at the next
step boundary. The engine never crashes because of a policy.

Imports vLLM; only :mod:`tailwise.engine_adapter.vllm` imports this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request, RequestStatus

from tailwise.scorer.interface import KeyedQueue, QueueDiscipline
from tailwise.scorer.request import ReqInfo


def _fcfs_key(req: Request) -> tuple[bool, float, str]:
    """vLLM's FCFS order, reconstructed: preempted requests first, then by arrival."""
    return (req.status != RequestStatus.PREEMPTED, req.arrival_time, req.request_id)


class PolicyRequestQueue(RequestQueue):
    """A ``RequestQueue`` whose order is decided by a ``QueueDiscipline``.

    ``info_of`` maps a vLLM request to its (engine-owned) :class:`ReqInfo`; ``prepare``
    refreshes that info just before the policy sees it (progress fields, prefix-cache
    estimate); ``clock`` gives the time outside a step.
    """

    def __init__(
        self,
        policy: QueueDiscipline,
        info_of: Callable[[Request], ReqInfo],
        prepare: Callable[[Request, ReqInfo], None],
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self._info_of = info_of
        self._prepare = prepare
        self._clock = clock
        self._reqs: dict[str, Request] = {}
        self._now: float | None = None
        #: admission pacing for this step: given the head, True = do not admit it now
        self.pacer: Callable[[Request], bool] | None = None
        #: the first exception (or inconsistency) the policy raised, if any
        self.failed: BaseException | None = None
        self.counters: Counter[str] = Counter()

    # -- step framing --------------------------------------------------------------------
    def begin_step(self, now: float) -> None:
        """Freeze the policy's ``now`` for one ``schedule()`` call."""
        self._now = now

    def end_step(self) -> None:
        self._now = None
        self.pacer = None

    def _time(self) -> float:
        return self._now if self._now is not None else self._clock()

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc
        self.counters["policy_errors"] += 1

    def _fallback_head(self) -> Request:
        if not self._reqs:
            raise IndexError("peek from an empty queue")
        return min(self._reqs.values(), key=_fcfs_key)

    # -- RequestQueue --------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        self._reqs[request.request_id] = request
        if self.failed is not None:
            return
        info = self._info_of(request)
        try:
            self._prepare(request, info)
            self.policy.add(info, self._time())
        except Exception as exc:
            self._fail(exc)

    def pop_request(self) -> Request:
        if self.failed is None and self._reqs:
            try:
                info = self.policy.pop(self._time())
            except Exception as exc:
                self._fail(exc)
            else:
                req = self._reqs.pop(info.request_id, None)
                if req is not None:
                    return req
                self._fail(LookupError(f"policy popped unknown request {info.request_id!r}"))
        req = self._fallback_head()
        del self._reqs[req.request_id]
        return req

    def peek_request(self) -> Request:
        if self.failed is None and self._reqs:
            try:
                info = self.policy.peek(self._time())
            except Exception as exc:
                self._fail(exc)
            else:
                req = self._reqs.get(info.request_id) if info is not None else None
                if req is not None:
                    return req
                self._fail(LookupError(f"policy peeked {info!r} with {len(self._reqs)} waiting"))
        return self._fallback_head()

    def prepend_request(self, request: Request) -> None:
        """vLLM calls this only from ``_preempt_request``: a preemption."""
        self._reqs[request.request_id] = request
        if self.failed is not None:
            return
        info = self._info_of(request)
        now = self._time()
        try:
            self._prepare(request, info)
            self.policy.on_preempt(info, now)
            self.policy.requeue(info, now)
        except Exception as exc:
            self._fail(exc)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        """Requests vLLM popped this step but could not admit (skipped): put them back."""
        now = self._time()
        for request in requests:
            self._reqs[request.request_id] = request
            if self.failed is not None:
                continue
            info = self._info_of(request)
            try:
                self._prepare(request, info)
                self.policy.requeue(info, now)
            except Exception as exc:
                self._fail(exc)

    def remove_request(self, request: Request) -> None:
        if request.request_id not in self._reqs:
            raise ValueError(f"request {request.request_id!r} is not waiting")
        self._remove(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            if request.request_id in self._reqs:
                self._remove(request)

    def _remove(self, request: Request) -> None:
        del self._reqs[request.request_id]
        if self.failed is not None:
            return
        try:
            self.policy.remove(self._info_of(request))
        except Exception as exc:
            self._fail(exc)

    def __bool__(self) -> bool:
        """vLLM admits from this queue only while it is truthy (it asks before every
        admission), so admission pacing answers here, head by head, with the KV state of
        that moment; ``len`` still counts every waiting request."""
        if not self._reqs:
            return False
        if self.pacer is None or self.failed is not None:
            return True
        try:
            return not self.pacer(self.peek_request())
        except Exception as exc:
            self._fail(exc)
            return True

    def __len__(self) -> int:
        return len(self._reqs)

    def __iter__(self) -> Iterator[Request]:
        """Waiting requests, in the policy's key order where it has one (not O(1))."""
        reqs = list(self._reqs.values())
        if isinstance(self.policy, KeyedQueue) and self.failed is None:
            infos = {r.request_id: self._info_of(r) for r in reqs}
            reqs.sort(key=lambda r: (infos[r.request_id].sched_key, r.arrival_time))
        elif self.failed is None:
            order = {info.request_id: i for i, info in enumerate(self.policy.waiting())}
            reqs.sort(key=lambda r: order.get(r.request_id, len(order)))
        else:
            reqs.sort(key=_fcfs_key)
        return iter(reqs)

    # -- policy swaps --------------------------------------------------------------------
    def requests(self) -> list[Request]:
        """The waiting requests in vLLM's FCFS order (preempted first, then arrival)."""
        return sorted(self._reqs.values(), key=_fcfs_key)

    def rebind(self, policy: QueueDiscipline, now: float) -> None:
        """Hand every waiting request to ``policy`` (in FCFS order) and use it from now on.

        The caller has reset their scheduling state (:meth:`PolicySwap.forget
        <tailwise.scorer.swap.PolicySwap.forget>`, on every live request)."""
        self.policy = policy
        self.failed = None
        ordered = self.requests()
        preempted = [r for r in ordered if r.status == RequestStatus.PREEMPTED]
        fresh = [r for r in ordered if r.status != RequestStatus.PREEMPTED]
        try:
            # requeue() puts in front (FCFS semantics), so requeue in reverse order
            for req in reversed(preempted):
                info = self._info_of(req)
                self._prepare(req, info)
                policy.requeue(info, now)
            for req in fresh:
                info = self._info_of(req)
                self._prepare(req, info)
                policy.add(info, now)
        except Exception as exc:
            self._fail(exc)
