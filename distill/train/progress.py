"""What a training run prints: a bar of optimizer steps (on a terminal) and one line per logging step.

The Trainer's own ProgressCallback writes every log as a raw dict (`{'loss': '0.1442', 'grad_norm': ...}`),
43 of them in the demo, which push the run's result off the screen; here each becomes one line a person
reads (step, loss, learning rate, speed, time left). `--verbose` prints the raw dicts as well.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

_console = Console(stderr=True, highlight=False)

# the Trainer's log keys worth a place on the line, in order, with how each is written
SHOWN = (
    ("loss", "loss", "{:.4f}"),
    ("learning_rate", "lr", "{:.2e}"),
    ("grad_norm", "grad norm", "{:.2f}"),
    ("mean_token_accuracy", "token accuracy", "{:.1%}"),
)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def log_line(logs: dict[str, Any], step: int, max_steps: int, elapsed: float, steps_done: int) -> str:
    """`step 50/434  loss 1.5440  lr 3.00e-03  grad norm 0.89  token accuracy 65.4%  5.2 steps/s  1:14 left`;
    the run's closing log (train_runtime, train_loss) becomes `done: ...`."""
    if "train_runtime" in logs:
        runtime, loss = _number(logs["train_runtime"]) or 0.0, _number(logs.get("train_loss"))
        mean = f", mean loss {loss:.4f}" if loss is not None else ""
        return f"done: {step} steps in {_clock(runtime)}{mean}"
    parts = [f"step {step}/{max_steps}"]
    for key, name, form in SHOWN:
        if (value := _number(logs.get(key))) is not None:
            parts.append(f"{name} {form.format(value)}")
    if steps_done > 0 and elapsed > 0:
        rate = steps_done / elapsed
        parts.append(f"{rate:.1f} steps/s" if rate >= 1 else f"{1 / rate:.1f} s/step")
        parts.append(f"{_clock((max_steps - step) / rate)} left")
    return "  ".join(parts)


class TrainProgress(TrainerCallback):
    """A bar of steps and a line per log, from the main process only."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._bar: Progress | None = None
        self._task: Any = None
        self._started = 0.0
        self._first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._started, self._first_step = time.perf_counter(), state.global_step  # a resumed run counts from here
        self._bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeRemainingColumn(),
            console=_console, disable=not _console.is_terminal, transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task("train", total=state.max_steps, completed=state.global_step)
        self._bar.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self._started
        line = log_line(logs, state.global_step, state.max_steps, elapsed, state.global_step - self._first_step)
        if self.verbose:
            line += f"\n  {logs}"
        _console.print(line, markup=False, soft_wrap=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
