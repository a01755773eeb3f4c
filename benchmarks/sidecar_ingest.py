"""Telemetry ingest throughput of a real sidecar process.

Starts ``tailwise sidecar`` as a subprocess (127.0.0.1, port 0, learning loop off), then
streams telemetry for ``--seconds`` from this process in two ways, one after the other:

* ``raw``     — pre-built ``EngineEvent`` batches of ``--batch`` events pushed as fast as
                gRPC takes them (the sidecar's ceiling);
* ``emitter`` — the engine-side :class:`tailwise.engine_adapter.telemetry.TelemetryEmitter` fed by
                a producer loop calling ``on_arrival``/``on_finish``/``on_step``, once paced
                at ``--rate`` events/s (default 30,000) and once as fast as it can (then
                the emitter's bounded queue drops and counts the excess, by design).

For each it waits until the sidecar has applied everything it accepted (read from its
Prometheus endpoint: ``tailwise_events_ingested_total``) and prints events/s sustained
end to end, drops on both sides, and the ratio to the 20,000 events/s requirement.

    python benchmarks/sidecar_ingest.py --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from tailwise.engine_adapter.telemetry import TelemetryEmitter  # noqa: E402
from tailwise.scorer.hooks import StepStats  # noqa: E402
from tailwise.scorer.request import ReqInfo  # noqa: E402
from tailwise.wire import rpc  # noqa: E402
from tailwise.wire.v1 import policy_pb2 as pb  # noqa: E402

REQUIREMENT = 20_000.0


def start_sidecar(state_dir: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    cmd = [sys.executable, "-m", "tailwise.cmd_sidecar", "sidecar", "--listen", "127.0.0.1:0",
           "--metrics-port", "0", "--state-dir", state_dir, "--no-loop",
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"sidecar did not start (exit {proc.wait()})")
    return proc, json.loads(line)


def scrape(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for name in ("tailwise_events_ingested_total", "tailwise_events_rejected_total"):
        out[name] = sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                     re.M))
    drops = re.findall(r'^tailwise_events_dropped_total\{where="(\w+)"\} (\S+)$', text, re.M)
    for where, v in drops:
        out[f"dropped_{where}"] = float(v)
    return out


def wait_ingested(metrics_port: int, target: float, timeout: float = 60.0) -> tuple[float, float]:
    """(ingested, time) once ingested+dropped reaches ``target`` or stops moving."""
    deadline = time.monotonic() + timeout
    last, still = -1.0, 0
    while True:
        m = scrape(metrics_port)
        done = m["tailwise_events_ingested_total"] + m["tailwise_events_rejected_total"] \
            + m.get("dropped_sidecar", 0.0)
        now = time.monotonic()
        if done >= target or now > deadline:
            return m["tailwise_events_ingested_total"], now
        still = still + 1 if done == last else 0
        if still >= 20:
            return m["tailwise_events_ingested_total"], now
        last = done
        time.sleep(0.05)


def make_batch(engine: str, seq: int, n: int, t0: float) -> pb.EngineEvent:
    b = pb.EngineEvent(engine_id=engine, seq=seq)
    for i in range(n):
        rid = f"r{seq}-{i // 2}"
        t = t0 + seq * 0.01 + i * 1e-5
        if i % 2 == 0:
            b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=rid, time=t,
                           arrival_time=t, prompt_tokens=100 + i, cached_tokens=16,
                           slo_class="interactive")
        else:
            b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=rid, time=t + 1,
                           arrival_time=t, prompt_tokens=100 + i, cached_tokens=16,
                           output_tokens=50, slo_class="interactive")
    return b


def bench_raw(address: str, metrics_port: int, seconds: float, batch: int) -> dict[str, Any]:
    base = scrape(metrics_port)
    channel = grpc.insecure_channel(address, options=rpc.client_channel_options())
    stub = rpc.TelemetryStub(channel)
    pre = [make_batch("raw", s, batch, 0.0) for s in range(64)]
    sent = 0

    def gen() -> Any:
        nonlocal sent
        end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < end:
            b = pre[k % len(pre)]
            b.seq = k
            k += 1
            sent += batch
            yield b

    t0 = time.monotonic()
    summary = stub.report(gen(), timeout=seconds + 60)
    ingested, t1 = wait_ingested(metrics_port, base["tailwise_events_ingested_total"]
                                 + base["tailwise_events_rejected_total"] + sent
                                 + base.get("dropped_sidecar", 0.0))
    channel.close()
    got = ingested - base["tailwise_events_ingested_total"]
    return {"mode": "raw", "batch": batch, "sent": sent,
            "received": int(summary.events_received), "sidecar_dropped": int(summary.events_dropped),
            "ingested": int(got), "seconds": round(t1 - t0, 3),
            "events_per_s": round(got / (t1 - t0))}


def bench_emitter(address: str, metrics_port: int, seconds: float, rate: float) -> dict[str, Any]:
    base = scrape(metrics_port)
    em = TelemetryEmitter(address, engine_id="emitter", max_queue=200_000, max_batch=2000,
                          flush_interval_s=0.02).start()
    reqs = [ReqInfo(f"q{i}", 0.0, 200 + i % 3000, slo_class="batch", num_output_tokens=40)
            for i in range(4096)]
    produced = 0
    t0 = time.monotonic()
    end = t0 + seconds
    now = 0.0
    i = 0
    while True:
        tnow = time.monotonic()
        if tnow >= end:
            break
        if rate > 0:
            due = int((tnow - t0) * rate)
            if produced >= due:
                time.sleep(0.0005)
                continue
        r = reqs[i % len(reqs)]
        i += 1
        now += 0.001
        r.arrival_time = now
        em.on_arrival(r, now)
        em.on_finish(r, now + 0.5)
        em.on_step(StepStats(now, 0.02, 512, 64, 64, 10, 0.5, 0, 1))
        produced += 3
    flushed = em.flush(60.0)
    c = em.counters
    ingested, t1 = wait_ingested(metrics_port, base["tailwise_events_ingested_total"]
                                 + base["tailwise_events_rejected_total"] + c.sent
                                 + base.get("dropped_sidecar", 0.0))
    em.close(0)
    got = ingested - base["tailwise_events_ingested_total"]
    return {"mode": "emitter", "offered_rate": rate or "max", "produced": produced,
            "emitter_dropped": c.dropped, "sent": c.sent, "confirmed": c.confirmed,
            "sidecar_dropped": c.sidecar_dropped, "flushed": flushed, "ingested": int(got),
            "seconds": round(t1 - t0, 3), "events_per_s": round(got / (t1 - t0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=30_000.0,
                    help="emitter offered events/s for the paced run (a second emitter run "
                         "offers as fast as the producer can)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, ready = start_sidecar(tmp)
        try:
            address, mport = ready["address"], ready["metrics_port"]
            rows = [bench_raw(address, mport, args.seconds, args.batch),
                    bench_emitter(address, mport, args.seconds, args.rate),
                    bench_emitter(address, mport, args.seconds, 0.0)]
        finally:
            proc.terminate()
            proc.wait(10)
    for row in rows:
        row["x_requirement"] = round(row["events_per_s"] / REQUIREMENT, 2)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
