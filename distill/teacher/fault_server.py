"""A small OpenAI-compatible server that answers as the synthetic teacher and injects transport faults.

Real servers rarely show on demand what a days-long generation run meets: 429s with `Retry-After`,
500/503s, requests that hang past the client's timeout, connections dropped mid-request, bodies cut
short. This server shows each at a set rate, so the client's retry logic can be tested and measured
(tests/test_generate.py, benchmarks/generate_bench.py), and teams can rehearse a run against it:

    python -m distill.teacher.fault_server --port 8100 --fault-rate 0.2

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) on raw asyncio: a framework server
costs more CPU per request than the client it is meant to measure. `/stats` reports what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from distill.config import load_config
from distill.teacher.config import R1_MATH_SUFFIX, SyntheticConfig, TeacherConfig
from distill.teacher.prompting import Request
from distill.teacher.synthetic import raw_output

FAULTS = ("http_429", "http_500", "http_503", "hang", "drop", "truncate")


@dataclass
class ServerConfig:
    fault_rate: float = 0.0  # share of requests given a fault, chosen uniformly from `faults`
    faults: tuple[str, ...] = FAULTS
    seed: int = 0
    retry_after: str = "0.2"  # the Retry-After header of a 429 / 503
    hang_s: float = 30.0  # a hanging request answers after this long (past any sane client timeout)
    latency_s: float = 0.0  # every good answer waits this long
    # ...plus this per completion token, as a server decodes: a client that closes the connection sooner aborts
    # the request, and only the tokens decoded until then count in `generated_tokens`
    seconds_per_token: float = 0.0
    synthetic: SyntheticConfig | dict[str, Any] | None = None  # pass rates and lengths (a teacher YAML's `synthetic`)
    reasoning_parser: bool = False  # put the thinking in `reasoning_content`, as vLLM's deepseek_r1 parser does
    canned: bool = False  # answer every request with one fixed tiny completion (for the client benchmark)
    fail_matching: str | None = None  # always answer 500 to prompts containing this text
    api_key: str | None = None  # when set, a request without `Authorization: Bearer <key>` gets 401
    # Scripted answers: (user prompt, seed) -> (raw text, finish_reason), for tests whose scores are known by hand
    script: dict[tuple[str, int], tuple[str, str]] | None = None
    # Or a function of the user prompt -> the reply (a scripted judge: its verdict read off the prompt)
    responder: Callable[[str], str] | None = None


@dataclass
class ServerStats:
    requests: int = 0
    answered: int = 0  # 200s sent in full
    aborted: int = 0  # requests whose connection closed while they were being decoded
    generated_tokens: int = 0  # completion tokens decoded: answers in full, aborted ones until the abort
    scheduled_tokens: int = 0  # completion tokens of every answer started: what it decodes if no one aborts
    faults: Counter[str] = field(default_factory=Counter)
    answered_keys: Counter[str] = field(default_factory=Counter)  # request key (prompt + seed) -> 200s
    events: list[tuple[str, float, str]] = field(default_factory=list)  # (key, time, what), when keep_events
    # (arrival time, tokens charged as a hosted API would: its usage, or the prompt's for a fault), when keep_events
    charged: list[tuple[float, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "aborted": self.aborted,
            "generated_tokens": self.generated_tokens,
            "scheduled_tokens": self.scheduled_tokens,
            "faults": dict(self.faults),
            "answered_keys": dict(self.answered_keys),
            "events": self.events,
            "charged": self.charged,
        }


_CANNED = {
    "id": "cmpl-0",
    "object": "chat.completion",
    "model": "canned",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "<think>\n1 + 1 = 2.\n</think>\n\nThe answer is $\\boxed{2}$."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
}


class FaultServer:
    def __init__(self, cfg: ServerConfig, keep_events: bool = False) -> None:
        self.cfg = cfg
        self.stats = ServerStats()
        self.keep_events = keep_events
        self.rng = random.Random(cfg.seed)
        self.teacher = TeacherConfig(backend="synthetic", model="fault-server", max_tokens=1 << 30)
        if cfg.synthetic is not None:  # a SyntheticConfig, or its YAML mapping
            self.teacher = self.teacher.model_copy(update={"synthetic": SyntheticConfig.model_validate(cfg.synthetic)})
        self.canned = _response(orjson.dumps(_CANNED))

    def handle(
        self, path: str, headers: dict[str, str], body: bytes, send: Any, close: Any, loop: asyncio.AbstractEventLoop
    ) -> Decoding | None:
        """Answer one request: `send(bytes)` writes, `close()` drops the connection; an answer still being
        decoded is returned, for the connection to abort if the client goes away."""
        if self.cfg.api_key and headers.get("authorization") != f"Bearer {self.cfg.api_key}":
            send(_response(b'{"error": {"message": "invalid api key"}}', 401))
            return
        if path == "/stats":
            send(_response(orjson.dumps(self.stats.to_json())))
            return
        if path.endswith("/models"):
            send(_response(orjson.dumps({"object": "list", "data": [{"id": "synthetic", "object": "model"}]})))
            return
        self.stats.requests += 1
        if self.cfg.canned:
            self.stats.answered += 1
            send(self.canned)
            return
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            send(_response(b'{"error": "bad json"}', 400))
            return
        chat = path.endswith("/chat/completions")
        prompt = req["messages"][-1]["content"] if chat else req.get("prompt", "")
        key = hashlib.sha256(f"{prompt}|{req.get('seed')}".encode()).hexdigest()[:16]
        arrived, fault = time.monotonic(), None
        if self.cfg.fail_matching and self.cfg.fail_matching in prompt:
            fault = "http_500"
        elif self.cfg.fault_rate and self.rng.random() < self.cfg.fault_rate:
            fault = self.rng.choice(self.cfg.faults)
        if self.keep_events:
            self.stats.events.append((key, arrived, fault or "ok"))
        if fault:
            self.stats.faults[fault] += 1
            if self.keep_events:
                self.stats.charged.append((arrived, len(prompt) // 4))
        if fault in ("http_429", "http_503", "http_500"):
            status = int(fault[5:])
            extra = f"Retry-After: {self.cfg.retry_after}\r\n" if status != 500 else ""
            send(_response(b'{"error": {"message": "injected"}}', status, extra))
            return
        if fault == "drop":
            close()
            return
        answer, tokens, completion, events = self._answer(prompt, req, chat)
        if self.keep_events and fault is None:
            self.stats.charged.append((arrived, tokens))
        if fault == "truncate":
            send(answer[: len(answer) // 2])
            close()
            return None
        delay = self.cfg.hang_s if fault == "hang" else self.cfg.latency_s + completion * self.cfg.seconds_per_token
        decoding = Decoding(time.monotonic(), completion)
        self.stats.scheduled_tokens += completion
        if events is not None and fault is None:
            self._stream(decoding, events, key, send, loop)
            return decoding

        def finish() -> None:
            decoding.done = True
            self.stats.answered += 1
            self.stats.generated_tokens += completion
            self.stats.answered_keys[key] += 1
            send(answer)

        if delay:
            decoding.timer = loop.call_later(delay, finish)
            return decoding
        finish()
        return None

    def _stream(self, decoding: Decoding, events: list[bytes], key: str, send: Any, loop: Any) -> None:
        """Send a stream's events as they decode: TICK_TOKENS of them per chunk, one chunk per TICK_TOKENS tokens'
        time; the usage and [DONE] with the last."""
        send(_CHUNKED_HEAD)
        step = self.cfg.seconds_per_token * TICK_TOKENS

        decoding.streamed = 0

        def tick(k: int) -> None:
            part = events[k : k + TICK_TOKENS]
            decoding.streamed = min(decoding.tokens, k + len(part))
            last = k + TICK_TOKENS >= len(events)
            send(_chunk(b"".join(part)) + (_chunk(b"") if last else b""))
            if last:
                decoding.done = True
                self.stats.answered += 1
                self.stats.generated_tokens += decoding.tokens
                self.stats.answered_keys[key] += 1
            else:
                decoding.timer = loop.call_later(step, tick, k + TICK_TOKENS)

        decoding.timer = loop.call_later(self.cfg.latency_s + step, tick, 0)

    def abort(self, decoding: Decoding) -> None:
        """The client closed the connection of a request still being decoded: stop it, count what it cost."""
        if decoding.done or decoding.timer is None:
            return
        decoding.timer.cancel()
        decoding.done = True
        self.stats.aborted += 1
        if decoding.streamed is not None:
            self.stats.generated_tokens += decoding.streamed
            return
        elapsed = time.monotonic() - decoding.started - self.cfg.latency_s
        rate = self.cfg.seconds_per_token
        self.stats.generated_tokens += min(decoding.tokens, int(max(0.0, elapsed) / rate)) if rate else 0

    def _answer(self, prompt: str, req: dict[str, Any], chat: bool) -> tuple[bytes, int, int, list[bytes] | None]:
        """The whole response, its usage's total tokens, its completion tokens, and for a stream this server decodes
        token by token (`seconds_per_token`), its events one token each (a faulty answer is sent whole instead)."""
        if self.cfg.responder is not None:
            text, finish = self.cfg.responder(prompt), "stop"
        elif self.cfg.script is not None:
            text, finish = self.cfg.script[(prompt, req.get("seed"))]
        else:
            problem = prompt.replace(R1_MATH_SUFFIX, "").strip()
            sample = Request("srv", int(req.get("seed") or 0), "math", problem, None, req.get("seed"))
            text, finish = raw_output(sample, self.teacher, req.get("max_tokens"))
        limit = req.get("max_tokens")
        if limit and len(text) // 4 > limit:  # as a server does: cut at max_tokens
            text, finish = text[: limit * 4], "length"
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.cfg.reasoning_parser and "</think>" in text:
                reasoning, _, content = text.partition("</think>")
                message = {"role": "assistant", "reasoning_content": reasoning, "content": content.lstrip()}
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish}
        tokens = usage["prompt_tokens"] + usage["completion_tokens"]
        completion = usage["completion_tokens"]
        if req.get("stream"):
            events = _stream_events(choice, usage, chat, size=4) if self.cfg.seconds_per_token else None
            return _stream_response(choice, usage, chat), tokens, completion, events
        body = orjson.dumps({"id": "cmpl", "object": "completion", "choices": [choice], "usage": usage})
        return _response(body), tokens, completion, None


def _response(body: bytes, status: int = 200, extra_headers: str = "") -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }.get(status, "Service Unavailable")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra_headers}\r\n"
    )
    return head.encode() + body


def _stream_events(choice: dict[str, Any], usage: dict[str, int], chat: bool, size: int = 200) -> list[bytes]:
    """Server-sent events of `size`-character deltas, then the usage, then [DONE]."""
    events = []
    if chat:
        msg = choice["message"]
        for key in ("reasoning_content", "content"):
            text = msg.get(key) or ""
            for k in range(0, len(text), size):
                events.append({"choices": [{"index": 0, "delta": {key: text[k : k + size]}, "finish_reason": None}]})
    else:
        text = choice["text"]
        for k in range(0, len(text), size):
            events.append({"choices": [{"index": 0, "text": text[k : k + size], "finish_reason": None}]})
    last: dict[str, Any] = {"index": 0, "finish_reason": choice["finish_reason"]}
    last["delta" if chat else "text"] = {} if chat else ""
    events.append({"choices": [last]})
    events.append({"choices": [], "usage": usage})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _stream_response(choice: dict[str, Any], usage: dict[str, int], chat: bool) -> bytes:
    """The whole stream at once, in a few deltas."""
    body = b"".join(_stream_events(choice, usage, chat))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head + body


_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
TICK_TOKENS = 16  # a decoding stream sends its tokens in chunks of this many (one timer per chunk, not per token)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


@dataclass
class Decoding:
    """An answer on its way: when it started, its completion tokens, its timer until it is sent."""

    started: float
    tokens: int
    timer: asyncio.TimerHandle | None = None
    done: bool = False
    streamed: int | None = None  # a stream's tokens sent so far (its timers run late on a busy loop: count them)


class _Protocol(asyncio.Protocol):
    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.decoding: list[Decoding] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for d in self.decoding:  # what a server does when its client goes away: abort the request
            self.server.abort(d)
        self.decoding = []

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", 0))
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            path = head.split(" ", 2)[1] if " " in head else "/"
            decoding = self.server.handle(path, headers, body, self._send, self._close, asyncio.get_running_loop())
            self.decoding = [d for d in self.decoding if not d.done]
            if decoding is not None:
                self.decoding.append(decoding)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def serve(server: FaultServer, host: str, port: int, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _Protocol(server), host, port, backlog=4096, reuse_address=True)
    if ready is not None:
        ready(srv.sockets[0].getsockname()[1])
    async with srv:
        await srv.serve_forever()


class ThreadedServer:
    """A FaultServer on its own event loop in a daemon thread (for tests): `.url`, `.stats`, `.stop()`."""

    def __init__(self, cfg: ServerConfig, keep_events: bool = False) -> None:
        self.server = FaultServer(cfg, keep_events)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self.port = 0

        def ready(port: int) -> None:
            self.port = port
            started.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(serve(self.server, "127.0.0.1", 0, ready))
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._task)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fault server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def stats(self) -> ServerStats:
        return self.server.stats

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    ap.add_argument("--latency-s", type=float, default=0.0)
    ap.add_argument("--hang-s", type=float, default=30.0)
    ap.add_argument("--seconds-per-token", type=float, default=0.0, help="decoding time per completion token")
    ap.add_argument("--teacher", help="a synthetic teacher YAML whose pass rates and lengths to answer with")
    ap.add_argument("--reasoning-parser", action="store_true")
    ap.add_argument("--canned", action="store_true", help="one fixed tiny answer (client benchmarks)")
    args = ap.parse_args()
    cfg = ServerConfig(
        fault_rate=args.fault_rate,
        faults=tuple(f for f in args.faults.split(",") if f),
        latency_s=args.latency_s,
        seconds_per_token=args.seconds_per_token,
        synthetic=load_config(args.teacher, TeacherConfig).synthetic if args.teacher else None,
        hang_s=args.hang_s,
        reasoning_parser=args.reasoning_parser,
        canned=args.canned,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(FaultServer(cfg), args.host, args.port, lambda p: print(f"listening on {p}", flush=True)))


if __name__ == "__main__":
    main()
