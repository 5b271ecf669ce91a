"""Hosted-API quotas: `requests_per_minute` and `tokens_per_minute` in the teacher YAML.

The Must-show test runs the real `distill generate` against two local servers for over a minute and checks
what the servers received, per sliding 60-second window, across a `kill -9` and its rerun.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from distill.teacher import ratelimit
from distill.teacher.config import TeacherConfig
from distill.teacher.fault_server import ServerConfig, ThreadedServer
from tests.conftest import DISTILL, REPO, prompts, read_rows, run_cli, write_jsonl


def most_in_a_minute(charged: list[tuple[float, int]]) -> tuple[int, int]:
    """The most requests, and the most tokens, that arrived within any 60 s (each window opening at an arrival)."""
    charged = sorted(charged)
    most_requests = most_tokens = 0
    for i, (start, _) in enumerate(charged):
        inside = [tokens for t, tokens in charged[i:] if t - start < 60.0]
        most_requests = max(most_requests, len(inside))
        most_tokens = max(most_tokens, sum(inside))
    return most_requests, most_tokens


def teacher_yaml(path: Path, urls: list[str], **limits: int) -> Path:
    cfg = {"backend": "openai", "model": "m", "base_urls": urls, "samples": 1, "max_tokens": 1000, "concurrency": 32,
           "request_timeout_s": 10.0, "backoff_s": 0.05, "max_backoff_s": 0.5, **limits}  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


def generate(teacher: Path, prompt_file: Path, out: Path) -> subprocess.Popen:
    args = ["generate", "--teacher", str(teacher), "--input", str(prompt_file), "--out", str(out), "--no-progress"]
    return subprocess.Popen([*DISTILL, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_quotas_hold_over_every_minute_across_endpoints_and_a_kill(tmp_path: Path) -> None:
    """Two runs side by side, each against two servers: one paced by requests per minute and killed with
    SIGKILL mid-window, then rerun at once; one paced by tokens per minute. No window of 60 s at the
    servers holds more than the quota (+1 request of slack), and both runs end with every row."""
    rpm, tpm = 50, 5_500
    servers = [ThreadedServer(ServerConfig(), keep_events=True) for _ in range(4)]
    try:
        by_requests = teacher_yaml(tmp_path / "rpm.yaml", [s.url for s in servers[:2]], requests_per_minute=rpm)
        by_tokens = teacher_yaml(tmp_path / "tpm.yaml", [s.url for s in servers[2:]], tokens_per_minute=tpm)
        # 60 requests need a second minute at 50 a minute; 80 of ~80 tokens need one at 5,500 a minute
        few, many = write_jsonl(tmp_path / "60.jsonl", prompts(60)), write_jsonl(tmp_path / "80.jsonl", prompts(80))
        started = time.monotonic()
        paced = generate(by_tokens, many, tmp_path / "tpm")
        first = generate(by_requests, few, tmp_path / "rpm")
        while sum(s.stats.requests for s in servers[:2]) < 30:  # mid-window: 30 of the 50 sent
            assert first.poll() is None and time.monotonic() - started < 60, first.communicate()
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(0.5)  # bytes already on the wire still reach the servers
        # Sends the killed run logged (charged against the quota) that its kill kept from the servers: up to
        # `concurrency` requests can be charged and still in flight. The rerun rightly counts them as used.
        logged = sum(1 for line in (tmp_path / "rpm" / ".work" / ratelimit.LOG).read_text().splitlines()
                     if not line.startswith("="))  # fmt: skip
        lost = logged - sum(s.stats.requests for s in servers[:2])
        rerun = generate(by_requests, few, tmp_path / "rpm")
        for proc in (rerun, paced):
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
        seconds = time.monotonic() - started
        asked = [c for s in servers[:2] for c in s.stats.charged]
        charged = [c for s in servers[2:] for c in s.stats.charged]
    finally:
        for s in servers:
            s.stop()
    assert len(read_rows(tmp_path / "rpm")) == 60 and len(read_rows(tmp_path / "tpm")) == 80
    assert min(len(s.stats.charged) for s in servers) > 0  # both endpoints of each run carried requests
    requests_in_a_minute, _ = most_in_a_minute(asked)
    assert requests_in_a_minute <= rpm + 1, requests_in_a_minute  # the quota kept ...
    assert 0 <= lost <= 32, lost
    assert rpm - 10 <= requests_in_a_minute + lost, (requests_in_a_minute, lost)  # ... and used
    largest = max(tokens for _, tokens in charged)
    _, tokens_in_a_minute = most_in_a_minute(charged)
    assert tpm / 2 < tokens_in_a_minute <= tpm + largest, (tokens_in_a_minute, tpm)
    assert sum(t for _, t in charged) > tpm  # the run needed more than one minute's tokens ...
    assert seconds > 60  # ... and more than one minute's requests: both had to wait
    assert "held" in err and "by the rate limits" in err


# --- the window's arithmetic, on a shortened window ----------------------------------------------------


@pytest.fixture
def short_window(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(ratelimit, "WINDOW_S", 0.5)
    return 0.5


def test_a_corrected_cost_makes_room_sooner(short_window: float) -> None:
    async def run() -> list[float]:
        limiter = ratelimit.RateLimiter(None, 1_000)
        start, times = time.monotonic(), []
        for _ in range(3):
            ticket = await limiter.acquire(600)  # counted as 600 until its usage says 100
            times.append(time.monotonic() - start)
            limiter.settle(ticket, 100)
        await limiter.acquire(900)  # 300 in the window: must wait for the first ones to leave
        times.append(time.monotonic() - start)
        return times

    times = asyncio.run(run())
    assert times[2] < 0.1  # without the corrections the second would have waited a whole window
    assert times[3] >= short_window - 0.02


def test_the_window_survives_a_restart_through_its_log(tmp_path: Path, short_window: float) -> None:
    log = tmp_path / ".work" / ratelimit.LOG

    async def send(n: int) -> float:
        limiter = ratelimit.RateLimiter(3, None, log)
        start = time.monotonic()
        for _ in range(n):
            await limiter.acquire(1)
        limiter.close()
        return time.monotonic() - start

    assert asyncio.run(send(3)) < 0.1
    assert asyncio.run(send(1)) >= short_window - 0.05  # the first run's 3 are still in the window
    time.sleep(short_window)
    assert asyncio.run(send(3)) < 0.1  # and gone from it after a window
    assert len(log.read_text().splitlines()) == 3  # the log keeps only the last window's sends


def test_limits_need_the_openai_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="requests_per_minute paces requests to a server"):
        TeacherConfig(backend="synthetic", model="x", requests_per_minute=10)
    bad = tmp_path / "t.yaml"
    bad.write_text(yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": ["http://x/v1"],
                                   "tokens_per_minute": 0}))  # fmt: skip
    result = run_cli("generate", "--teacher", str(bad), "--input", "x.jsonl", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "tokens_per_minute" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
