"""The `openai` backend: an asyncio client for any number of OpenAI-compatible servers.

Built on aiohttp rather than the `openai` SDK: the SDK (httpx underneath) manages ~1K requests/s per
process here, while a cluster of vLLM / SGLang servers can need thousands in flight; aiohttp keeps
one connection pool for all endpoints at a small fraction of the CPU (benchmarks/generate_bench.py).

Requests go to the live endpoint with the fewest requests outstanding. Failures are sorted:
- transient (HTTP 429, 5xx, 408, timeouts, refused or dropped connections, cut or garbled bodies):
  retried with exponential backoff and full jitter, honouring `Retry-After`; an endpoint that refuses
  connections rests for `endpoint_cooldown_s` (doubling while it stays dead) and the others carry the load;
- the request's own fault (other 4xx, e.g. a prompt longer than the context): a reject, not retried
  now (a later run retries it);
- the run's fault (401, 403, 404: a wrong key, URL or model name): the whole run stops with one line.

With `requests_per_minute` / `tokens_per_minute` every attempt first waits for room in the run's window
(distill/teacher/ratelimit.py), so a quota is kept rather than discovered through 429s.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from distill.errors import UserError
from distill.teacher import parse
from distill.teacher.config import TeacherConfig
from distill.teacher.prompting import Request, completion_prompt, messages
from distill.teacher.ratelimit import LOG, RateLimiter

FATAL_STATUS = {401: "check api_key_env", 403: "check api_key_env", 404: "check base_urls and model"}
RETRY_STATUS = {408, 409, 425, 429}
BODY_EXCERPT = 300
WATCH_EVERY = 2_000  # characters of a streamed trace between two looks by `watch`


class Transient(Exception):
    """A failure worth retrying; `kind` is what the progress line counts."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.retry_after = retry_after


class Rejected(Exception):
    """The server refused this request for a reason of its own (other 4xx): do not retry now."""


@dataclass
class Endpoint:
    url: str
    in_flight: int = 0
    rests: int = 0  # times it was taken out of rotation since it last answered
    down_until: float = 0.0

    def unreachable(self, cooldown_s: float) -> None:
        """It refused a connection: out of rotation for a while, longer each time, until it answers again.

        Only connection failures count: a 5xx or a timeout is an answer (or a slow one) from a live
        server, handled by backing off that request, not by starving the server of all traffic.
        """
        now = time.monotonic()
        if self.down_until > now:  # requests sent before it went down are still failing: once is enough
            return
        self.rests += 1
        self.down_until = now + min(cooldown_s * 2 ** (self.rests - 1), 60.0)

    def answered(self) -> None:
        self.rests = 0


@dataclass
class ClientStats:
    errors: Counter[str] = field(default_factory=Counter)  # transient failures by kind, retried or not
    retries: int = 0
    limiter: RateLimiter | None = None

    @property
    def rate_wait_s(self) -> float:
        """Time sending was held back by requests_per_minute / tokens_per_minute."""
        return self.limiter.waited_s if self.limiter is not None else 0.0


class EndpointPool:
    def __init__(self, urls: list[str], cooldown_s: float) -> None:
        self.endpoints = [Endpoint(u.rstrip("/")) for u in urls]
        self.cooldown_s = cooldown_s

    async def pick(self) -> Endpoint:
        """The live endpoint with the fewest requests outstanding; waits while every one rests."""
        while True:
            now = time.monotonic()
            live = [e for e in self.endpoints if e.down_until <= now]
            if live:
                return min(live, key=lambda e: e.in_flight)
            await asyncio.sleep(max(0.01, min(e.down_until for e in self.endpoints) - now))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class OpenAIBackend:
    """`generate(batch)` for backend: openai; one request per (prompt, sample)."""

    def __init__(self, cfg: TeacherConfig, work: Path | None = None) -> None:
        """`work`: the output's work folder, where the rate limit's window survives a restart."""
        self.cfg = cfg
        self.workers = cfg.concurrency
        self.batch_size = 1
        self.pool = EndpointPool(cfg.base_urls, cfg.endpoint_cooldown_s)
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise UserError(f"teacher: api_key_env is {cfg.api_key_env!r} but that variable is not set; export it")
            self.headers["Authorization"] = f"Bearer {key}"
        self.path = "/chat/completions" if cfg.api == "chat" else "/completions"
        self._session: aiohttp.ClientSession | None = None
        self.limiter: RateLimiter | None = None
        if cfg.requests_per_minute is not None or cfg.tokens_per_minute is not None:
            log = work / LOG if work is not None else None
            self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, log)
        self.stats = ClientStats(limiter=self.limiter)
        # what an attempt counts against tokens_per_minute before its usage is back (see ratelimit.py)
        self.completion_estimate = cfg.expected_completion_tokens or cfg.max_tokens

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s, sock_connect=self.cfg.connect_timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, json_serialize=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.limiter is not None:
            self.limiter.close()

    def body(self, req: Request) -> bytes:
        cfg = self.cfg
        body: dict[str, Any] = {"model": cfg.model, "temperature": cfg.temperature, "top_p": cfg.top_p}
        body["max_tokens"] = cfg.max_tokens
        if req.seed is not None:
            body["seed"] = req.seed
        if cfg.api == "chat":
            body["messages"] = messages(req, cfg)
        else:
            body["prompt"] = completion_prompt(req, cfg)
        if cfg.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(cfg.extra_body)
        return orjson.dumps(body)

    async def generate(self, batch: list[Request]) -> list[dict[str, Any]]:
        return [await self.one(req) for req in batch]

    # `generate --preset` with `stream: true` sets a watch: (request, reasoning so far) -> (code, detail) of a rule the
    # trace has already failed, or None. It runs every WATCH_EVERY characters; a failed trace is stopped there.
    watch: Callable[[Request, str], tuple[str, str] | None] | None = None

    async def one(self, req: Request) -> dict[str, Any]:
        """A result row, or `{"error": ...}` once every retry failed or the server rejected it."""
        body = self.body(req)
        cfg = self.cfg
        last = ""
        prompt_estimate = len(body) // 3 + 1
        limiter = self.limiter
        for attempt in range(cfg.max_retries + 1):
            ticket = await limiter.acquire(prompt_estimate + self.completion_estimate) if limiter else None
            endpoint = await self.pool.pick()
            endpoint.in_flight += 1
            started = time.perf_counter()
            out: dict[str, Any] | None = None
            try:
                out = await self._post(endpoint, body, req)
            except Transient as e:
                self.stats.errors[e.kind] += 1
                if e.kind == "refused":
                    endpoint.unreachable(cfg.endpoint_cooldown_s)
                last = str(e)
                if attempt == cfg.max_retries:
                    break
                self.stats.retries += 1
                # A refused connection says nothing about the other endpoints: go to one at once.
                if e.kind == "refused" and any(x.down_until <= time.monotonic() for x in self.pool.endpoints):
                    continue
                cap = min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt)
                await asyncio.sleep(e.retry_after if e.retry_after is not None else random.uniform(0, cap))
                continue
            except Rejected as e:
                return {"error": f"request_rejected: {e}"}
            finally:
                endpoint.in_flight -= 1
                if limiter is not None and ticket is not None:  # its usage, or its prompt alone without one
                    used = (out.get("prompt_tokens") or 0) + (out.get("completion_tokens") or 0) if out else 0
                    limiter.settle(ticket, used or prompt_estimate)
            endpoint.answered()
            out["latency_s"] = round(time.perf_counter() - started, 4)
            return out
        return {"error": f"request_failed: {last} (after {cfg.max_retries + 1} attempts)"}

    async def _post(self, endpoint: Endpoint, body: bytes, req: Request) -> dict[str, Any]:
        assert self._session is not None, "start() the backend first"
        url = endpoint.url + self.path
        raw = b""
        try:
            async with self._session.post(url, data=body, headers=self.headers) as resp:
                if resp.status != 200:
                    await self._raise_for(resp, url)
                if self.cfg.stream:
                    return await self._read_stream(resp, req)
                raw = await resp.read()
                return self._parse(orjson.loads(raw))
        except (Transient, Rejected, UserError):
            raise
        except aiohttp.ClientConnectorError as e:
            raise Transient("refused", f"{endpoint.url}: {e.os_error or e}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise Transient(
                "timeout", f"{endpoint.url}: no complete answer in {self.cfg.request_timeout_s:g}s"
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as e:
            raise Transient("dropped", f"{endpoint.url}: {type(e).__name__}: {e}") from None
        except aiohttp.ClientError as e:
            raise Transient("client_error", f"{endpoint.url}: {type(e).__name__}: {e}") from None
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise Transient("bad_response", f"{endpoint.url}: {type(e).__name__}: {raw[:BODY_EXCERPT]!r}") from None

    async def _raise_for(self, resp: aiohttp.ClientResponse, url: str) -> None:
        text = (await resp.text(errors="replace"))[:BODY_EXCERPT].replace("\n", " ")
        status = resp.status
        if status in FATAL_STATUS:
            raise UserError(f"teacher: {url} answered HTTP {status} ({text}); {FATAL_STATUS[status]}")
        if status in RETRY_STATUS or status >= 500:
            kind = "http_429" if status == 429 else "http_5xx" if status >= 500 else f"http_{status}"
            raise Transient(kind, f"HTTP {status} from {url}: {text}", _retry_after(resp.headers.get("Retry-After")))
        raise Rejected(f"HTTP {status} from {url}: {text}")

    @staticmethod
    def _thinking(parts: dict[str, list[str]]) -> str | None:
        """The reasoning streamed so far; None once the think block has closed (the rules judge the whole)."""
        if parts["reasoning_content"]:
            return None if parts["content"] else "".join(parts["reasoning_content"])
        text = "".join(parts["content"] or parts["text"])
        return None if "</think>" in text else text.removeprefix("<think>").lstrip("\n")

    def _parse(self, data: dict[str, Any]) -> dict[str, Any]:
        choice = data["choices"][0]
        forced = self.cfg.api == "completion"
        if self.cfg.api == "chat":
            reasoning, content = parse.from_message(choice["message"], think_forced=forced)
        else:
            reasoning, content = parse.split_output(choice["text"], think_forced=forced)
        usage = data.get("usage") or {}
        return {
            "reasoning": reasoning,
            "content": content,
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
        }

    async def _read_stream(self, resp: aiohttp.ClientResponse, req: Request) -> dict[str, Any]:
        """Server-sent events: accumulate the deltas into one message, then parse it like a whole answer. With a
        watch, a trace that has already failed is stopped: the connection closes (the server aborts the request)
        and the text so far comes back with finish_reason `abort`."""
        parts: dict[str, list[str]] = {"content": [], "reasoning_content": [], "text": []}
        finish, usage, done = None, {}, False
        deltas, seen, next_check = 0, 0, WATCH_EVERY
        async for line in resp.content:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            event = orjson.loads(payload)
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                for key, dest in (
                    ("content", "content"),
                    ("reasoning_content", "reasoning_content"),
                    ("reasoning", "reasoning_content"),
                ):
                    if delta.get(key):
                        parts[dest].append(delta[key])
                if choice.get("text"):
                    parts["text"].append(choice["text"])
                finish = choice.get("finish_reason") or finish
                deltas += 1
                seen += sum(len(delta.get(k) or "") for k in ("content", "reasoning_content", "reasoning"))
                seen += len(choice.get("text") or "")
            if self.watch is not None and seen >= next_check:
                next_check = seen + WATCH_EVERY
                thinking = self._thinking(parts)
                stopped = self.watch(req, thinking) if thinking is not None else None
                if stopped is not None:
                    resp.close()  # not released to the pool: the server sees the connection go and aborts
                    return {"reasoning": thinking, "content": "", "finish_reason": "abort", "prompt_tokens": None,
                            "completion_tokens": deltas, "stopped": stopped[0]}  # fmt: skip
        if not done:
            raise Transient("dropped", "the stream ended before [DONE]")
        message = {"content": "".join(parts["content"]), "reasoning_content": "".join(parts["reasoning_content"])}
        choice = {"message": message, "text": "".join(parts["text"]), "finish_reason": finish}
        return self._parse({"choices": [choice], "usage": usage})
