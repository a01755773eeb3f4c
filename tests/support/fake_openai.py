"""A tiny in-process OpenAI-compatible completions server for replay tests.

Threaded ``http.server`` on 127.0.0.1, port 0. It validates what a replay must send
(``stream``, ``ignore_eos``, ``max_tokens``, the prompt) and streams ``max_tokens`` SSE
chunks with controlled delays, then a ``usage`` chunk and ``[DONE]``. Behaviour per
request is chosen by prompt length (``fail_status``, ``hang_s``) so tests can mix
successes, HTTP errors and timeouts in one run. Every request is logged.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    t: float
    body: dict[str, Any]

    @property
    def prompt_len(self) -> int:
        p = self.body.get("prompt")
        return len(p) if isinstance(p, list) else len(str(p).split())

    @property
    def first_ids(self) -> list[int]:
        p = self.body.get("prompt")
        return list(p[:3]) if isinstance(p, list) else []


@dataclass
class FakeOpenAI:
    models: list[str] = field(default_factory=lambda: ["tiny-llama"])
    max_model_len: int | None = None
    first_delay_s: float = 0.0
    token_delay_s: float = 0.0
    accept_token_ids: bool = True
    #: prompt length -> HTTP status to answer with
    fail_status: dict[int, int] = field(default_factory=dict)
    #: prompt length -> seconds to sleep before answering
    hang_s: dict[int, float] = field(default_factory=dict)
    #: serve vLLM-style gauges on /metrics (waiting = requests before their first token)
    metrics: bool = False
    received: list[Received] = field(default_factory=list)
    waiting: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with fake._lock:
                    fake.received.append(Received(self.path, time.perf_counter(), {}))
                if self.path == "/v1/models":
                    data = [{"id": m, "object": "model",
                             **({"max_model_len": fake.max_model_len} if fake.max_model_len else {})}
                            for m in fake.models]
                    self._json(200, {"object": "list", "data": data})
                elif self.path == "/metrics" and fake.metrics:
                    text = (f'vllm:num_requests_waiting{{engine="0"}} {fake.waiting}\n'
                            f'vllm:kv_cache_usage_perc{{engine="0"}} 0.25\n').encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                # the client gave up (timeout, Ctrl-C): expected in these tests
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._post()

            def _post(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                rec = Received(self.path, time.perf_counter(), body)
                with fake._lock:
                    fake.received.append(rec)
                if self.path != "/v1/completions":
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                problem = fake.check(body)
                if problem:
                    self._json(400, {"error": {"message": problem}})
                    return
                plen = rec.prompt_len
                if plen in fake.hang_s:
                    time.sleep(fake.hang_s[plen])
                if plen in fake.fail_status:
                    self._json(fake.fail_status[plen], {"error": {"message": "injected failure"}})
                    return
                if not body.get("stream"):
                    self._json(200, {"choices": [{"text": "x"}],
                                     "usage": {"prompt_tokens": plen, "completion_tokens": 1}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                with fake._lock:
                    fake.waiting += 1
                time.sleep(fake.first_delay_s)
                with fake._lock:
                    fake.waiting -= 1
                out = int(body["max_tokens"])
                for i in range(out):
                    if i:
                        time.sleep(fake.token_delay_s)
                    # U+2028/U+0085 stay raw in JSON (as vLLM sends them): not line breaks
                    chunk = {"choices": [{"index": 0, "text": f" t{i}\u2028\x85"}]}
                    self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                    self.wfile.flush()
                usage = {"choices": [], "usage": {"prompt_tokens": plen,
                                                  "completion_tokens": out}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def check(self, body: dict[str, Any]) -> str | None:
        """What a vLLM-like server would refuse (400), or None."""
        if body.get("model") not in self.models:
            return f"model {body.get('model')!r} does not exist"
        prompt = body.get("prompt")
        if isinstance(prompt, list) and not self.accept_token_ids:
            return "prompt must be a string"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens must be a positive integer"
        if body.get("stream") and body.get("ignore_eos") is not True:
            return "replay must set ignore_eos"
        plen = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        if self.max_model_len is not None and plen + body["max_tokens"] > self.max_model_len:
            return f"prompt {plen} + max_tokens {body['max_tokens']} > {self.max_model_len}"
        return None

    def completions(self) -> list[Received]:
        """Streamed completion requests in the order the server received them."""
        return [r for r in self.received if r.path == "/v1/completions" and r.body.get("stream")]
