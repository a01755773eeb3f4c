# mypy: disable-error-code="type-arg"
# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_KIND_UNSPECIFIED: _ClassVar[AckKind]
    ACK_KIND_HELLO: _ClassVar[AckKind]
    ACK_KIND_ACK: _ClassVar[AckKind]
    ACK_KIND_NACK: _ClassVar[AckKind]

class SetPolicyAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SET_POLICY_ACTION_UNSPECIFIED: _ClassVar[SetPolicyAction]
    SET_POLICY_ACTION_SET: _ClassVar[SetPolicyAction]
    SET_POLICY_ACTION_KILL: _ClassVar[SetPolicyAction]
    SET_POLICY_ACTION_RESUME: _ClassVar[SetPolicyAction]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_FCFS: _ClassVar[Mode]
    MODE_EWSJF: _ClassVar[Mode]
    MODE_BOOST: _ClassVar[Mode]
    MODE_KAIROS: _ClassVar[Mode]
    MODE_TAILWISE: _ClassVar[Mode]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_BASELINE: _ClassVar[Source]
    SOURCE_LEARNED: _ClassVar[Source]
    SOURCE_FROZEN: _ClassVar[Source]

class BoostVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOOST_VARIANT_UNSPECIFIED: _ClassVar[BoostVariant]
    BOOST_VARIANT_UNI: _ClassVar[BoostVariant]
    BOOST_VARIANT_DIST: _ClassVar[BoostVariant]
    BOOST_VARIANT_ADA: _ClassVar[BoostVariant]

class PreemptMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREEMPT_MODE_UNSPECIFIED: _ClassVar[PreemptMode]
    PREEMPT_MODE_RECOMPUTE: _ClassVar[PreemptMode]
    PREEMPT_MODE_SWAP: _ClassVar[PreemptMode]

class RequestEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_EVENT_KIND_UNSPECIFIED: _ClassVar[RequestEventKind]
    REQUEST_EVENT_KIND_ARRIVAL: _ClassVar[RequestEventKind]
    REQUEST_EVENT_KIND_FIRST_TOKEN: _ClassVar[RequestEventKind]
    REQUEST_EVENT_KIND_TOKENS: _ClassVar[RequestEventKind]
    REQUEST_EVENT_KIND_PREEMPTED: _ClassVar[RequestEventKind]
    REQUEST_EVENT_KIND_FINISHED: _ClassVar[RequestEventKind]
ACK_KIND_UNSPECIFIED: AckKind
ACK_KIND_HELLO: AckKind
ACK_KIND_ACK: AckKind
ACK_KIND_NACK: AckKind
SET_POLICY_ACTION_UNSPECIFIED: SetPolicyAction
SET_POLICY_ACTION_SET: SetPolicyAction
SET_POLICY_ACTION_KILL: SetPolicyAction
SET_POLICY_ACTION_RESUME: SetPolicyAction
MODE_UNSPECIFIED: Mode
MODE_FCFS: Mode
MODE_EWSJF: Mode
MODE_BOOST: Mode
MODE_KAIROS: Mode
MODE_TAILWISE: Mode
SOURCE_UNSPECIFIED: Source
SOURCE_BASELINE: Source
SOURCE_LEARNED: Source
SOURCE_FROZEN: Source
BOOST_VARIANT_UNSPECIFIED: BoostVariant
BOOST_VARIANT_UNI: BoostVariant
BOOST_VARIANT_DIST: BoostVariant
BOOST_VARIANT_ADA: BoostVariant
PREEMPT_MODE_UNSPECIFIED: PreemptMode
PREEMPT_MODE_RECOMPUTE: PreemptMode
PREEMPT_MODE_SWAP: PreemptMode
REQUEST_EVENT_KIND_UNSPECIFIED: RequestEventKind
REQUEST_EVENT_KIND_ARRIVAL: RequestEventKind
REQUEST_EVENT_KIND_FIRST_TOKEN: RequestEventKind
REQUEST_EVENT_KIND_TOKENS: RequestEventKind
REQUEST_EVENT_KIND_PREEMPTED: RequestEventKind
REQUEST_EVENT_KIND_FINISHED: RequestEventKind

class Ack(_message.Message):
    __slots__ = ("kind", "nonce", "version", "error_detail", "adapter_id", "nacked_versions")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    NACKED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    kind: AckKind
    nonce: str
    version: int
    error_detail: str
    adapter_id: str
    nacked_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kind: _Optional[_Union[AckKind, str]] = ..., nonce: _Optional[str] = ..., version: _Optional[int] = ..., error_detail: _Optional[str] = ..., adapter_id: _Optional[str] = ..., nacked_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class PolicyUpdate(_message.Message):
    __slots__ = ("version", "nonce", "policy", "sent_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    nonce: str
    policy: Policy
    sent_at: float
    def __init__(self, version: _Optional[int] = ..., nonce: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., sent_at: _Optional[float] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("action", "policy", "reason", "unchecked")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNCHECKED_FIELD_NUMBER: _ClassVar[int]
    action: SetPolicyAction
    policy: Policy
    reason: str
    unchecked: bool
    def __init__(self, action: _Optional[_Union[SetPolicyAction, str]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., reason: _Optional[str] = ..., unchecked: _Optional[bool] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("version", "paused")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    version: int
    paused: bool
    def __init__(self, version: _Optional[int] = ..., paused: _Optional[bool] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("wait_loop_engine_time", "wait_timeout_s", "max_rounds")
    WAIT_LOOP_ENGINE_TIME_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    wait_loop_engine_time: float
    wait_timeout_s: float
    max_rounds: int
    def __init__(self, wait_loop_engine_time: _Optional[float] = ..., wait_timeout_s: _Optional[float] = ..., max_rounds: _Optional[int] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("engine_time", "outcome", "window_requests", "best_value", "champion_value", "drift", "published_version", "trial_values", "window_start", "window_end", "reason")
    ENGINE_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VALUE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRIAL_VALUES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    engine_time: float
    outcome: str
    window_requests: int
    best_value: float
    champion_value: float
    drift: float
    published_version: int
    trial_values: _containers.RepeatedScalarFieldContainer[float]
    window_start: float
    window_end: float
    reason: str
    def __init__(self, engine_time: _Optional[float] = ..., outcome: _Optional[str] = ..., window_requests: _Optional[int] = ..., best_value: _Optional[float] = ..., champion_value: _Optional[float] = ..., drift: _Optional[float] = ..., published_version: _Optional[int] = ..., trial_values: _Optional[_Iterable[float]] = ..., window_start: _Optional[float] = ..., window_end: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class LearnerStatus(_message.Message):
    __slots__ = ("engine_time", "loop_engine_time", "loop_busy", "loop_enabled", "rounds", "last_round_engine_time", "next_round_engine_time", "round_every_s", "trial_window_s", "policy_version", "paused", "events_accepted", "events_rejected", "events_dropped", "ingest_pending", "waited_ok", "recent_rounds")
    ENGINE_TIME_FIELD_NUMBER: _ClassVar[int]
    LOOP_ENGINE_TIME_FIELD_NUMBER: _ClassVar[int]
    LOOP_BUSY_FIELD_NUMBER: _ClassVar[int]
    LOOP_ENABLED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_ENGINE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROUND_ENGINE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROUND_EVERY_S_FIELD_NUMBER: _ClassVar[int]
    TRIAL_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    INGEST_PENDING_FIELD_NUMBER: _ClassVar[int]
    WAITED_OK_FIELD_NUMBER: _ClassVar[int]
    RECENT_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    engine_time: float
    loop_engine_time: float
    loop_busy: bool
    loop_enabled: bool
    rounds: int
    last_round_engine_time: float
    next_round_engine_time: float
    round_every_s: float
    trial_window_s: float
    policy_version: int
    paused: bool
    events_accepted: int
    events_rejected: int
    events_dropped: int
    ingest_pending: int
    waited_ok: bool
    recent_rounds: _containers.RepeatedCompositeFieldContainer[RoundInfo]
    def __init__(self, engine_time: _Optional[float] = ..., loop_engine_time: _Optional[float] = ..., loop_busy: _Optional[bool] = ..., loop_enabled: _Optional[bool] = ..., rounds: _Optional[int] = ..., last_round_engine_time: _Optional[float] = ..., next_round_engine_time: _Optional[float] = ..., round_every_s: _Optional[float] = ..., trial_window_s: _Optional[float] = ..., policy_version: _Optional[int] = ..., paused: _Optional[bool] = ..., events_accepted: _Optional[int] = ..., events_rejected: _Optional[int] = ..., events_dropped: _Optional[int] = ..., ingest_pending: _Optional[int] = ..., waited_ok: _Optional[bool] = ..., recent_rounds: _Optional[_Iterable[_Union[RoundInfo, _Mapping]]] = ...) -> None: ...

class QueueSpec(_message.Message):
    __slots__ = ("lo", "hi", "mean_len", "density", "w_base", "w_urg", "w_fair")
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    MEAN_LEN_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    W_BASE_FIELD_NUMBER: _ClassVar[int]
    W_URG_FIELD_NUMBER: _ClassVar[int]
    W_FAIR_FIELD_NUMBER: _ClassVar[int]
    lo: float
    hi: float
    mean_len: float
    density: float
    w_base: float
    w_urg: float
    w_fair: float
    def __init__(self, lo: _Optional[float] = ..., hi: _Optional[float] = ..., mean_len: _Optional[float] = ..., density: _Optional[float] = ..., w_base: _Optional[float] = ..., w_urg: _Optional[float] = ..., w_fair: _Optional[float] = ...) -> None: ...

class LinearWeight(_message.Message):
    __slots__ = ("a", "c")
    A_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    a: float
    c: float
    def __init__(self, a: _Optional[float] = ..., c: _Optional[float] = ...) -> None: ...

class EwsjfParams(_message.Message):
    __slots__ = ("base", "urg", "fair", "alpha", "max_queues", "refresh_requests", "refresh_s", "reservoir_size", "bubble")
    BASE_FIELD_NUMBER: _ClassVar[int]
    URG_FIELD_NUMBER: _ClassVar[int]
    FAIR_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUES_FIELD_NUMBER: _ClassVar[int]
    REFRESH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_S_FIELD_NUMBER: _ClassVar[int]
    RESERVOIR_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUBBLE_FIELD_NUMBER: _ClassVar[int]
    base: LinearWeight
    urg: LinearWeight
    fair: LinearWeight
    alpha: float
    max_queues: int
    refresh_requests: int
    refresh_s: float
    reservoir_size: int
    bubble: QueueSpec
    def __init__(self, base: _Optional[_Union[LinearWeight, _Mapping]] = ..., urg: _Optional[_Union[LinearWeight, _Mapping]] = ..., fair: _Optional[_Union[LinearWeight, _Mapping]] = ..., alpha: _Optional[float] = ..., max_queues: _Optional[int] = ..., refresh_requests: _Optional[int] = ..., refresh_s: _Optional[float] = ..., reservoir_size: _Optional[int] = ..., bubble: _Optional[_Union[QueueSpec, _Mapping]] = ...) -> None: ...

class BoostParams(_message.Message):
    __slots__ = ("variant", "gamma", "gamma_min", "gamma_max", "ada_target_s", "ada_quantile", "ada_window", "ada_step", "memguard_theta_s", "memguard_ratio", "partition_aware")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    GAMMA_MIN_FIELD_NUMBER: _ClassVar[int]
    GAMMA_MAX_FIELD_NUMBER: _ClassVar[int]
    ADA_TARGET_S_FIELD_NUMBER: _ClassVar[int]
    ADA_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    ADA_WINDOW_FIELD_NUMBER: _ClassVar[int]
    ADA_STEP_FIELD_NUMBER: _ClassVar[int]
    MEMGUARD_THETA_S_FIELD_NUMBER: _ClassVar[int]
    MEMGUARD_RATIO_FIELD_NUMBER: _ClassVar[int]
    PARTITION_AWARE_FIELD_NUMBER: _ClassVar[int]
    variant: BoostVariant
    gamma: float
    gamma_min: float
    gamma_max: float
    ada_target_s: float
    ada_quantile: float
    ada_window: int
    ada_step: float
    memguard_theta_s: float
    memguard_ratio: float
    partition_aware: bool
    def __init__(self, variant: _Optional[_Union[BoostVariant, str]] = ..., gamma: _Optional[float] = ..., gamma_min: _Optional[float] = ..., gamma_max: _Optional[float] = ..., ada_target_s: _Optional[float] = ..., ada_quantile: _Optional[float] = ..., ada_window: _Optional[int] = ..., ada_step: _Optional[float] = ..., memguard_theta_s: _Optional[float] = ..., memguard_ratio: _Optional[float] = ..., partition_aware: _Optional[bool] = ...) -> None: ...

class PreemptionParams(_message.Message):
    __slots__ = ("cache_aware", "mode", "anti_thrash")
    CACHE_AWARE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ANTI_THRASH_FIELD_NUMBER: _ClassVar[int]
    cache_aware: bool
    mode: PreemptMode
    anti_thrash: bool
    def __init__(self, cache_aware: _Optional[bool] = ..., mode: _Optional[_Union[PreemptMode, str]] = ..., anti_thrash: _Optional[bool] = ...) -> None: ...

class SloClass(_message.Message):
    __slots__ = ("name", "ttft_s", "tpot_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttft_s: float
    tpot_s: float
    def __init__(self, name: _Optional[str] = ..., ttft_s: _Optional[float] = ..., tpot_s: _Optional[float] = ...) -> None: ...

class SloParams(_message.Message):
    __slots__ = ("ttft_s", "tpot_s", "classes", "decode_cap", "urgency", "window", "demote_late")
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_S_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    DECODE_CAP_FIELD_NUMBER: _ClassVar[int]
    URGENCY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DEMOTE_LATE_FIELD_NUMBER: _ClassVar[int]
    ttft_s: float
    tpot_s: float
    classes: _containers.RepeatedCompositeFieldContainer[SloClass]
    decode_cap: bool
    urgency: bool
    window: int
    demote_late: bool
    def __init__(self, ttft_s: _Optional[float] = ..., tpot_s: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[SloClass, _Mapping]]] = ..., decode_cap: _Optional[bool] = ..., urgency: _Optional[bool] = ..., window: _Optional[int] = ..., demote_late: _Optional[bool] = ...) -> None: ...

class SafetyParams(_message.Message):
    __slots__ = ("max_boost_s", "aging_s")
    MAX_BOOST_S_FIELD_NUMBER: _ClassVar[int]
    AGING_S_FIELD_NUMBER: _ClassVar[int]
    max_boost_s: float
    aging_s: float
    def __init__(self, max_boost_s: _Optional[float] = ..., aging_s: _Optional[float] = ...) -> None: ...

class RegimeParams(_message.Message):
    __slots__ = ("scale_quantile", "scale_window", "scale_update_every", "adaptive_horizon", "horizon_factor", "relative_aging", "aging_factor", "aging_floor_s", "envelope_cap_s", "admission_pacing", "pacing_blocks", "prefix_rekey", "prefix_rekey_k", "queue_floor", "queue_floor_factor", "residual_victims", "demote_preempted", "tail_protect", "tail_protect_factor", "queue_horizon", "demote_as_arrival", "demote_delay_factor", "scale_excludes_requeue")
    SCALE_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    SCALE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SCALE_UPDATE_EVERY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_HORIZON_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FACTOR_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_AGING_FIELD_NUMBER: _ClassVar[int]
    AGING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    AGING_FLOOR_S_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_CAP_S_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_PACING_FIELD_NUMBER: _ClassVar[int]
    PACING_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_REKEY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_REKEY_K_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FLOOR_FACTOR_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_VICTIMS_FIELD_NUMBER: _ClassVar[int]
    DEMOTE_PREEMPTED_FIELD_NUMBER: _ClassVar[int]
    TAIL_PROTECT_FIELD_NUMBER: _ClassVar[int]
    TAIL_PROTECT_FACTOR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_HORIZON_FIELD_NUMBER: _ClassVar[int]
    DEMOTE_AS_ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    DEMOTE_DELAY_FACTOR_FIELD_NUMBER: _ClassVar[int]
    SCALE_EXCLUDES_REQUEUE_FIELD_NUMBER: _ClassVar[int]
    scale_quantile: float
    scale_window: int
    scale_update_every: int
    adaptive_horizon: bool
    horizon_factor: float
    relative_aging: bool
    aging_factor: float
    aging_floor_s: float
    envelope_cap_s: float
    admission_pacing: bool
    pacing_blocks: float
    prefix_rekey: bool
    prefix_rekey_k: int
    queue_floor: bool
    queue_floor_factor: float
    residual_victims: bool
    demote_preempted: bool
    tail_protect: bool
    tail_protect_factor: float
    queue_horizon: bool
    demote_as_arrival: bool
    demote_delay_factor: float
    scale_excludes_requeue: bool
    def __init__(self, scale_quantile: _Optional[float] = ..., scale_window: _Optional[int] = ..., scale_update_every: _Optional[int] = ..., adaptive_horizon: _Optional[bool] = ..., horizon_factor: _Optional[float] = ..., relative_aging: _Optional[bool] = ..., aging_factor: _Optional[float] = ..., aging_floor_s: _Optional[float] = ..., envelope_cap_s: _Optional[float] = ..., admission_pacing: _Optional[bool] = ..., pacing_blocks: _Optional[float] = ..., prefix_rekey: _Optional[bool] = ..., prefix_rekey_k: _Optional[int] = ..., queue_floor: _Optional[bool] = ..., queue_floor_factor: _Optional[float] = ..., residual_victims: _Optional[bool] = ..., demote_preempted: _Optional[bool] = ..., tail_protect: _Optional[bool] = ..., tail_protect_factor: _Optional[float] = ..., queue_horizon: _Optional[bool] = ..., demote_as_arrival: _Optional[bool] = ..., demote_delay_factor: _Optional[float] = ..., scale_excludes_requeue: _Optional[bool] = ...) -> None: ...

class StepTimeModel(_message.Message):
    __slots__ = ("name", "prefill_fixed_ms", "prefill_per_token_ms", "prefill_quad_ms", "decode_fixed_ms", "decode_per_req_ms", "decode_per_ctx_ms", "provenance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFILL_FIXED_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_PER_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_QUAD_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIXED_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_PER_REQ_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_PER_CTX_MS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    prefill_fixed_ms: float
    prefill_per_token_ms: float
    prefill_quad_ms: float
    decode_fixed_ms: float
    decode_per_req_ms: float
    decode_per_ctx_ms: float
    provenance: str
    def __init__(self, name: _Optional[str] = ..., prefill_fixed_ms: _Optional[float] = ..., prefill_per_token_ms: _Optional[float] = ..., prefill_quad_ms: _Optional[float] = ..., decode_fixed_ms: _Optional[float] = ..., decode_per_req_ms: _Optional[float] = ..., decode_per_ctx_ms: _Optional[float] = ..., provenance: _Optional[str] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("schema_version", "version", "created_at", "source", "mode", "queues", "ewsjf", "boost", "preemption", "slo", "safety", "step_time", "note", "extra", "regime")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    EWSJF_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    PREEMPTION_FIELD_NUMBER: _ClassVar[int]
    SLO_FIELD_NUMBER: _ClassVar[int]
    SAFETY_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    version: int
    created_at: float
    source: Source
    mode: Mode
    queues: _containers.RepeatedCompositeFieldContainer[QueueSpec]
    ewsjf: EwsjfParams
    boost: BoostParams
    preemption: PreemptionParams
    slo: SloParams
    safety: SafetyParams
    step_time: StepTimeModel
    note: str
    extra: _containers.RepeatedCompositeFieldContainer[KeyValue]
    regime: RegimeParams
    def __init__(self, schema_version: _Optional[int] = ..., version: _Optional[int] = ..., created_at: _Optional[float] = ..., source: _Optional[_Union[Source, str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., queues: _Optional[_Iterable[_Union[QueueSpec, _Mapping]]] = ..., ewsjf: _Optional[_Union[EwsjfParams, _Mapping]] = ..., boost: _Optional[_Union[BoostParams, _Mapping]] = ..., preemption: _Optional[_Union[PreemptionParams, _Mapping]] = ..., slo: _Optional[_Union[SloParams, _Mapping]] = ..., safety: _Optional[_Union[SafetyParams, _Mapping]] = ..., step_time: _Optional[_Union[StepTimeModel, _Mapping]] = ..., note: _Optional[str] = ..., extra: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., regime: _Optional[_Union[RegimeParams, _Mapping]] = ...) -> None: ...

class RequestEvent(_message.Message):
    __slots__ = ("kind", "request_id", "time", "arrival_time", "prompt_tokens", "cached_tokens", "slo_class", "priority", "output_tokens", "num_preemptions", "first_token_time")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_TIME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SLO_CLASS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_TIME_FIELD_NUMBER: _ClassVar[int]
    kind: RequestEventKind
    request_id: str
    time: float
    arrival_time: float
    prompt_tokens: int
    cached_tokens: int
    slo_class: str
    priority: int
    output_tokens: int
    num_preemptions: int
    first_token_time: float
    def __init__(self, kind: _Optional[_Union[RequestEventKind, str]] = ..., request_id: _Optional[str] = ..., time: _Optional[float] = ..., arrival_time: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., slo_class: _Optional[str] = ..., priority: _Optional[int] = ..., output_tokens: _Optional[int] = ..., num_preemptions: _Optional[int] = ..., first_token_time: _Optional[float] = ...) -> None: ...

class StepEvent(_message.Message):
    __slots__ = ("time", "step_time_s", "prefill_tokens", "decode_requests", "running", "waiting", "kv_usage", "preempted", "policy_version", "batch_size", "steps")
    TIME_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECODE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_USAGE_FIELD_NUMBER: _ClassVar[int]
    PREEMPTED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    time: float
    step_time_s: float
    prefill_tokens: int
    decode_requests: int
    running: int
    waiting: int
    kv_usage: float
    preempted: int
    policy_version: int
    batch_size: int
    steps: int
    def __init__(self, time: _Optional[float] = ..., step_time_s: _Optional[float] = ..., prefill_tokens: _Optional[int] = ..., decode_requests: _Optional[int] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_usage: _Optional[float] = ..., preempted: _Optional[int] = ..., policy_version: _Optional[int] = ..., batch_size: _Optional[int] = ..., steps: _Optional[int] = ...) -> None: ...

class EngineEvent(_message.Message):
    __slots__ = ("engine_id", "seq", "requests", "steps", "emitter_dropped")
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EMITTER_DROPPED_FIELD_NUMBER: _ClassVar[int]
    engine_id: str
    seq: int
    requests: _containers.RepeatedCompositeFieldContainer[RequestEvent]
    steps: _containers.RepeatedCompositeFieldContainer[StepEvent]
    emitter_dropped: int
    def __init__(self, engine_id: _Optional[str] = ..., seq: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[RequestEvent, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[StepEvent, _Mapping]]] = ..., emitter_dropped: _Optional[int] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("events_received", "events_dropped", "batches")
    EVENTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    events_received: int
    events_dropped: int
    batches: int
    def __init__(self, events_received: _Optional[int] = ..., events_dropped: _Optional[int] = ..., batches: _Optional[int] = ...) -> None: ...

class GetHintsRequest(_message.Message):
    __slots__ = ("replica",)
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    replica: str
    def __init__(self, replica: _Optional[str] = ...) -> None: ...

class ReplicaHints(_message.Message):
    __slots__ = ("replica", "queue_depth", "queue_tokens", "queue_s", "running", "kv_pressure", "kv_used_blocks", "kv_total_blocks", "admission_horizon_s", "policy_version", "policy_mode", "at", "age_s")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    KV_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    KV_USED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    KV_TOTAL_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_MODE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    replica: str
    queue_depth: int
    queue_tokens: int
    queue_s: float
    running: int
    kv_pressure: float
    kv_used_blocks: int
    kv_total_blocks: int
    admission_horizon_s: float
    policy_version: int
    policy_mode: str
    at: float
    age_s: float
    def __init__(self, replica: _Optional[str] = ..., queue_depth: _Optional[int] = ..., queue_tokens: _Optional[int] = ..., queue_s: _Optional[float] = ..., running: _Optional[int] = ..., kv_pressure: _Optional[float] = ..., kv_used_blocks: _Optional[int] = ..., kv_total_blocks: _Optional[int] = ..., admission_horizon_s: _Optional[float] = ..., policy_version: _Optional[int] = ..., policy_mode: _Optional[str] = ..., at: _Optional[float] = ..., age_s: _Optional[float] = ...) -> None: ...

class HintsResponse(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaHints]
    def __init__(self, replicas: _Optional[_Iterable[_Union[ReplicaHints, _Mapping]]] = ...) -> None: ...
