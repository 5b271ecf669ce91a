"""The line a training run prints per logging step (distill/train/progress.py)."""

from distill.train.progress import log_line


def test_a_log_becomes_one_line_with_rate_and_time_left() -> None:
    logs = {"loss": "0.1442", "grad_norm": 0.5, "learning_rate": 0.003, "mean_token_accuracy": "0.88", "epoch": 1.6}
    line = log_line(logs, step=100, max_steps=434, elapsed=20.0, steps_done=100)
    shown = "step 100/434  loss 0.1442  lr 3.00e-03  grad norm 0.50  token accuracy 88.0%  5.0 steps/s  1:07 left"
    assert line == shown


def test_slow_runs_count_seconds_per_step_and_a_resumed_run_its_own_steps() -> None:
    line = log_line({"loss": 2.0}, step=60, max_steps=100, elapsed=20.0, steps_done=10)  # resumed at step 50
    assert line == "step 60/100  loss 2.0000  2.0 s/step  1:20 left"


def test_the_closing_log_is_the_run_in_one_line() -> None:
    line = log_line({"train_runtime": 3725.0, "train_loss": 0.709}, step=434, max_steps=434, elapsed=1, steps_done=1)
    assert line == "done: 434 steps in 1:02:05, mean loss 0.7090"
