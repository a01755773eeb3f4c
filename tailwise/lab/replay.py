"""Replay a trace's arrivals against a real OpenAI-compatible server and measure latency.

The simulator predicts TTFT/TPOT/TTLT for a trace; this module measures them on a live
server (vLLM, SGLang, anything speaking ``/v1/completions`` with SSE streaming), from the
client's side, so both land in the same report schema and can be compared.

Pure parts (no I/O): :func:`normalize_base_url`, :func:`build_plan`,
:func:`token_prompt`/:func:`text_prompt`, :func:`request_body`, :func:`parse_sse_line`,
:class:`Measurement`, :func:`to_sim_result`. The driver :func:`run_replay` is asyncio +
httpx. Timing conventions, chosen to match the simulator's:

* a request's *arrival* is its trace timestamp (after ``--rate-scale``) on the replay
  clock; time spent waiting for a ``--max-concurrency`` slot counts as queueing, as it
  does for a real user;
* TTFT = first streamed token − arrival, TTLT = last token − arrival, TPOT = (TTLT −
  TTFT)/(tokens − 1) with tokens as the server reports them (``usage``) or counted;
* the queueing delay inside the server is not observable from the client and is left
  undefined (reported as "–").

Prompts: the server must see the trace's prompt length. vLLM and SGLang accept token
ids as ``prompt``, so each prompt is exactly N ids, distinct per request (the first ids
encode the request index, so no accidental prefix-cache sharing), and for traces with
Mooncake ``hash_ids`` the blocks of a shared hash get the same ids, so the server's
prefix cache sees the sharing the trace describes. Servers that refuse token-id prompts
get text of about N tokens; then the server's own ``usage.prompt_tokens`` is recorded.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import numpy as np

from tailwise.records.requests import RequestRecords
from tailwise.simulator.engine import EngineConfig, SimResult
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.traces import Trace

PromptMode = Literal["tokens", "text"]
#: Mooncake traces hash prompts in blocks of this many tokens
HASH_BLOCK_TOKENS = 512


class ReplayError(ValueError):
    """Bad replay input (endpoint, options, server answers); the message names the field."""


# -- pure: endpoint, plan, prompts -----------------------------------------------------------
def normalize_base_url(url: str) -> str:
    """The server root without a trailing ``/`` or ``/v1``.

    >>> normalize_base_url("http://127.0.0.1:8000/v1/")
    'http://127.0.0.1:8000'
    >>> normalize_base_url("https://host/serve")
    'https://host/serve'
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ReplayError(f"--endpoint: expected an http(s)://HOST[:PORT][/v1] URL, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclass(frozen=True)
class PlannedRequest:
    """One request to send: when (replay clock, s), what it asks for, and what the trace said."""

    index: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    trace_prompt_tokens: int
    trace_output_tokens: int
    hash_ids: tuple[int, ...] | None = None

    @property
    def clipped(self) -> bool:
        return (self.prompt_tokens, self.output_tokens) != (self.trace_prompt_tokens,
                                                            self.trace_output_tokens)


def build_plan(trace: Trace, max_model_len: int | None = None) -> list[PlannedRequest]:
    """One planned request per trace row, lengths clipped to fit ``max_model_len``.

    vLLM rejects prompt + max_tokens > max_model_len; clipping (counted in the report)
    keeps such rows measurable instead of turning them into HTTP 400s. The prompt is
    shortened first; the output only when it alone does not fit.

    >>> from tailwise.simulator.traces import Trace
    >>> t = Trace("t", np.array([0.0, 1.5]), np.array([10, 100]), np.array([5, 50]))
    >>> [(p.prompt_tokens, p.output_tokens, p.clipped) for p in build_plan(t, 64)]
    [(10, 5, False), (14, 50, True)]
    """
    if max_model_len is not None and max_model_len < 2:
        raise ReplayError(f"max_model_len must be >= 2, got {max_model_len}")
    plan = []
    for i in range(len(trace)):
        p, o = max(int(trace.prompt_tokens[i]), 1), max(int(trace.output_tokens[i]), 1)
        sp, so = p, o
        if max_model_len is not None and sp + so > max_model_len:
            # shorten the prompt first: the output length drives decode time and TPOT
            so = min(so, max_model_len - 1)
            sp = min(sp, max_model_len - so)
        plan.append(PlannedRequest(
            index=i, arrival_s=float(trace.arrival_s[i]), prompt_tokens=sp, output_tokens=so,
            trace_prompt_tokens=int(trace.prompt_tokens[i]),
            trace_output_tokens=int(trace.output_tokens[i]),
            hash_ids=trace.hash_ids[i] if trace.hash_ids is not None else None))
    return plan


def token_prompt(req: PlannedRequest, lo: int = 100, hi: int = 300) -> list[int]:
    """Exactly ``req.prompt_tokens`` token ids in ``[lo, hi)``, unique to the request.

    Blocks named by ``hash_ids`` are filled from the hash (shared blocks → shared ids);
    the rest is seeded by the request index, and without hash ids the first ids spell the
    index in base ``hi - lo`` so no two requests share a prefix by accident.
    """
    if hi - lo < 2:
        raise ReplayError(f"--token-range: need at least 2 ids, got {lo}:{hi}")
    n = req.prompt_tokens
    ids: list[int] = []
    for h in req.hash_ids or ():
        if len(ids) >= n:
            break
        rng = np.random.default_rng([1, h & 0xFFFFFFFF, h >> 32 & 0xFFFFFFFF])
        ids.extend(int(x) for x in rng.integers(lo, hi, HASH_BLOCK_TOKENS))
    if not req.hash_ids:
        k, base = req.index, hi - lo
        while True:
            ids.append(lo + k % base)
            k //= base
            if k == 0:
                break
    rng = np.random.default_rng([2, req.index])
    if len(ids) < n:
        ids.extend(int(x) for x in rng.integers(lo, hi, n - len(ids)))
    return ids[:n]


def text_prompt(req: PlannedRequest) -> str:
    """About ``req.prompt_tokens`` tokens of text (one short word ≈ one token), unique per
    request at its start. Only a fallback: the server's ``usage`` gives the true count."""
    return f"{req.index}: " + " a" * max(req.prompt_tokens - 2, 1)


def request_body(req: PlannedRequest, model: str, mode: PromptMode,
                 token_range: tuple[int, int] = (100, 300)) -> dict[str, Any]:
    """The ``/v1/completions`` body: trace lengths, EOS ignored, streamed with usage."""
    prompt: list[int] | str = (token_prompt(req, *token_range) if mode == "tokens"
                               else text_prompt(req))
    return {"model": model, "prompt": prompt, "max_tokens": req.output_tokens,
            "min_tokens": req.output_tokens, "ignore_eos": True, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}


# -- pure: SSE -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSEEvent:
    """One parsed ``data:`` line of a completions stream."""

    done: bool = False
    tokens: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None


def parse_sse_line(line: str) -> SSEEvent | None:
    """Parse one line of an OpenAI-style SSE stream (``None`` for non-data lines).

    A chunk with a choice counts as one token (vLLM streams one token per chunk by
    default; the final ``usage`` chunk gives the exact count when it differs).

    >>> parse_sse_line('data: {"choices": [{"text": "hi"}]}').tokens
    1
    >>> parse_sse_line("data: [DONE]").done
    True
    >>> parse_sse_line(": keep-alive") is None
    True
    """
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return SSEEvent(done=True)
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError:
        return SSEEvent(error=f"bad SSE payload: {payload[:80]!r}")
    if not isinstance(obj, dict):
        return SSEEvent(error=f"bad SSE payload: {payload[:80]!r}")
    if "error" in obj:
        err = obj["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        return SSEEvent(error=f"stream error: {str(msg)[:160]}")
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
    choices = obj.get("choices") or []
    return SSEEvent(
        tokens=1 if choices else 0,
        completion_tokens=_int_or_none(usage.get("completion_tokens")) if usage else None,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")) if usage else None)


class SSELineSplitter:
    r"""Split a text stream into SSE lines at CRLF, LF or CR only.

    Not ``str.splitlines`` (which httpx's ``aiter_lines`` uses): that also breaks at
    U+2028, U+0085, ... which JSON leaves unescaped inside generated text, so a token
    such as U+2028 would cut a ``data:`` payload in two.

    >>> sp = SSELineSplitter()
    >>> sp.feed('data: {"t": "a\u2028b"}\r')
    []
    >>> sp.feed('\ndata: [DO') + sp.feed('NE]\n')
    ['data: {"t": "a\u2028b"}', 'data: [DONE]']
    """

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        buf = self._buf + text
        lines: list[str] = []
        start = i = 0
        n = len(buf)
        while i < n:
            c = buf[i]
            if c == "\n" or c == "\r":
                if c == "\r" and i + 1 == n:
                    break  # a CR at the end may be the first half of CRLF
                lines.append(buf[start:i])
                i += 2 if c == "\r" and buf[i + 1] == "\n" else 1
                start = i
            else:
                i += 1
        self._buf = buf[start:]
        return lines

    def close(self) -> list[str]:
        rest, self._buf = self._buf, ""
        if rest.endswith("\r"):  # a final CR ends a line (it was held back for CRLF)
            return [rest[:-1]]
        return [rest] if rest else []


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and math.isfinite(v) else None


# -- measurements ----------------------------------------------------------------------------
Status = Literal["ok", "error", "interrupted"]


@dataclass
class Measurement:
    """What the client saw for one request; times on the replay clock (s)."""

    index: int
    arrival_s: float
    sent_s: float = math.nan
    first_token_s: float = math.nan
    finish_s: float = math.nan
    tokens: int = 0
    server_prompt_tokens: int | None = None
    status: Status = "ok"
    #: short category for counting ("HTTP 500", "connection refused", "timeout", ...)
    reason: str = ""
    detail: str = ""

    def fail(self, reason: str, detail: str = "", status: Status = "error") -> Measurement:
        self.status, self.reason, self.detail = status, reason, detail[:300]
        self.finish_s = math.nan
        return self


def error_counts(ms: Sequence[Measurement]) -> dict[str, int]:
    """Failed requests per reason, most frequent first."""
    return dict(Counter(m.reason for m in ms if m.status != "ok").most_common())


def to_sim_result(trace: Trace, plan: Sequence[PlannedRequest], ms: Sequence[Measurement],
                  label: str, wall_s: float,
                  timeseries: dict[str, np.ndarray[Any, Any]] | None = None) -> SimResult:
    """Measurements as a :class:`SimResult`, so the simulator's metrics and report apply.

    Only the requests that were sent are kept (an interrupted run reports what it
    measured). Failed requests have no finish time: they count in ``requests`` but not
    in ``completed``, latency percentiles or goodput. ``output`` is what was received.
    """
    by_index = {m.index: m for m in ms if math.isfinite(m.sent_s) or m.status != "ok"}
    idx = np.array(sorted(by_index), dtype=np.intp)
    tr = trace.select(idx) if len(idx) else trace.head(0)
    sent = [by_index[int(i)] for i in idx]
    rec = RequestRecords.empty(tr)
    arrival = np.array([m.arrival_s for m in sent], dtype=np.float64)
    rec.arrival = arrival
    rec.prompt = np.array([plan[int(i)].prompt_tokens for i in idx], dtype=np.int64)
    rec.output = np.array([m.tokens if m.status == "ok" else plan[m.index].output_tokens
                           for m in sent], dtype=np.int64)
    rec.first_token = np.array([m.first_token_s if m.status == "ok" else math.nan
                                for m in sent], dtype=np.float64)
    rec.finish = np.array([m.finish_s for m in sent], dtype=np.float64)
    counters = {"requests_sent": len(sent),
                "requests_failed": sum(m.status == "error" for m in sent),
                "requests_interrupted": sum(m.status == "interrupted" for m in sent),
                "clipped_to_max_model_len": sum(plan[int(i)].clipped for i in idx)}
    ts = timeseries if timeseries is not None else client_timeseries(sent)
    end = float(np.nanmax(rec.finish)) if np.isfinite(rec.finish).any() else 0.0
    return SimResult(trace=tr, config=EngineConfig(), model=load_step_model("h100-llama3-8b"),
                     policy_name=label, records=rec, timeseries=ts, counters=counters,
                     end_time=end, wall_s=wall_s)


def client_timeseries(ms: Sequence[Measurement]) -> dict[str, np.ndarray[Any, Any]]:
    """Requests waiting for their first token and requests streaming, as the client sees
    them, at every send/first-token/finish event (no KV usage: not observable here)."""
    events: list[tuple[float, int, int]] = []
    for m in ms:
        if not math.isfinite(m.sent_s):
            continue
        end = m.finish_s if math.isfinite(m.finish_s) else math.inf
        first = m.first_token_s if math.isfinite(m.first_token_s) else end
        events.append((m.sent_s, 1, 0))
        if math.isfinite(first):
            events.append((first, -1, 1 if math.isfinite(m.finish_s) else 0))
        if math.isfinite(m.finish_s):
            events.append((m.finish_s, 0, -1))
    events.sort()
    t, waiting, running = [], [], []
    w = r = 0
    for at, dw, dr in events:
        w, r = w + dw, r + dr
        t.append(at)
        waiting.append(w)
        running.append(r)
    return {"t": np.array(t, dtype=np.float64), "waiting": np.array(waiting, dtype=np.float64),
            "running": np.array(running, dtype=np.float64)}


# -- pure: the server's own Prometheus gauges -----------------------------------------------
#: series name -> (vLLM metric, SGLang metric); values summed over label sets
SERVER_GAUGES = {"waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs"),
                 "running": ("vllm:num_requests_running", "sglang:num_running_reqs"),
                 "kv_usage": ("vllm:kv_cache_usage_perc", "sglang:token_usage")}


def parse_server_metrics(text: str) -> dict[str, float]:
    r"""Queue length, running requests and KV usage from a ``/metrics`` page (vLLM or
    SGLang names); keys are absent when the server does not export them.

    >>> parse_server_metrics('vllm:num_requests_waiting{engine="0"} 3.0\n')
    {'waiting': 3.0}
    """
    from prometheus_client.parser import text_string_to_metric_families

    names = {m: key for key, ms in SERVER_GAUGES.items() for m in ms}
    out: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for sample in fam.samples:
                key = names.get(sample.name)
                if key is not None and math.isfinite(sample.value):
                    out[key] = out.get(key, 0.0) + float(sample.value)
    except ValueError:
        return {}
    return out


# -- driver (I/O) ----------------------------------------------------------------------------
@dataclass
class ReplayConfig:
    base_url: str
    model: str
    prompt_mode: PromptMode = "tokens"
    max_concurrency: int = 256
    timeout_s: float = 600.0
    token_range: tuple[int, int] = (100, 300)
    api_key: str | None = None
    #: poll the server's /metrics this often (s) for queue/KV series; None: don't
    scrape_interval_s: float | None = 1.0

    def validate(self) -> None:
        if self.max_concurrency < 1:
            raise ReplayError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ReplayError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        lo, hi = self.token_range
        if lo < 0 or hi - lo < 2:
            raise ReplayError(f"--token-range: expected LO:HI with 0 <= LO < HI-1, got {lo}:{hi}")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass
class ServerInfo:
    models: list[str] = field(default_factory=list)
    max_model_len: dict[str, int] = field(default_factory=dict)


async def discover(client: httpx.AsyncClient, base_url: str) -> ServerInfo:
    """GET ``/v1/models``: served model ids and (vLLM) their ``max_model_len``."""
    resp = await client.get(f"{base_url}/v1/models")
    resp.raise_for_status()
    data = resp.json().get("data", [])
    info = ServerInfo()
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            info.models.append(item["id"])
            mml = _int_or_none(item.get("max_model_len"))
            if mml:
                info.max_model_len[item["id"]] = mml
    return info


async def probe_token_prompts(client: httpx.AsyncClient, cfg: ReplayConfig) -> bool:
    """Does the server take a token-id list as ``prompt``? (4 ids, 1 output token.)"""
    req = PlannedRequest(0, 0.0, 4, 1, 4, 1)
    body = {**request_body(req, cfg.model, "tokens", cfg.token_range), "stream": False}
    body.pop("stream_options")
    resp = await client.post(f"{cfg.base_url}/v1/completions", json=body, headers=cfg.headers())
    return resp.status_code == 200


async def _one(client: httpx.AsyncClient, cfg: ReplayConfig, req: PlannedRequest,
               m: Measurement, clock: Callable[[], float]) -> None:
    body = request_body(req, cfg.model, cfg.prompt_mode, cfg.token_range)
    m.sent_s = clock()
    done = False
    try:
        async with asyncio.timeout(cfg.timeout_s):
            async with client.stream("POST", f"{cfg.base_url}/v1/completions", json=body,
                                     headers=cfg.headers()) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    m.fail(f"HTTP {resp.status_code}", _error_message(text))
                    return
                splitter = SSELineSplitter()
                async for chunk in resp.aiter_text():
                    for line in splitter.feed(chunk):
                        if _apply(parse_sse_line(line), m, clock):
                            done = True
                            break
                    if done or m.status != "ok":
                        break
                if not done and m.status == "ok":
                    done = any(_apply(parse_sse_line(line), m, clock)
                               for line in splitter.close())
                if m.status != "ok":
                    return
    except TimeoutError:
        m.fail("timeout", f"no complete answer within {cfg.timeout_s:g} s")
        return
    except httpx.ConnectError as exc:
        m.fail("connection refused" if _refused(exc) else "connect error", _short(exc))
        return
    except httpx.TimeoutException as exc:
        m.fail("timeout", f"{type(exc).__name__}: {exc}")
        return
    except httpx.HTTPError as exc:
        m.fail(f"transport error ({type(exc).__name__})", str(exc))
        return
    if not done:
        m.fail("stream ended early", f"stream closed without [DONE] after {m.tokens} tokens")
    elif m.tokens == 0:
        m.fail("no tokens", "stream finished without any token")


def _apply(ev: SSEEvent | None, m: Measurement, clock: Callable[[], float]) -> bool:
    """Fold one SSE event into the measurement; True at ``[DONE]``."""
    if ev is None:
        return False
    if ev.error is not None:
        m.fail(ev.error.split(":")[0], ev.error)
        return False
    if ev.done:
        return True
    if ev.tokens:
        now = clock()
        if m.tokens == 0:
            m.first_token_s = now
        m.tokens += ev.tokens
        m.finish_s = now
    if ev.completion_tokens is not None and m.tokens:
        m.tokens = ev.completion_tokens
    if ev.prompt_tokens is not None:
        m.server_prompt_tokens = ev.prompt_tokens
    return False


def _refused(exc: BaseException) -> bool:
    """Is a ConnectionRefusedError somewhere in the cause chain? (httpx wraps it twice.)"""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ConnectionRefusedError) or "refused" in str(cur).lower():
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _error_message(text: str) -> str:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:300]
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("message", obj))
        if isinstance(err, dict):
            return str(err.get("message", err))[:300]
        return str(err)[:300]
    return text.strip()[:300]


@dataclass
class ReplayOutcome:
    measurements: list[Measurement]
    wall_s: float
    interrupted: bool
    #: the server's own waiting/running/KV series (replay clock), when it exports them
    server_series: dict[str, np.ndarray[Any, Any]] | None = None


async def _scrape(client: httpx.AsyncClient, cfg: ReplayConfig, clock: Callable[[], float],
                  rows: list[tuple[float, dict[str, float]]]) -> None:
    """Poll ``/metrics`` until cancelled; stop at the first page without known gauges."""
    assert cfg.scrape_interval_s is not None
    while True:
        try:
            resp = await client.get(f"{cfg.base_url}/metrics", headers=cfg.headers(),
                                    timeout=5.0)
            vals = parse_server_metrics(resp.text) if resp.status_code == 200 else {}
        except httpx.HTTPError:
            vals = {}
        if "waiting" not in vals:
            return
        rows.append((clock(), vals))
        await asyncio.sleep(cfg.scrape_interval_s)


def _series(rows: list[tuple[float, dict[str, float]]]) -> dict[str, np.ndarray[Any, Any]] | None:
    if len(rows) < 2:
        return None
    out = {"t": np.array([t for t, _ in rows], dtype=np.float64)}
    for key in SERVER_GAUGES:
        if all(key in v for _, v in rows):
            out[key] = np.array([v[key] for _, v in rows], dtype=np.float64)
    return out


async def run_replay(plan: Sequence[PlannedRequest], cfg: ReplayConfig, *,
                     client: httpx.AsyncClient, stop: asyncio.Event | None = None,
                     on_done: Callable[[Measurement], None] | None = None) -> ReplayOutcome:
    """Send each planned request at its arrival time; at most ``max_concurrency`` open.

    Setting ``stop`` (Ctrl-C) stops sending, cancels requests in flight (counted as
    ``interrupted``) and returns what was measured; requests never sent are left out.
    """
    stop = stop or asyncio.Event()
    sem = asyncio.Semaphore(cfg.max_concurrency)
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0

    ms: list[Measurement] = []
    tasks: list[asyncio.Task[None]] = []

    async def guarded(req: PlannedRequest, m: Measurement) -> None:
        try:
            async with sem:
                await _one(client, cfg, req, m, clock)
        except asyncio.CancelledError:
            m.fail("interrupted", "cancelled by Ctrl-C before it finished", "interrupted")
            raise
        finally:
            if on_done is not None:
                on_done(m)

    stopper = asyncio.ensure_future(stop.wait())
    scraped: list[tuple[float, dict[str, float]]] = []
    scraper = (asyncio.create_task(_scrape(client, cfg, clock, scraped))
               if cfg.scrape_interval_s else None)
    try:
        for req in plan:
            delay = req.arrival_s - clock()
            if delay > 0:
                await asyncio.wait({stopper}, timeout=delay)
            if stop.is_set():
                break
            m = Measurement(req.index, req.arrival_s)
            ms.append(m)
            tasks.append(asyncio.create_task(guarded(req, m)))
        if tasks and not stop.is_set():
            everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait({stopper, everything}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if scraper is not None:
            scraper.cancel()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    if scraper is not None:
        await asyncio.gather(scraper, return_exceptions=True)
    return ReplayOutcome(ms, clock(), stop.is_set(), _series(scraped))


# -- one replay, end to end: discover, plan, send, report ------------------------------------
@dataclass
class ReplayOptions:
    """Everything ``tailwise replay`` needs, validated at the edge (the CLI)."""

    endpoint: str
    trace: Trace
    out: Path
    label: str = "replay"
    model: str | None = None
    prompt_mode: Literal["auto", "tokens", "text"] = "auto"
    max_concurrency: int = 256
    timeout_s: float = 600.0
    token_range: tuple[int, int] = (100, 300)
    api_key: str | None = None
    max_model_len: int | None = None
    scrape_interval_s: float | None = 1.0
    rate_scale: float = 1.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    window_s: float = 60.0
    plots: bool = True


@dataclass
class Prepared:
    cfg: ReplayConfig
    plan: list[PlannedRequest]
    max_model_len: int | None
    models_listed: bool


async def prepare(opts: ReplayOptions, client: httpx.AsyncClient) -> Prepared:
    """Resolve the model (``--model`` or the first of ``/v1/models``), max_model_len and
    the prompt mode (token ids if the server accepts them), and build the plan."""
    base = normalize_base_url(opts.endpoint)
    if not _LABEL_RE.fullmatch(opts.label):
        raise ReplayError(f"--label: use letters, digits, '.', '_' or '-', got {opts.label!r}")
    info: ServerInfo | None
    try:
        info = await discover(client, base)
    except (httpx.HTTPError, ValueError) as exc:
        if opts.model is None:
            raise ReplayError(f"--endpoint: cannot list models at {base}/v1/models "
                              f"({_short(exc)}); check the URL or give --model") from None
        info = None
    model = opts.model
    if info is not None:
        if model is None:
            if not info.models:
                raise ReplayError(f"--endpoint: {base}/v1/models lists no model; give --model")
            model = info.models[0]
        elif info.models and model not in info.models:
            raise ReplayError(f"--model: {model!r} is not served at {base} "
                              f"(served: {', '.join(info.models)})")
    assert model is not None
    mml = opts.max_model_len or (info.max_model_len.get(model) if info else None)
    cfg = ReplayConfig(base, model, "tokens", opts.max_concurrency, opts.timeout_s,
                       opts.token_range, opts.api_key, opts.scrape_interval_s)
    cfg.validate()
    if opts.prompt_mode != "auto":
        cfg.prompt_mode = opts.prompt_mode
    elif info is not None:
        try:
            cfg.prompt_mode = "tokens" if await probe_token_prompts(client, cfg) else "text"
        except httpx.HTTPError as exc:
            raise ReplayError(f"--endpoint: probe request to {base}/v1/completions failed "
                              f"({_short(exc)})") from None
    return Prepared(cfg, build_plan(opts.trace, mml), mml, info is not None)


_LABEL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
