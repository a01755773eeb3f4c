"""tailwise inside vLLM's scheduler: ``TailwiseScheduler`` and ``TailwiseAsyncScheduler``.

Use::

    vllm serve MODEL --scheduler-cls tailwise.engine_adapter.vllm.TailwiseScheduler \\
        --additional-config '{"tailwise": {"sidecar": "127.0.0.1:50051"}}'

(``TailwiseAsyncScheduler`` when async scheduling is on — subclassing the sync
``Scheduler`` would silently disable it.) Both are one mixin,
:class:`TailwiseSchedulerMixin`, over vLLM's classes.

How a step works
----------------
Each ``schedule()`` first reads the policy in force from the
:class:`~tailwise.scorer.hooks.PolicySource` (a memory read; the gRPC client swaps it from its own
thread). Then:

* **Neutral policy** (``mode=fcfs``): vLLM's own ``self.waiting`` and ``self.running`` are
  left untouched and stock ``schedule()`` runs. The adapter only *observes* (progress
  bookkeeping and telemetry from the SchedulerOutput), so the schedule is exactly stock
  vLLM's — the differential tests in ``tests/vllm_adapter`` compare it step by step.
* **Active policy**: ``self.waiting`` is a :class:`~tailwise.engine_adapter.policy_queue.PolicyRequestQueue`
  whose head is the policy's ``peek(now)``; ``self.running`` is reordered by
  ``policy.order_running`` so that vLLM, which serves token budget in list order and
  evicts ``running[-1]`` when KV blocks run out, serves and evicts as the policy ranks
  (a request never evicts one ranked above it). After the call ``self.running`` goes
  back to admission order (stock vLLM's order between steps), so a policy always ranks
  from the same order as in the simulator. When every running request will get all its
  tokens and no preemption is possible (a conservative O(running) check), the order
  cannot matter and ranking is skipped — the simulator's fast path, too. Under vLLM's ``priority`` scheduling
  policy the victim rule is switched to ``running[-1]`` for the duration of the call so
  the policy decides. With a ``decode_cap`` (Kairos), decode requests ranked past the
  cap sit out the step: they are taken out of ``self.running`` for the call (and
  ``max_num_active_reqs`` lowered by as many, so admission cannot use their slots) and
  put back afterwards, still holding their KV blocks — vLLM itself skips running
  requests in a step for budget reasons, so its invariants hold.

Progress (computed/output tokens, preemptions, prefill work incl. recompute, cached
tokens at admission, first-token time, finish) is tracked per request in a
:class:`~tailwise.scorer.request.ReqInfo` from ``add_request``, the SchedulerOutput,
``update_from_output`` and ``finish_requests``; cost per step is O(scheduled + running)
plus O(log waiting) per admission, never O(waiting).

Policy swaps go through :class:`~tailwise.scorer.swap.PolicySwap`, the routine the
simulator calls too: an equal re-push is skipped; otherwise the ``QueueDiscipline`` is
rebuilt via :func:`tailwise.scorer.registry.build_scheduler`, every live request's
scheduling state is reset and the waiting requests move into the new queue. A policy
that fails to build, or raises while scheduling, is counted, logged once, and replaced
by stock behaviour (fail-static); the engine never crashes or blocks because of it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import SchedulingPolicy as VllmQueuePolicy
from vllm.v1.core.sched.request_queue import create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutputs
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request, RequestStatus

from tailwise.engine_adapter.config import TailwiseConfig
from tailwise.engine_adapter.metrics import (
    ENVELOPE_EVERY_S,
    AdapterMetrics,
    multiprocess_enabled,
)
from tailwise.engine_adapter.policy_queue import PolicyRequestQueue
from tailwise.engine_adapter.wiring import make_policy_source, make_telemetry_sink
from tailwise.scorer.hooks import NullSink, PolicySource, StepStats, TelemetrySink
from tailwise.scorer.interface import FcfsQueue, QueueDiscipline
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.swap import PolicySwap, SwapFailed

#: under ``vllm.``: vLLM configures handlers for its own logger tree only
logger = logging.getLogger("vllm.tailwise")


class _ToVllmLog(logging.Handler):
    """Hands ``tailwise.*`` records (the sidecar client, the telemetry emitter) to vLLM's
    logger tree, so they appear in vLLM's log with vLLM's format and level."""

    def emit(self, record: logging.LogRecord) -> None:
        logger.handle(record)


def attach_to_vllm_logging() -> None:
    """Route the ``tailwise`` logger into vLLM's (idempotent). The ``tailwise`` level
    follows vLLM's (``VLLM_LOGGING_LEVEL``, INFO by default) unless set explicitly."""
    root = logging.getLogger("tailwise")
    if not any(isinstance(h, _ToVllmLog) for h in root.handlers):
        root.addHandler(_ToVllmLog())
    if root.level == logging.NOTSET:
        root.setLevel(logging.getLogger("vllm").getEffectiveLevel())


attach_to_vllm_logging()

if TYPE_CHECKING:
    _Base = Scheduler
else:
    _Base = object

#: keep at most this many in-flight step records (async scheduling has 2; PP a few more)
_MAX_INFLIGHT_STEPS = 64


class TailwiseSchedulerMixin(_Base):
    """Applies the current tailwise policy around vLLM's ``schedule()``; see the module doc.

    Extra keyword arguments (for tests and the harness; vLLM passes none of them):
    ``policy_source`` and ``telemetry_sink`` replace the ones built from
    ``--additional-config``; ``builder`` turns a Policy into a QueueDiscipline (default
    :func:`tailwise.scorer.registry.build_scheduler`); ``scheduling_policy`` pins one
    QueueDiscipline instance instead of reading a source (simulator baselines such as
    the oracles, which are not Policy modes; an :class:`~tailwise.scorer.interface.FcfsQueue`
    means stock behaviour); ``clock`` is the time source (default ``time.time``, the
    clock of ``Request.arrival_time``).
    """

    # Every attribute the overrides touch has a class-level default or is created on
    # first use, so a scheduler built without ``__init__`` (vLLM's own tests do
    # ``object.__new__(AsyncScheduler)`` and set fields by hand) runs as stock vLLM.
    _tw_source: PolicySource | None = None
    _tw_emit_steps: bool = False
    #: the active QueueDiscipline and its queue; None = neutral (stock vLLM)
    _tw_sched: QueueDiscipline | None = None
    _tw_queue: PolicyRequestQueue | None = None
    #: the Prometheus series (None: not exported, e.g. built without ``__init__``)
    _tw_metrics: AdapterMetrics | None = None

    @cached_property
    def tailwise_config(self) -> TailwiseConfig:
        """The validated ``"tailwise"`` section of vLLM's ``--additional-config``."""
        vllm_config = getattr(self, "vllm_config", None)
        return TailwiseConfig.from_additional_config(getattr(vllm_config, "additional_config", None))

    @cached_property
    def tailwise_counters(self) -> Counter[str]:
        """Adapter events (policy swaps, fallbacks, skipped rankings, ...) by name."""
        return Counter()

    @cached_property
    def _tw_clock(self) -> Callable[[], float]:
        return time.time

    @cached_property
    def _tw_builder(self) -> Callable[[Policy], QueueDiscipline]:
        return build_scheduler

    @cached_property
    def _tw_swap(self) -> PolicySwap[QueueDiscipline | None]:
        """The policy-swap routine the simulator calls too: which source reads swap."""
        return PolicySwap(self._tw_build)

    @property
    def _tw_policy(self) -> Policy | None:
        """The policy in force (None until one was read)."""
        return self._tw_swap.in_force

    @cached_property
    def _tw_sink(self) -> TelemetrySink:
        return NullSink()

    @cached_property
    def _tw_live(self) -> dict[str, tuple[Request, ReqInfo]]:
        """request_id -> (vLLM request, our view of it), for every live request."""
        return {}

    @cached_property
    def _tw_prefilling(self) -> dict[str, None]:
        """Admitted requests still prefilling (recompute included)."""
        return {}

    @cached_property
    def _tw_first_pending(self) -> set[str]:
        """Admitted requests without a first token yet."""
        return set()

    @cached_property
    def _tw_steps(self) -> dict[int, tuple[float, int, int, int]]:
        """id(SchedulerOutput) -> (schedule time, prefill tokens, decodes, decode context)."""
        return {}

    @cached_property
    def _tw_logged(self) -> set[str]:
        return set()

    @cached_property
    def _tw_fast_ok(self) -> bool:
        return self._tw_fast_path_supported()

    def __init__(
        self,
        *args: Any,
        policy_source: PolicySource | None = None,
        telemetry_sink: TelemetrySink | None = None,
        builder: Callable[[Policy], QueueDiscipline] | None = None,
        scheduling_policy: QueueDiscipline | None = None,
        clock: Callable[[], float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        config = self.tailwise_config  # validates --additional-config at startup
        self._tw_metrics = _make_metrics(self.vllm_config)
        if clock is not None:
            self._tw_clock = clock
        if builder is not None:
            self._tw_builder = builder
        if scheduling_policy is None:
            on_count = self._tw_metrics.on_client_count if self._tw_metrics is not None else None
            self._tw_source = (
                policy_source if policy_source is not None
                else make_policy_source(config, on_count=on_count)
            )
        self._tw_sink = telemetry_sink if telemetry_sink is not None else make_telemetry_sink(config)
        self._tw_emit_steps = not isinstance(self._tw_sink, NullSink)
        if scheduling_policy is not None:
            if not isinstance(scheduling_policy, FcfsQueue):
                self._tw_install(scheduling_policy, self._tw_clock())
        else:
            self._tw_refresh_policy(self._tw_clock())
        logger.info(
            "tailwise adapter on (%s): sidecar %s, telemetry %s, startup policy %s; "
            "tailwise series on vLLM's /metrics: %s",
            type(self).__name__, config.sidecar or "none", "on" if self._tw_emit_steps else "off",
            _describe(self._tw_policy),
            "yes" if multiprocess_enabled() else
            "no (set PROMETHEUS_MULTIPROC_DIR, or start with tailwise-vllm)",
        )

    # -- public introspection ----------------------------------------------------------
    @property
    def tailwise_policy(self) -> Policy | None:
        """The policy in force (``None`` until one was read)."""
        return self._tw_policy

    @property
    def tailwise_active(self) -> bool:
        """True when a non-neutral policy is reordering vLLM's queues."""
        return self._tw_sched is not None

    @property
    def tailwise_scheduling_policy(self) -> QueueDiscipline | None:
        """The QueueDiscipline ordering vLLM's queues (``None``: stock vLLM)."""
        return self._tw_sched

    def tailwise_info(self, request_id: str) -> ReqInfo | None:
        """Our view of a live request (for tests and debugging)."""
        entry = self._tw_live.get(request_id)
        return entry[1] if entry is not None else None

    # -- bookkeeping helpers -----------------------------------------------------------
    def _tw_fallback(self, reason: str) -> None:
        """Count a fallback (fail-static path taken) by reason, in counters and metrics."""
        self.tailwise_counters[reason] += 1
        if self._tw_metrics is not None:
            self._tw_metrics.fallback(reason)

    def _tw_log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._tw_logged:
            self._tw_logged.add(key)
            logger.warning(msg, *args)

    def _tw_info(self, request: Request) -> ReqInfo:
        """The ReqInfo of ``request``, created on first sight (tests may bypass add_request)."""
        entry = self._tw_live.get(request.request_id)
        if entry is not None and entry[0] is request:
            return entry[1]
        info = self._tw_new_info(request)
        self._tw_live[request.request_id] = (request, info)
        return info

    def _tw_new_info(self, request: Request) -> ReqInfo:
        """Our view of a new request; the harness overrides it to add oracle fields."""
        return _make_info(request)

    def _tw_prepare(self, request: Request, info: ReqInfo) -> None:
        """Refresh ``info`` before the policy (re)keys it: progress and prefix-cache hits."""
        info.prompt_tokens = request.num_prompt_tokens
        info.num_computed_tokens = request.num_computed_tokens
        info.num_output_tokens = request.num_output_tokens
        info.num_preemptions = request.num_preemptions
        info.cached_tokens = self._tw_cached_estimate(request)

    def _tw_cached_estimate(self, request: Request) -> int:
        """Prompt tokens a prefix-cache lookup would hit now (0 when caching is off).

        A read-only lookup (no block is touched or reserved), O(prompt blocks).
        """
        kvm = self.kv_cache_manager
        try:
            if not kvm.prefix_cache_lookup_enabled(request) or not request.block_hashes:
                return 0
            _, hit, _ = kvm.coordinator.find_longest_cache_hit(
                request.block_hashes, request.num_tokens - 1
            )
        except Exception as exc:  # never let an estimate break scheduling
            self._tw_fallback("cache_estimate_errors")
            self._tw_log_once("cache_estimate", "tailwise: prefix-cache estimate failed: %r", exc)
            return 0
        return min(int(hit), request.num_prompt_tokens)

    def _tw_probe(self, info: ReqInfo) -> int:
        """The policies' prefix probe: :meth:`_tw_cached_estimate` of a live request."""
        entry = self._tw_live.get(info.request_id)
        return info.cached_tokens if entry is None else self._tw_cached_estimate(entry[0])

    # -- policy swaps ------------------------------------------------------------------
    def _tw_build(self, policy: Policy) -> QueueDiscipline | None:
        """The queue for ``policy``; None for the neutral mode (stock vLLM)."""
        return None if policy.mode is Mode.FCFS else self._tw_builder(policy)

    def _tw_refresh_policy(self, now: float) -> None:
        """Read the source and apply what :meth:`PolicySwap.offer` makes of it."""
        if self._tw_source is None:
            return
        try:
            policy = self._tw_source.current()
        except Exception as exc:
            self._tw_fallback("source_errors")
            self._tw_log_once("source", "tailwise: policy source failed, keeping the last policy: %r", exc)
            return
        outcome = self._tw_swap.offer(policy)
        if outcome is None:
            return
        if isinstance(outcome, SwapFailed):
            self._tw_fallback("swap_failures")
            self._tw_log_once(
                f"build:{policy.version}",
                "tailwise: policy version %s (mode %s) failed to build, keeping version %s: %r",
                policy.version, policy.mode, getattr(self._tw_policy, "version", None),
                outcome.error,
            )
            return
        self._tw_install(outcome.built, now)
        if not outcome.first:
            self.tailwise_counters["policy_swaps"] += 1
        metrics = self._tw_metrics
        if metrics is not None:
            metrics.policy_version.set(policy.version)
            metrics.policy_active.set(1.0 if self._tw_sched is not None else 0.0)
            if not outcome.first:
                metrics.swaps.inc()
        if not outcome.first:
            logger.info("tailwise: %s in force", _describe(policy))

    def _tw_install(self, new_sched: QueueDiscipline | None, now: float) -> None:
        """Switch the waiting queue to ``new_sched`` (None: vLLM's own queue)."""
        old_queue = self._tw_queue
        if new_sched is not None and self._tw_sched is not None:
            new_sched.carry_over(self._tw_sched)
        PolicySwap.forget(info for _, info in self._tw_live.values())  # O(live), once per swap
        for req, info in self._tw_live.values():
            info.num_computed_tokens = req.num_computed_tokens
            info.num_output_tokens = req.num_output_tokens
            info.num_preemptions = req.num_preemptions
        if new_sched is None:
            if old_queue is not None:
                stock = create_request_queue(self.policy)
                for req in old_queue.requests():
                    stock.add_request(req)
                self.waiting = stock
            self._tw_queue = None
            self._tw_sched = None
            return
        if old_queue is not None:
            old_queue.rebind(new_sched, now)
        else:
            queue = PolicyRequestQueue(new_sched, self._tw_info, self._tw_prepare, self._tw_clock)
            queue.begin_step(now)
            # vLLM's iteration order: FCFS deque order, or (priority, arrival) heap order
            for req in list(self.waiting):
                queue.add_request(req)
            queue.end_step()
            self.waiting = queue
            self._tw_queue = queue
        if new_sched.uses_prefix_probe:
            new_sched.set_prefix_probe(self._tw_probe)
        self._tw_sched = new_sched
        if self._tw_queue is not None and self._tw_queue.failed is not None:
            self._tw_degrade(self._tw_queue.failed)

    def _tw_degrade(self, exc: BaseException) -> None:
        """The active policy misbehaved: count it, log once, fall back to stock vLLM."""
        self._tw_fallback("policy_errors")
        version = getattr(self._tw_policy, "version", None)
        self._tw_log_once(
            f"degrade:{version}",
            "tailwise: policy version %s failed while scheduling (%r); running stock vLLM "
            "until the next policy arrives",
            version, exc,
        )
        self._tw_install(None, self._tw_clock())

    # -- vLLM overrides ------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        info: ReqInfo | None = None
        if request.request_id not in self.requests:
            try:
                info = self._tw_new_info(request)
            except Exception as exc:  # a request we cannot describe is still served
                self._tw_fallback("untracked_requests")
                self._tw_log_once("info", "tailwise: cannot track request %s: %r",
                                  request.request_id, exc)
            else:
                self._tw_live[request.request_id] = (request, info)
        super().add_request(request)
        if info is not None:
            try:
                self._tw_sink.on_arrival(info, self._tw_clock())
            except Exception as exc:
                self._tw_hook_error(exc)

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        started = time.perf_counter()
        self._tw_inner_s = 0.0
        now = self._tw_clock()
        self._tw_refresh_policy(now)
        sched = self._tw_sched
        if sched is None:
            out = self._tw_stock_schedule(throttle_prefills)
        else:
            out = self._tw_schedule_active(sched, now, throttle_prefills)
        self._tw_observe(out, now, sched)
        if self._tw_metrics is not None:
            self._tw_envelope_gauges(now)
            self._tw_metrics.decision.observe(time.perf_counter() - started - self._tw_inner_s)
        return out

    _tw_inner_s = 0.0
    _tw_envelope_at = -math.inf
    #: the last envelope report saw requests waiting
    _tw_envelope_waiting = False

    def _tw_envelope_gauges(self, now: float) -> None:
        """Set the waiting envelope's gauges from the policy in force, at most once per
        ``ENVELOPE_EVERY_S`` of the engine clock (again at once if the clock went back),
        and at once when the waiting queue has emptied since the last report: vLLM stops
        stepping when nothing is left, and the gauges must not keep an old wait. A policy
        that cannot report is counted (``envelope_errors``) and its gauges read NaN; it
        keeps scheduling."""
        metrics = self._tw_metrics
        if metrics is None:
            return
        waiting = len(self.waiting) > 0
        due = not 0.0 <= now - self._tw_envelope_at < ENVELOPE_EVERY_S
        if not (due or (self._tw_envelope_waiting and not waiting)):
            return
        self._tw_envelope_at, self._tw_envelope_waiting = now, waiting
        env, sched = None, self._tw_sched
        if sched is not None:
            try:
                env = sched.envelope(now)
            except Exception as exc:
                self._tw_fallback("envelope_errors")
                self._tw_log_once("envelope", "tailwise: the policy's waiting envelope cannot "
                                  "be read (%r); its gauges read NaN", exc)
        metrics.observe_envelope(env)

    def _tw_stock_schedule(self, throttle_prefills: bool) -> SchedulerOutput:
        """vLLM's own ``schedule()``, timed so that decision time excludes it."""
        t0 = time.perf_counter()
        try:
            return super().schedule(throttle_prefills)
        finally:
            self._tw_inner_s += time.perf_counter() - t0

    def _tw_schedule_active(
        self, sched: QueueDiscipline, now: float, throttle_prefills: bool
    ) -> SchedulerOutput:
        queue = self._tw_queue
        assert queue is not None
        admitted_order = self.running
        hidden: list[Request] = []
        try:
            if admitted_order:
                if sched.caps_decode or not self._tw_running_fits():
                    hidden = self._tw_order_running(sched, now)
                else:
                    self.tailwise_counters["rank_skipped"] += 1
        except Exception as exc:
            self.running = admitted_order
            self._tw_degrade(exc)
            return self._tw_stock_schedule(throttle_prefills)
        saved_policy = self.policy
        saved_active = self.max_num_active_reqs
        self.policy = VllmQueuePolicy.FCFS  # victim = running[-1], which the policy ranked
        self.max_num_active_reqs = saved_active - len(hidden)
        queue.begin_step(now)
        try:
            queue.pacer = self._tw_pacer(sched)
            out = self._tw_stock_schedule(throttle_prefills)
        finally:
            queue.end_step()
            self.policy = saved_policy
            self.max_num_active_reqs = saved_active
            self.running = _admission_order(admitted_order, self.running, hidden)
        if queue.failed is not None:
            self._tw_degrade(queue.failed)
        return out

    def _tw_pacer(self, sched: QueueDiscipline) -> Callable[[Request], bool] | None:
        """Admission pacing: the same ``admission_allowed`` the simulator asks, before each
        admission while something runs, with vLLM's free-block count of that moment."""
        if type(sched).admission_allowed is QueueDiscipline.admission_allowed:
            return None
        # requests admitted during this step are prefilling, not decoding: count once
        decoding = sum(1 for r in self.running if r.num_output_tokens > 0)
        pool = self.kv_cache_manager.block_pool

        def hold(head: Request) -> bool:
            if not self.running or sched.admission_allowed(
                    pool.get_num_free_blocks(), head.num_tokens, decoding, self.block_size):
                return False
            self.tailwise_counters["paced_admissions"] += 1
            return True

        return hold

    def _tw_fast_path_supported(self) -> bool:
        """Whether :meth:`_tw_running_fits` can bound this engine's KV needs exactly:
        one full-attention KV group, no speculative/lookahead slots, no connectors or
        encoders (anything else always takes the ranked path)."""
        try:
            from vllm.v1.kv_cache_interface import FullAttentionSpec

            groups = self.kv_cache_config.kv_cache_groups
            return (
                len(groups) == 1
                and type(groups[0].kv_cache_spec) is FullAttentionSpec
                and groups[0].kv_cache_spec.block_size == self.block_size
                and not self.num_spec_tokens
                and not self.num_lookahead_tokens
                and not self.num_prefill_lookahead
                and self.connector is None
                and self.ec_connector is None
                and not self.max_num_encoder_input_tokens
                and not self.has_mamba_layers
                and self.dcp_world_size == 1
                and self.pcp_world_size == 1
            )
        except Exception:
            return False

    def _tw_running_fits(self) -> bool:
        """True when every running request gets all the tokens it wants this step and no
        preemption can happen, whatever their order — then the order cannot change the
        schedule and ranking is skipped (the simulator's fast path, too). Conservative:
        ``n`` new tokens need at most ``n // block_size + 1`` new blocks. O(running)."""
        if not self._tw_fast_ok:
            return False
        budget = min(self.max_num_scheduled_tokens, self.scheduler_config.max_num_batched_tokens)
        bs = self.block_size
        tokens = blocks = 0
        for r in self.running:
            n = r.num_tokens_with_spec + r.num_output_placeholders - r.num_computed_tokens
            if n > 0:
                tokens += n
                blocks += n // bs + 1
        if tokens > budget:
            return False
        return blocks <= self.kv_cache_manager.block_pool.get_num_free_blocks()

    def _tw_order_running(self, sched: QueueDiscipline, now: float) -> list[Request]:
        """Put ``self.running`` in policy order; return the decodes held back by a cap."""
        running = self.running
        live = self._tw_live
        infos: list[ReqInfo] = []
        for req in running:
            entry = live.get(req.request_id)
            info = entry[1] if entry is not None and entry[0] is req else self._tw_info(req)
            info.num_computed_tokens = req.num_computed_tokens
            info.num_output_tokens = req.num_output_tokens
            infos.append(info)
        ranked = sched.order_running(infos, now)
        ordered: list[Request] | None = None
        if len(ranked) == len(running):
            try:
                ordered = [live[i.request_id][0] for i in ranked]
            except (KeyError, AttributeError):
                ordered = None
            if ordered is not None and {id(r) for r in ordered} != {id(r) for r in running}:
                ordered = None
        if ordered is None:
            self._tw_fallback("order_running_invalid")
            self._tw_log_once("order", "tailwise: order_running did not return a permutation")
            ordered, ranked = list(running), infos
        hidden: list[Request] = []
        if sched.caps_decode:
            cap = sched.decode_cap(ranked, now)
            if cap is not None:
                kept: list[Request] = []
                decodes = 0
                for req in ordered:
                    if req.is_prefill_chunk:
                        kept.append(req)
                    elif decodes < max(cap, 0):
                        kept.append(req)
                        decodes += 1
                    else:
                        hidden.append(req)
                ordered = kept
                self.tailwise_counters["decode_capped"] += len(hidden)
        self.running = ordered
        return hidden

    def _tw_observe(
        self, out: SchedulerOutput, now: float, sched: QueueDiscipline | None
    ) -> None:
        """Admissions, prefill progress and preemptions from one SchedulerOutput.

        O(admitted + prefilling + preempted): decoding requests are not visited (their
        progress is read when a policy ranks them, or at finish).
        """
        live = self._tw_live
        num_sched = out.num_scheduled_tokens
        prefilling = self._tw_prefilling
        admitted: list[ReqInfo] = []
        for new in out.scheduled_new_reqs:
            entry = live.get(new.req_id)
            if entry is not None:
                info = entry[1]
                info.cached_tokens = min(new.num_computed_tokens, info.prompt_tokens)
                info.last_admit_time = now
                admitted.append(info)
                prefilling[new.req_id] = None
                self._tw_first_pending.add(new.req_id)
        for rid in out.scheduled_cached_reqs.resumed_req_ids:
            entry = live.get(rid)
            if entry is not None:
                req, info = entry
                cached = req.num_computed_tokens - num_sched.get(rid, 0)
                info.cached_tokens = max(min(cached, info.prompt_tokens), 0)
                info.last_admit_time = now
                admitted.append(info)
                prefilling[rid] = None
        # hooks before this step's chunks are credited: a policy sees an admitted request
        # as it was at admission (prefill work not yet done), as in the simulator
        try:
            for rid in out.preempted_req_ids or ():
                entry = live.get(rid)
                if entry is not None:
                    req, info = entry
                    info.num_preemptions = req.num_preemptions
                    info.num_computed_tokens = req.num_computed_tokens
                    # what it had produced: the PREEMPTED event reports it (the sidecar's
                    # imputation counts from it), and only some policies refresh it
                    info.num_output_tokens = req.num_output_tokens
                    self._tw_sink.on_preempt(info, now)
            if sched is not None and sched is self._tw_sched:
                for info in admitted:
                    sched.on_admit(info, now)
        except Exception as exc:
            self._tw_hook_error(exc)
        prefill_tokens = 0
        in_prefill: list[str] = []
        if prefilling:
            done: list[str] = []
            for rid in prefilling:
                n = num_sched.get(rid)
                if n is None:
                    continue
                entry = live.get(rid)
                if entry is None:
                    done.append(rid)
                    continue
                req, info = entry
                info.prefill_tokens_done += n
                info.num_computed_tokens = req.num_computed_tokens
                prefill_tokens += n
                in_prefill.append(rid)
                if not req.is_prefill_chunk:
                    done.append(rid)
            for rid in done:
                del prefilling[rid]
        if self._tw_emit_steps:  # O(scheduled), only when someone listens
            skip = set(in_prefill)
            decode_reqs = decode_ctx = 0
            for rid in num_sched:
                if rid not in skip:
                    entry = live.get(rid)
                    if entry is not None:
                        decode_reqs += 1
                        decode_ctx += entry[0].num_tokens
            steps = self._tw_steps
            if len(steps) >= _MAX_INFLIGHT_STEPS:
                steps.clear()
            steps[id(out)] = (now, prefill_tokens, decode_reqs, decode_ctx)

    def _tw_hook_error(self, exc: BaseException) -> None:
        """A policy hook or the sink raised: sink errors are counted; policy errors degrade."""
        self._tw_fallback("hook_errors")
        self._tw_log_once("hook", "tailwise: policy hook or telemetry sink raised: %r", exc)
        if self._tw_sched is not None:
            self._tw_degrade(exc)

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> dict[int, EngineCoreOutputs]:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        now = self._tw_clock()
        live = self._tw_live
        sink = self._tw_sink
        sched = self._tw_sched
        try:
            pending = self._tw_first_pending
            if pending:  # O(requests awaiting their first token)
                scheduled = scheduler_output.num_scheduled_tokens
                got: list[str] = []
                for rid in pending:
                    if rid not in scheduled:
                        continue
                    entry = live.get(rid)
                    if entry is None:
                        got.append(rid)
                        continue
                    req, info = entry
                    n_out = req.num_output_tokens
                    if n_out:
                        got.append(rid)
                        info.num_output_tokens = n_out
                        if info.first_token_time is None:
                            info.first_token_time = now
                            if sched is not None:
                                sched.on_first_token(info, now)
                            sink.on_first_token(info, now)
                pending.difference_update(got)
            # vLLM lists every request freed since the last schedule(); aborts are
            # already gone from `live` (finish_requests), so these are the stops. In the
            # order vLLM freed them (its scheduling order), not the set's: the policy's
            # measurements (T, the residual curve) then see them in the same order in
            # every run and in the simulator
            done = self.finished_req_ids
            if len(done) > 1:
                scheduled = scheduler_output.num_scheduled_tokens
                freed = [*(r for r in scheduled if r in done),
                         *sorted(r for r in done if r not in scheduled)]
            else:
                freed = list(done)
            for rid in freed:
                entry = live.pop(rid, None)
                if entry is not None:
                    self._tw_finished(entry[0], entry[1], now, sched, ran=True)
            if self._tw_emit_steps:
                self._tw_emit_step(scheduler_output, now)
        except Exception as exc:
            self._tw_hook_error(exc)
        return outputs

    def _tw_finished(
        self,
        req: Request,
        info: ReqInfo,
        now: float,
        sched: QueueDiscipline | None,
        ran: bool,
    ) -> None:
        self._tw_prefilling.pop(info.request_id, None)
        self._tw_first_pending.discard(info.request_id)
        info.num_output_tokens = req.num_output_tokens
        info.num_computed_tokens = req.num_computed_tokens
        if sched is not None:
            if ran:
                sched.on_finish(info, now)
            else:  # an abort: already out of the policy's queue, or held by vLLM outside
                sched.remove(info)  # it (KV loading); remove() forgets it either way
        self._tw_sink.on_finish(info, now)

    def _tw_emit_step(self, out: SchedulerOutput, now: float) -> None:
        started, prefill_tokens, decode_reqs, decode_ctx = self._tw_steps.pop(
            id(out), (now, 0, 0, 0)
        )
        running, waiting = self.get_request_counts()
        self._tw_sink.on_step(
            StepStats(
                now=now,
                step_time_s=max(now - started, 0.0),
                prefill_tokens=prefill_tokens,
                decode_requests=decode_reqs,
                running=running,
                waiting=waiting,
                kv_usage=float(self.kv_cache_manager.usage),
                preempted=len(out.preempted_req_ids or ()),
                policy_version=self._tw_policy.version if self._tw_policy is not None else 0,
                decode_context=decode_ctx,
            )
        )

    def finish_requests(
        self, request_ids: str | Iterable[str] | None, finished_status: RequestStatus
    ) -> list[Request]:
        was_running = {r.request_id for r in self.running} if self._tw_sched is not None else set()
        finished = super().finish_requests(request_ids, finished_status)
        if not finished:
            return finished
        now = self._tw_clock()
        sched = self._tw_sched
        try:
            for req in finished:
                entry = self._tw_live.pop(req.request_id, None)
                if entry is not None:
                    ran = req.request_id in was_running
                    self._tw_finished(req, entry[1], now, sched, ran)
        except Exception as exc:
            self._tw_hook_error(exc)
        self._tw_envelope_gauges(now)  # aborts can empty the queue with no step to follow
        return finished


def _describe(policy: Policy | None) -> str:
    if policy is None:
        return "none"
    return f"policy version {policy.version} (mode {policy.mode.value}, source {policy.source.value})"


def _make_metrics(vllm_config: Any) -> AdapterMetrics | None:
    """The scheduler's Prometheus series, labelled like vLLM's (served model name, engine)."""
    try:
        names = vllm_config.model_config.served_model_name
        model = names[0] if isinstance(names, list | tuple) else str(names)
        engine = str(getattr(vllm_config.parallel_config, "data_parallel_rank", 0) or 0)
        return AdapterMetrics(model, engine)
    except Exception as exc:  # metrics are an aid: never block startup on them
        logger.warning("tailwise: Prometheus series not exported: %r", exc)
        return None


def _admission_order(
    before: list[Request], after: list[Request], hidden: list[Request]
) -> list[Request]:
    """``self.running`` back in admission order (stock vLLM's order between steps).

    ``before`` is the running list in admission order at the start of the step, ``after``
    the list vLLM left (policy order, minus preempted, plus admissions appended) and
    ``hidden`` the decodes a cap held out. Policies thus always rank from admission order,
    as in the simulator, so ties break the same way in both engines. O(running).
    """
    alive = {id(r) for r in after}
    alive.update(id(r) for r in hidden)
    seen = {id(r) for r in before}
    kept = [r for r in before if id(r) in alive]
    kept.extend(r for r in after if id(r) not in seen)
    return kept


def _make_info(request: Request) -> ReqInfo:
    """Our view of a new vLLM request (SLO class from ``sampling_params.extra_args``)."""
    slo_class = ""
    params = request.sampling_params
    if params is not None and params.extra_args:
        value = params.extra_args.get("slo_class")
        if isinstance(value, str):
            slo_class = value
    return ReqInfo(
        request_id=request.request_id,
        arrival_time=float(request.arrival_time),
        prompt_tokens=request.num_prompt_tokens,
        priority=int(request.priority),
        slo_class=slo_class,
        num_computed_tokens=request.num_computed_tokens,
        num_output_tokens=request.num_output_tokens,
        num_preemptions=request.num_preemptions,
        max_output_tokens=request.max_tokens,
    )


class TailwiseScheduler(TailwiseSchedulerMixin, Scheduler):
    """vLLM's synchronous ``Scheduler`` with the tailwise policy applied."""


class TailwiseAsyncScheduler(TailwiseSchedulerMixin, AsyncScheduler):
    """vLLM's ``AsyncScheduler`` (async scheduling) with the tailwise policy applied."""
