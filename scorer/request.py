"""The per-request view every scheduling decision is made from.

Engines (the simulator, the vLLM adapter) own one :class:`ReqInfo` per live request and
keep its progress fields current; scheduling policies read them and may keep private
state in the ``sched_*`` slots. Nothing here performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class ReqInfo:
    """Mutable progress of one request, in tokens and engine seconds.

    ``eq=False``: requests compare by identity, so they can live in sets and heaps.
    """

    request_id: str
    arrival_time: float
    prompt_tokens: int
    #: user-supplied priority (vLLM semantics: lower value = more important)
    priority: int = 0
    #: SLO class from request metadata ("interactive", "batch", ...); "" = policy default
    slo_class: str = ""
    #: prompt tokens found in the prefix cache at the last admission
    cached_tokens: int = 0
    #: tokens whose KV is computed (vLLM ``num_computed_tokens``)
    num_computed_tokens: int = 0
    #: tokens generated so far
    num_output_tokens: int = 0
    #: uncached tokens actually run through prefill, recomputation included
    prefill_tokens_done: int = 0
    num_preemptions: int = 0
    first_token_time: float | None = None
    #: engine time of the most recent admission to the running set
    last_admit_time: float | None = None
    #: oracle output length (simulator only; ``None`` in production)
    true_output_tokens: int | None = None
    #: an output-length prediction, when a predictor is configured
    predicted_output_tokens: int | None = None
    #: maximum tokens the request may generate (``max_tokens``), if known
    max_output_tokens: int | None = None
    # -- private to the scheduling policy -------------------------------------------------
    sched_key: float = 0.0
    sched_tag: int = 0
    sched_queue: int = -1
    sched_protect_level: int = -1

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens (vLLM ``num_tokens``)."""
        return self.prompt_tokens + self.num_output_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        """The routing feature: prompt tokens that must actually be computed."""
        return max(self.prompt_tokens - self.cached_tokens, 0)

    def attained_s(self, prefill_token_s: float, decode_token_s: float) -> float:
        """Attained service in engine seconds (γ-boost's ``w``).

        >>> r = ReqInfo("a", 0.0, 100, prefill_tokens_done=100, num_output_tokens=3)
        >>> round(r.attained_s(0.001, 0.01), 6)
        0.13
        """
        return self.prefill_tokens_done * prefill_token_s + self.num_output_tokens * decode_token_s
