"""Helpers shared by the benchmarks."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time

import psutil


class PeakRSS:
    """Samples the summed RSS of a process and all its descendants (workers, verifier children)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                total = 0
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            time.sleep(0.2)

    def stop(self) -> float:
        """Peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB of the process tree, stderr) of a command that must succeed."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    peak = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(err)
    return seconds, peak, err


def headless_chromium():
    """Debian's chromium driven through its own chromedriver (Selenium; no driver download), a desktop-sized
    window: what `distill view`'s browser tests and benchmark read the page with."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
